"""Chinese voice (and English fallback) through Debian's espeak-ng.

No neural Chinese voice installs offline (docs/speech.md). espeak-ng's Mandarin
voice reads Hanzi poorly, so Chinese text is first turned into numbered pinyin
with pypinyin (huan1 ying2 ...) and read with ``-v cmn-latn-pinyin``: robotic
but correct tones. Arabic numbers are read out in Chinese first (88号 → 八十八号,
0571 → 零五七一, 13:30 → 十三点三十分) because the pinyin voice would spell them in
English.

espeak-ng runs as a subprocess: the text goes in on stdin (never as an argument,
so a text starting with "-" is not an option), the WAV comes back on stdout,
under a timeout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import numpy as np

from runtime.errors import BackendUnavailableError, InferenceError
from runtime.inference.base import SpeechAudio, Synthesizer

VOICES = {"zh": "cmn-latn-pinyin", "en": "en-us"}
_CN_DIGITS = "零一二三四五六七八九"
_HAN = re.compile(r"[\u3400-\u9fff]")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])\s*|(?<=[.])\s+")
_PUNCT_MAP = str.maketrans(
    {
        "，": ",",
        "。": ".",
        "！": "!",
        "？": "?",
        "；": ";",
        "：": ",",
        "、": ",",
        "（": ",",
        "）": ",",
        "“": "",
        "”": "",
        "《": "",
        "》": "",
    }
)


def _int_to_chinese(n: int) -> str:
    """0..99,999,999 read the Chinese way (十三, 一百零五; 两千 is written 二千 here:
    espeak-ng reads both)."""
    if n == 0:
        return "零"
    if n >= 10_000:
        high, low = divmod(n, 10_000)
        tail = _int_to_chinese(low) if low else ""
        if 0 < low < 1000:
            tail = "零" + tail
        return _int_to_chinese(high) + "万" + tail
    out, zero = "", False
    for unit, value in (("千", 1000), ("百", 100), ("十", 10), ("", 1)):
        d, n = divmod(n, value)
        if d:
            if zero:
                out += "零"
            out += _CN_DIGITS[d] + unit
            zero = False
        elif out:
            zero = True
    if out.startswith("一十"):
        out = out[1:]
    return out


def numbers_to_chinese(text: str) -> str:
    """Arabic numbers → Chinese reading: times, decimals; phone numbers, codes and years digit by
    digit."""

    def clock(m: re.Match[str]) -> str:
        h, mnt = int(m.group(1)), int(m.group(2))
        return _int_to_chinese(h) + "点" + ("" if mnt == 0 else _int_to_chinese(mnt) + "分")

    def number(m: re.Match[str]) -> str:
        whole, frac = m.group(1), m.group(2)
        if (
            len(whole) >= 5
            and (whole.startswith("0") or len(whole) > 8)
            or whole.startswith("0")
            and len(whole) > 1
        ):
            head = "".join(_CN_DIGITS[int(c)] for c in whole)  # phone numbers, codes
        else:
            head = _int_to_chinese(int(whole))
        if frac:
            head += "点" + "".join(_CN_DIGITS[int(c)] for c in frac)
        return head

    def digits(m: re.Match[str]) -> str:
        return "".join(_CN_DIGITS[int(c)] if c.isdigit() else " " for c in m.group(0))

    text = re.sub(r"\d+(?:-\d+)+|\d{4}(?=年)", digits, text)  # phone numbers, years: digit by digit
    text = re.sub(r"(\d{1,2}):(\d{2})", clock, text)
    return re.sub(r"(\d+)(?:\.(\d+))?", number, text)


def to_pinyin(text: str) -> str:
    """Chinese text → numbered pinyin with punctuation kept as pauses; Latin words pass through."""
    from pypinyin import Style, lazy_pinyin

    text = numbers_to_chinese(text).translate(_PUNCT_MAP)
    syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
    return re.sub(r"\s+", " ", " ".join(syllables)).replace(" ,", ",").replace(" .", ".").strip()


def split_sentences(text: str) -> list[str]:
    """Sentences at Chinese and Western sentence ends."""
    return [p.strip() for p in _SENTENCE_END.split(text) if p and p.strip()]


class EspeakSynthesizer(Synthesizer):
    """espeak-ng voices: Mandarin through pinyin, English as a fallback voice."""

    backend = "espeak-ng"
    device = "CPU"
    languages = ("zh", "en")

    def __init__(
        self,
        *,
        binary: str = "espeak-ng",
        speed_wpm: int = 145,
        timeout_s: float = 10.0,
        model_id: str = "espeak-ng",
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise BackendUnavailableError(
                f"{binary} is not installed",
                hint="apt-get install espeak-ng (the Chinese voice needs it)",
            )
        self.binary = path
        self.speed_wpm = speed_wpm
        self.timeout_s = timeout_s
        self.model_id = model_id

    @classmethod
    def from_config(cls, cfg) -> EspeakSynthesizer:
        return cls(binary=cfg.speech.espeak_binary, timeout_s=cfg.speech.tts_timeout_s)

    def _run(self, text: str, voice: str) -> SpeechAudio:
        from runtime.speech.audio import AudioLimits, parse_wav_header

        try:
            proc = subprocess.run(
                [self.binary, "-v", voice, "-s", str(self.speed_wpm), "-b", "1", "--stdout"],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InferenceError(
                f"espeak-ng took more than {self.timeout_s:g} s for {len(text)} characters",
                hint="speak shorter sentences, or raise [speech] tts_timeout_s",
            ) from None
        if proc.returncode != 0 or not proc.stdout:
            raise InferenceError(
                f"espeak-ng failed (exit {proc.returncode}): "
                f"{proc.stderr.decode('utf-8', 'replace')[:200]}"
            )
        limits = AudioLimits(max_bytes=len(proc.stdout), max_seconds=600.0, max_channels=1)
        layout = parse_wav_header(proc.stdout, limits, name="espeak-ng output")
        raw = proc.stdout[layout.data_offset : layout.data_offset + layout.data_size]
        return SpeechAudio(np.frombuffer(raw, dtype="<i2").copy(), layout.info.sample_rate)

    def prepare_text(self, text: str, language: str) -> str:
        """What espeak-ng is given: pinyin for Chinese (any text with Hanzi), else plain text."""
        if language == "zh" or _HAN.search(text):
            return to_pinyin(text)
        return " ".join(text.split())

    def voice_for(self, text: str, language: str) -> str:
        return VOICES["zh"] if language == "zh" or _HAN.search(text) else VOICES["en"]

    def synthesize(self, text: str, *, language: str) -> SpeechAudio:
        if language not in VOICES:
            raise InferenceError(
                f"espeak-ng voice for {language!r} is not configured", hint="use 'zh' or 'en'"
            )
        prepared = self.prepare_text(text, language)
        if not prepared.strip():
            return SpeechAudio(np.zeros(0, np.int16), 22050)
        return self._run(prepared, self.voice_for(text, language))

    def stream(self, text: str, *, language: str) -> Iterator[SpeechAudio]:
        for sentence in split_sentences(text):
            yield self.synthesize(sentence, language=language)

"""Speaking a streamed answer sentence by sentence, interruptible and mutable.

The answer pipeline streams text pieces. Waiting for the whole answer before
speaking would add the full generation time to the first sound, so
:class:`Speaker` cuts the stream into sentences as they complete and hands each
to a synthesis thread, whose audio goes to a playback thread: sentence 1 plays
while sentence 2 is synthesised and sentence 3 is still being generated.

:meth:`Speaker.interrupt` (the visitor taps or starts speaking) stops the sound
now and drops every queued sentence; :meth:`Speaker.set_muted` (the UI's mute
button) does the same and keeps the speaker silent, without synthesising,
until unmuted. Audio goes to an :class:`AudioSink`: :class:`CollectSink`
(files, tests) or :class:`CommandSink` (aplay / paplay on the kiosk).
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from runtime.errors import BackendUnavailableError
from runtime.inference.base import SpeechAudio, Synthesizer

log = logging.getLogger(__name__)

# A sentence ends at Chinese end punctuation, or at . ! ? ; followed by a space or a newline.
_END = re.compile(r"[。！？；!?;…]+[”’\"')）]*|\.(?=\s)|\n+")
_CLAUSE = re.compile(r"[，,、：:]")


class SentenceSplitter:
    """Incremental sentence cutter for streamed text (no look-back past the last cut)."""

    def __init__(self, *, max_chars: int = 160) -> None:
        self._buf = ""
        self.max_chars = max_chars

    def feed(self, piece: str) -> list[str]:
        self._buf += piece
        out: list[str] = []
        while True:
            m = _END.search(self._buf)
            if m is None:
                break
            sentence, self._buf = self._buf[: m.end()].strip(), self._buf[m.end() :]
            if sentence:
                out.append(sentence)
        if len(self._buf) > self.max_chars:  # a run-on sentence: cut at the last clause mark
            cut = max((m.end() for m in _CLAUSE.finditer(self._buf)), default=len(self._buf))
            head, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if head:
                out.append(head)
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []


class AudioSink(Protocol):
    def play(self, audio: SpeechAudio, stop: threading.Event) -> None:
        """Play (or store) one chunk; return early when ``stop`` is set."""


@dataclass
class CollectSink:
    """Keeps every chunk with the time it arrived (for `kiosk speak --out` and tests)."""

    chunks: list[SpeechAudio] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    realtime: bool = False  # sleep for the chunk's duration, like a speaker would

    def play(self, audio: SpeechAudio, stop: threading.Event) -> None:
        self.chunks.append(audio)
        self.arrived.append(time.perf_counter())
        if self.realtime:
            stop.wait(audio.samples.size / audio.sample_rate)

    def samples(self, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
        """All audio joined (chunks at another rate are resampled to the first chunk's rate)."""
        if not self.chunks:
            return np.zeros(0, np.int16), sample_rate or 22050
        rate = sample_rate or self.chunks[0].sample_rate
        parts = []
        for c in self.chunks:
            x = c.samples
            if c.sample_rate != rate and x.size:
                n = int(round(x.size * rate / c.sample_rate))
                x = np.interp(np.linspace(0, x.size - 1, n), np.arange(x.size), x).astype(np.int16)
            parts.append(x)
        return np.concatenate(parts), rate


class CommandSink:
    """Plays through aplay (ALSA) or paplay (PulseAudio), whichever is installed; stops on
    interrupt."""

    def __init__(self, command: str | None = None) -> None:
        self.command = command or next((c for c in ("paplay", "aplay") if shutil.which(c)), None)
        if self.command is None:
            raise BackendUnavailableError(
                "no audio player found (aplay or paplay)",
                hint="apt-get install alsa-utils, or write a WAV with --out",
            )

    def _argv(self, rate: int) -> list[str]:
        if self.command.endswith("paplay"):
            return [self.command, "--raw", "--format=s16le", f"--rate={rate}", "--channels=1"]
        return [self.command, "-q", "-t", "raw", "-f", "S16_LE", "-r", str(rate), "-c", "1"]

    def play(self, audio: SpeechAudio, stop: threading.Event) -> None:
        proc = subprocess.Popen(
            self._argv(audio.sample_rate),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proc.stdin is not None
            proc.stdin.write(audio.samples.astype("<i2").tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        while proc.poll() is None:
            if stop.wait(0.02):
                proc.terminate()
                break
        proc.wait(timeout=5)


@dataclass
class SpeakReport:
    sentences: list[str] = field(default_factory=list)
    first_sentence_at: float | None = None  # perf_counter when the first sentence was complete
    first_audio_at: float | None = None  # perf_counter when its audio reached the sink
    audio_seconds: float = 0.0
    synth_seconds: float = 0.0
    interrupted: bool = False
    muted: bool = False

    @property
    def first_audio_ms(self) -> float | None:
        if self.first_sentence_at is None or self.first_audio_at is None:
            return None
        return (self.first_audio_at - self.first_sentence_at) * 1e3


_DONE = object()


class Speaker:
    """Speaks streamed answers through per-language synthesizers; one answer at a time."""

    def __init__(
        self,
        voices: Mapping[str, Synthesizer],
        sink: AudioSink,
        *,
        muted: bool = False,
        max_chars: int = 2000,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not voices:
            raise ValueError("Speaker needs at least one voice")
        self.voices = dict(voices)
        self.sink = sink
        self.max_chars = max_chars
        self._muted = muted
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._clock = clock

    @property
    def muted(self) -> bool:
        return self._muted

    def set_muted(self, muted: bool) -> None:
        """The UI's mute button: silence now, and do not synthesise until unmuted."""
        self._muted = muted
        if muted:
            self._stop.set()

    def interrupt(self) -> None:
        """The visitor tapped or spoke: stop the sound and drop what was queued."""
        self._stop.set()

    def voice_for(self, language: str) -> Synthesizer:
        return self.voices.get(language) or next(iter(self.voices.values()))

    def speak(self, text: str, language: str) -> SpeakReport:
        return self.speak_stream([text], language)

    def speak_stream(self, pieces: Iterable[str], language: str) -> SpeakReport:
        """Speak text pieces as they arrive; returns when all is played, or at once when
        interrupted."""
        with self._lock:
            self._stop = threading.Event()
            stop = self._stop
            report = SpeakReport(muted=self._muted)
            if self._muted:
                return report
            sentences: queue.Queue[object] = queue.Queue()
            audio_q: queue.Queue[object] = queue.Queue(maxsize=2)
            voice = self.voice_for(language)
            errors: list[BaseException] = []

            def synth_worker() -> None:
                try:
                    while not stop.is_set():
                        item = sentences.get()
                        if item is _DONE:
                            break
                        t0 = self._clock()
                        for chunk in _synth_chunks(voice, str(item), language):
                            if stop.is_set():
                                break
                            report.synth_seconds += self._clock() - t0
                            _put(audio_q, chunk, stop)
                            t0 = self._clock()
                except BaseException as exc:  # surfaced to the caller after the threads stop
                    errors.append(exc)
                    stop.set()
                finally:
                    _put(audio_q, _DONE, stop, force=True)

            def play_worker() -> None:
                while True:
                    item = audio_q.get()
                    if item is _DONE or stop.is_set():
                        break
                    assert isinstance(item, SpeechAudio)
                    if report.first_audio_at is None:
                        report.first_audio_at = self._clock()
                    report.audio_seconds += item.samples.size / item.sample_rate
                    self.sink.play(item, stop)

            threads = [
                threading.Thread(target=synth_worker, name="tts-synth", daemon=True),
                threading.Thread(target=play_worker, name="tts-play", daemon=True),
            ]
            for t in threads:
                t.start()
            splitter = SentenceSplitter()
            budget = self.max_chars
            try:
                for piece in pieces:
                    if stop.is_set():
                        break
                    piece = piece[: max(0, budget)]
                    budget -= len(piece)
                    for sentence in splitter.feed(piece):
                        self._queue_sentence(sentence, sentences, report)
                    if budget <= 0:
                        break
                if not stop.is_set():
                    for sentence in splitter.flush():
                        self._queue_sentence(sentence, sentences, report)
            finally:
                sentences.put(_DONE)
                for t in threads:
                    t.join()
            report.interrupted = stop.is_set() and not errors
            report.muted = self._muted
            if errors:
                raise errors[0]
            return report

    def _queue_sentence(
        self, sentence: str, sentences: queue.Queue[object], report: SpeakReport
    ) -> None:
        if report.first_sentence_at is None:
            report.first_sentence_at = self._clock()
        report.sentences.append(sentence)
        sentences.put(sentence)


def _synth_chunks(voice: Synthesizer, sentence: str, language: str) -> Iterable[SpeechAudio]:
    audio = voice.synthesize(sentence, language=language)
    if audio.samples.size:
        yield audio


def _put(
    q: queue.Queue[object], item: object, stop: threading.Event, *, force: bool = False
) -> None:
    """Bounded put that gives up when stopped (so an interrupted producer never blocks forever)."""
    while True:
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            if stop.is_set():
                if not force:
                    return
                try:  # make room for the end marker
                    q.get_nowait()
                except queue.Empty:
                    pass


def voices_from_config(
    cfg, *, prefer: str = "auto", note: Callable[[str], None] = log.warning
) -> dict[str, Synthesizer]:
    """Language → voice: hibari for English when prepared, espeak-ng for Chinese and as fallback.

    ``prefer``: "auto", "neural" (fail when the neural voice is missing) or "espeak".
    """
    from runtime.errors import ModelError
    from runtime.inference.synth_espeak import EspeakSynthesizer

    espeak = EspeakSynthesizer.from_config(cfg)
    voices: dict[str, Synthesizer] = {"zh": espeak, "en": espeak}
    if prefer != "espeak":
        try:
            from runtime.inference.synth_hibari import HibariSynthesizer

            voices["en"] = HibariSynthesizer.from_config(cfg)
        except ModelError as exc:
            if prefer == "neural":
                raise
            note(f"English neural voice unavailable ({exc.message}); using espeak-ng")
    return voices


def speaker_from_config(cfg, sink: AudioSink) -> Speaker:
    """The kiosk's speaker: configured voices, mute state and text cap from [speech]."""
    return Speaker(
        voices_from_config(cfg), sink, muted=cfg.speech.muted, max_chars=cfg.speech.tts_max_chars
    )

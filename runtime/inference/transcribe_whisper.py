"""The transcriber: faster-whisper (CTranslate2) with the decoding settings chosen for short
questions.

What differs from calling ``WhisperModel.transcribe`` with its defaults, and why
(numbers in docs/speech.md, from scripts/bench/asr.py):

- Silence is trimmed first with faster-whisper's bundled Silero VAD, keeping
  300 ms either side of the speech (200 ms clipped onsets: a quarter more
  Mandarin errors); audio with no speech returns an empty transcript without
  running the model at all.
- The encoder sees the speech plus a pad, not a fixed 30 s window, and runs
  once: the language is read from that encoder output and chosen only among
  the kiosk's configured languages (plain faster-whisper encodes twice when it
  detects, and may answer "ja" or "yue" for a Mandarin question). Mandarin gets
  at least a 10 s window (``min_window_s``; a bilingual kiosk encodes every
  question so, as the language is not known yet): its confidence is better
  calibrated there, so fewer Mandarin questions need the slow decode below.
- Greedy decoding (beam 1), no timestamp tokens. A decode that looks like a loop
  or is unsure (lowest segment average log-probability under
  ``escalate_logprob``) is decoded again the reference way: whisper's 30 s
  window, beam 5, timestamps, the full temperature ladder (faster-whisper's
  defaults, on the same trimmed audio and chosen language). Measured on
  augmented real clips, this keeps Mandarin at plain's error count while only
  the unsure quarter of utterances pays for the slow decode.
- A per-language prompt biases recognition toward the active pack's vocabulary
  (product, place and department names) and, for Chinese, toward the kiosk's
  script.
- The text is normalised (script, numbers) before it leaves: see
  runtime/speech/normalize.py.

faster-whisper is imported lazily; nothing here reaches the network (the model
is always a local folder, never a hub name).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.errors import (
    AudioLimitError,
    BackendUnavailableError,
    DecodeCancelledError,
    InferenceError,
    ModelNotPreparedError,
)
from runtime.inference.base import Transcriber, Transcript

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
VARIANT = "ct2-int8"
FULL_WINDOW = 3000  # mel frames in whisper's trained 30 s window
# Tokens per cancellable step of a streaming partial (docs/speech.md: 12 cost more).
PREVIEW_STEP = 24
_NOT_WORD = re.compile(r"[\W_]+")
_REPEAT = re.compile(r"(\w{4,}?)\1")


@dataclass(frozen=True)
class DecodeSettings:
    """Decoding knobs; :meth:`from_config` reads [speech], :data:`PLAIN_DEFAULTS` is faster-
    whisper's own."""

    beam_size: int = 1
    temperatures: tuple[float, ...] = (0.0, 0.4, 0.8)
    without_timestamps: bool = True
    vad_trim: bool = True
    vad_threshold: float = 0.5
    # Audio kept either side of each speech region: 200 ms clipped onsets (Mandarin CER +25 %).
    vad_pad_ms: int = 300
    fixed_encode: bool = True  # one encoder pass shared by language choice and decoding
    short_window: bool = True  # encode only the speech plus window_pad_s, not a fixed 30 s window
    window_pad_s: float = 2.0
    # Smallest short window per language (seconds): Mandarin confidence is better calibrated at
    # 10 s than at speech + 2 s, so fewer decodes are escalated (docs/speech.md).
    min_window_s: Mapping[str, float] = field(default_factory=lambda: {"zh": 10.0})
    # Decode again the reference way (30 s window, beam 5, timestamps) when the lowest segment
    # average log-probability is under this; None: only loops and failed decodes are redone.
    escalate_logprob: float | None = -0.35
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    normalize_loudness: bool = (
        False  # measured: scaling quiet AISHELL clips up did not help whisper
    )
    max_new_tokens: int | None = 128  # a spoken question is short; a runaway decode stops here

    @classmethod
    def from_config(cls, speech) -> DecodeSettings:  # speech: SpeechSection
        return cls(
            beam_size=speech.beam_size,
            temperatures=tuple(speech.temperatures),
            without_timestamps=speech.without_timestamps,
            vad_trim=speech.vad_trim,
            vad_threshold=speech.vad_threshold,
            vad_pad_ms=speech.vad_pad_ms,
            short_window=speech.short_window,
            window_pad_s=speech.window_pad_seconds,
            min_window_s=dict(speech.min_window_seconds),
            escalate_logprob=speech.escalate_logprob,
        )

    def reference(self) -> DecodeSettings:
        """The decode an unsure result is redone with: faster-whisper's own decoding settings on
        whisper's trained 30 s window (the same trimmed audio, the language already chosen)."""
        return dataclasses.replace(
            self,
            beam_size=PLAIN_DEFAULTS.beam_size,
            temperatures=PLAIN_DEFAULTS.temperatures,
            without_timestamps=False,
            short_window=False,
            escalate_logprob=None,
        )


# faster-whisper 1.2.1's transcribe() defaults, for side-by-side benchmarks.
PLAIN_DEFAULTS = DecodeSettings(
    beam_size=5,
    temperatures=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    without_timestamps=False,
    vad_trim=False,
    fixed_encode=False,
    short_window=False,
    normalize_loudness=False,
    max_new_tokens=None,
    escalate_logprob=None,
)


def load_whisper_model(folder: Path, *, compute_type: str = "int8", threads: int = 2):
    """A faster_whisper.WhisperModel from a local CTranslate2 folder (never a hub name)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise BackendUnavailableError(
            f"faster-whisper is not installed ({exc.name})",
            hint="pip install 'kiosk-assistant[speech]'",
        ) from None
    folder = Path(folder)
    if not (folder / "model.bin").is_file():
        raise ModelNotPreparedError(
            f"no CTranslate2 model.bin in {folder}", hint="run: kiosk models prepare whisper-base"
        )
    try:
        return WhisperModel(
            str(folder),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=1,
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise InferenceError(
            f"whisper model in {folder} failed to load: {exc}",
            hint="run: kiosk models prepare whisper-base --force",
        ) from exc


def build_prompt(
    language: str, vocabulary: Sequence[str], *, script: str, max_chars: int
) -> str | None:
    """The decoder prompt for one language: as many vocabulary terms as fit, or None.

    Only the pack's own terms, written in the kiosk's script, go in. A fixed cue
    sentence (the well-known "以下是普通话的句子。") was tried and dropped: on unclear
    audio whisper repeats it as the transcript (seen on espeak-ng speech).
    """
    if max_chars <= 0:
        return None
    sep = "、" if language == "zh" else ", "
    terms: list[str] = []
    length = 0
    for term in vocabulary:
        term = " ".join(term.split())
        if language == "zh":
            from runtime.speech.normalize import convert_script

            term = convert_script(term, script)  # type: ignore[arg-type]
        if not term or term in terms:
            continue
        if length + len(sep) + len(term) > max_chars:
            break
        terms.append(term)
        length += len(sep) + len(term)
    if not terms:
        return None
    return sep.join(terms) + ("。" if language == "zh" else ".")


def is_prompt_echo(text: str, prompt: str | None) -> bool:
    """Whisper sometimes answers unclear audio by repeating its prompt; such a transcript is
    dropped."""
    if not prompt or not text:
        return False
    strip = str.maketrans("", "", "、，,。.!！?？ ")
    t, p = text.translate(strip), prompt.translate(strip)
    return len(t) >= 4 and t in p


def _check_cancel(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise DecodeCancelledError(
            "speech decode called off: the utterance went on",
            hint="internal to streaming sessions; nothing to do",
        )


@dataclass
class TimedTranscript:
    """A transcript with where the time went (for benchmarks and logs)."""

    transcript: Transcript
    raw_text: str
    vad_ms: float = 0.0
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    language_probs: dict[str, float] = field(default_factory=dict)
    window_frames: int = 3000  # mel frames the encoder saw (100 a second)
    escalated: bool = False  # the fast decode looked wrong or unsure; the reference decode ran
    avg_logprob: float = 0.0  # lowest segment average log-probability of the fast decode
    unsure: bool = False  # the fast decode was unsure and escalation was not allowed (a preview)
    looked_wrong: bool = False  # the kept decode loops or failed (worth redoing whatever the gate)


class WhisperTranscriber(Transcriber):
    """faster-whisper with VAD trimming, restricted language choice, vocabulary prompt and
    normalised text."""

    backend = "ctranslate2"
    device = "CPU"

    def __init__(
        self,
        model_dir: Path,
        *,
        model_id: str = "whisper-base",
        languages: Sequence[str] = ("zh", "en"),
        settings: DecodeSettings | None = None,
        compute_type: str = "int8",
        threads: int = 2,
        script: str = "simplified",
        number_form: str = "arabic",
        prompt_max_chars: int = 160,
        max_audio_seconds: float = 30.0,
    ) -> None:
        self.model_id = model_id
        self.model_dir = Path(model_dir)
        self.languages = tuple(languages)
        self.settings = settings or DecodeSettings()
        self.script = script
        self.number_form = number_form
        self.prompt_max_chars = prompt_max_chars
        self.max_audio_seconds = max_audio_seconds
        self._model = load_whisper_model(self.model_dir, compute_type=compute_type, threads=threads)
        self._vocabulary: tuple[str, ...] = ()
        self._prompts: dict[str, str | None] = {}
        self.set_vocabulary(())

    @classmethod
    def from_config(cls, cfg, *, settings: DecodeSettings | None = None) -> WhisperTranscriber:
        from runtime.prepare.cache import prepared_variant_dir

        folder = prepared_variant_dir(cfg.paths.model_cache, cfg.models.transcriber, VARIANT)
        sp = cfg.speech
        return cls(
            folder,
            model_id=cfg.models.transcriber,
            languages=cfg.kiosk.languages,
            settings=settings or DecodeSettings.from_config(sp),
            compute_type=sp.compute_type,
            threads=cfg.devices.threads,
            script=cfg.kiosk.chinese_script,
            number_form=sp.number_form,
            prompt_max_chars=sp.prompt_max_chars,
            max_audio_seconds=sp.max_audio_seconds,
        )

    # -- vocabulary ---------------------------------------------------------------------
    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The names recognition is biased toward now."""
        return self._vocabulary

    def set_vocabulary(self, terms: Iterable[str]) -> None:
        """Bias recognition toward these names (from the active pack); call again when the pack
        changes."""
        self._vocabulary = tuple(terms)
        self._prompts = {
            lang: build_prompt(
                lang, self._vocabulary, script=self.script, max_chars=self.prompt_max_chars
            )
            for lang in ("zh", "en")
        }

    # -- the pieces ---------------------------------------------------------------------
    def trim_silence(self, audio: np.ndarray) -> np.ndarray:
        """Speech regions only (Silero VAD bundled with faster-whisper), joined; empty when there is
        none."""
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        opts = VadOptions(
            threshold=self.settings.vad_threshold,
            min_silence_duration_ms=500,
            speech_pad_ms=self.settings.vad_pad_ms,
        )
        chunks = get_speech_timestamps(audio, opts, sampling_rate=SAMPLE_RATE)
        if not chunks:
            return audio[:0]
        pieces, _ = collect_chunks(audio, chunks, sampling_rate=SAMPLE_RATE)
        return np.concatenate(pieces).astype(np.float32, copy=False)

    def choose_language(self, encoder_output) -> tuple[str, dict[str, float]]:
        """The most likely of the configured languages, from an encoder output already computed."""
        results = self._model.model.detect_language(encoder_output)[0]
        probs = {token[2:-2]: prob for token, prob in results}
        allowed = {lang: probs.get(lang, 0.0) for lang in self.languages}
        return max(allowed, key=allowed.__getitem__), allowed

    def _options(self, prompt: str | None, settings: DecodeSettings | None = None):
        from faster_whisper.transcribe import TranscriptionOptions

        s = settings or self.settings
        return TranscriptionOptions(
            beam_size=s.beam_size,
            best_of=5,
            patience=1.0,
            length_penalty=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            log_prob_threshold=s.log_prob_threshold,
            no_speech_threshold=s.no_speech_threshold,
            compression_ratio_threshold=s.compression_ratio_threshold,
            condition_on_previous_text=True,
            prompt_reset_on_temperature=0.5,
            temperatures=list(s.temperatures),
            initial_prompt=prompt,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=[-1],
            without_timestamps=s.without_timestamps,
            max_initial_timestamp=1.0,
            word_timestamps=False,
            prepend_punctuations="\"'“¿([{-",
            append_punctuations="\"'.。,，!！?？:：”)]}、",
            multilingual=False,
            max_new_tokens=s.max_new_tokens,
            clip_timestamps="0",
            hallucination_silence_threshold=None,
            hotwords=None,
        )

    def _check_length(self, audio: np.ndarray) -> None:
        if audio.ndim != 1:
            raise AudioLimitError(
                f"audio for {self.model_id} must be mono (got shape {audio.shape})",
                hint="decode with runtime.speech.audio, which mixes down to mono",
            )
        seconds = audio.size / SAMPLE_RATE
        if seconds > self.max_audio_seconds:
            raise AudioLimitError(
                f"audio is {seconds:.1f} s; "
                f"the transcriber's limit is {self.max_audio_seconds:g} s",
                hint="cut the recording, or raise [speech] max_audio_seconds",
            )

    def _window_frames(
        self,
        content_frames: int,
        language: str | None = None,
        settings: DecodeSettings | None = None,
    ) -> int:
        """Encoder window: the speech plus a pad in whole seconds, at least the language's minimum,
        at most the trained 30 s."""
        s = settings or self.settings
        if not (s.fixed_encode and s.short_window):
            return FULL_WINDOW
        frames = int(np.ceil((content_frames + s.window_pad_s * 100) / 100.0)) * 100
        if language is not None:
            frames = max(frames, int(round(s.min_window_s.get(language, 0.0) * 100)))
        return min(FULL_WINDOW, frames)

    def _unsure(self, segments, settings: DecodeSettings | None = None) -> bool:
        """Confident enough to keep? The lowest segment average log-probability against
        ``escalate_logprob`` (no segments: nothing was said, nothing to redo)."""
        threshold = (settings or self.settings).escalate_logprob
        if threshold is None or not segments:
            return False
        return min(seg.avg_logprob for seg in segments) < threshold

    def _encode(self, features: np.ndarray, frames: int):
        """Encoder output for the first ``frames`` mel frames (zero-padded like faster-whisper's
        pad_or_trim)."""
        x = np.zeros((features.shape[0], frames), np.float32)
        n = min(frames, features.shape[1])
        x[:, :n] = features[:, :n]
        return self._model.encode(x)

    def _looks_wrong(self, segments, speech_seconds: float) -> bool:
        """A decode to distrust: temperature fallback used, loop-like, low confidence, or too many
        tokens."""
        s = self.settings
        tokens = sum(len(seg.tokens) for seg in segments)
        if tokens > 10 * speech_seconds + 10:  # nobody says 10 tokens a second: a repetition loop
            return True
        compact = _NOT_WORD.sub("", "".join(seg.text for seg in segments))
        if _REPEAT.search(
            compact
        ):  # "广州市佛地产广州市佛地产": the same 4+ characters twice in a row
            return True
        for seg in segments:
            if seg.temperature and seg.temperature > 0:
                return True
            if (
                s.compression_ratio_threshold
                and seg.compression_ratio > s.compression_ratio_threshold
            ):
                return True
            if s.log_prob_threshold is not None and seg.avg_logprob < s.log_prob_threshold:
                return True
        return False

    def _preview_segments(self, encoder_output, tokenizer, prompt, s, speech_seconds, cancel):
        """Greedy decoding in steps of ``PREVIEW_STEP`` tokens, checking ``cancel`` between
        steps, for streaming partials.

        CTranslate2 cannot stop a ``generate`` call, and a partial still decoding when the
        visitor stops delayed the final by the rest of it (up to ~0.6 s of decoder time on the
        8.7 s English clip). Each step continues from the tokens so far (greedy decoding gives the
        same tokens whether or not it is split: tests/integration/test_asr_real.py); a step costs
        one more pass over the prefix and the encoder output (~150 ms on 2 cores), so the step is
        large enough that a Mandarin question's partial is one call.
        """
        from types import SimpleNamespace

        from faster_whisper.transcribe import get_compression_ratio

        model = self._model
        previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
        base = model.get_prompt(tokenizer, previous, without_timestamps=True)
        limit = min(s.max_new_tokens or 128, int(10 * speech_seconds) + 10)
        tokens: list[int] = []
        while len(tokens) < limit:
            _check_cancel(cancel)
            step = min(PREVIEW_STEP, limit - len(tokens))
            prompt_ids = base + tokens
            result = model.model.generate(
                encoder_output,
                [prompt_ids],
                beam_size=1,
                # CTranslate2 (4.x) counts the tokens already decoded against max_length more than
                # once; this bound was measured to allow at least `step` new tokens
                max_length=len(prompt_ids) + len(tokens) + 2 * step,
                suppress_blank=not tokens,
                suppress_tokens=[-1],
            )[0]
            # CTranslate2 returns the tokens after the start sequence: ours so far, then new ones
            new = result.sequences_ids[0][len(tokens) :]
            tokens.extend(new)
            if len(new) < step:  # stopped before the bound: the end-of-text token came
                break
        text = tokenizer.decode(tokens).strip()  # drops special tokens, as faster-whisper does
        return [
            SimpleNamespace(
                start=0.0,
                end=speech_seconds,
                text=text,
                tokens=tokens,
                avg_logprob=0.0,  # not computed for previews (never escalated)
                temperature=0.0,
                compression_ratio=get_compression_ratio(text) if text else 0.0,
            )
        ]

    # -- the one job --------------------------------------------------------------------
    def transcribe_timed(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        prompt: str | None = None,
        trim: bool | None = None,
        escalate: bool = True,
        reference: bool = False,
        preview: bool = False,
        cancel=None,
    ) -> TimedTranscript:
        """Transcribe 16 kHz mono float32 audio, reporting the time spent in each stage.

        ``trim=False`` skips the VAD pass (a streaming session has already cut the utterance).
        ``escalate=False`` never runs the slow reference decode (streaming previews); the result
        then says whether it was ``unsure``. ``reference=True`` runs only the reference decode
        (a streaming final whose early fast decode was unsure). ``preview=True`` is for partial
        transcripts while the visitor speaks: the short window for every language, no escalation.
        ``cancel`` (a threading.Event, from a streaming session) is checked after the encoder and
        before a redo: once it is set the decode stops with DecodeCancelledError, so a stale early
        decode gives the worker back instead of finishing.
        """
        from faster_whisper.tokenizer import Tokenizer

        self._check_length(audio)
        audio = np.asarray(audio, dtype=np.float32)
        duration = audio.size / SAMPLE_RATE
        s = self.settings.reference() if reference else self.settings
        if preview:
            s = dataclasses.replace(s, min_window_s={}, escalate_logprob=None)
            escalate = False
        if language is not None and language not in self.languages:
            raise InferenceError(
                f"language {language!r} is not one of the kiosk's languages {self.languages}",
                hint="set [kiosk] languages, or leave the language to detection",
            )
        t0 = time.perf_counter()
        if s.normalize_loudness:
            from runtime.speech.audio import normalize_loudness

            audio = normalize_loudness(audio)
        if s.vad_trim if trim is None else trim:
            audio = self.trim_silence(audio)
            if audio.size < SAMPLE_RATE // 10:
                empty = Transcript(
                    text="", language=language or self.languages[0], duration_s=duration
                )
                return TimedTranscript(empty, "", vad_ms=(time.perf_counter() - t0) * 1e3)
        t1 = time.perf_counter()
        model = self._model
        speech_seconds = audio.size / SAMPLE_RATE
        try:
            features = model.feature_extractor(audio)
            encoder_output = None
            probs: dict[str, float] = {}
            if language is None and len(self.languages) == 1:
                language = self.languages[0]
            # Unknown language: the longest window any candidate needs, so one encoder pass serves
            # both the language choice and the decode (re-encoding for Mandarin cost more).
            window = max(
                self._window_frames(features.shape[1], lang, s)
                for lang in ((language,) if language else self.languages)
            )
            if s.fixed_encode:
                encoder_output = self._encode(features, window)
            if language is None:
                if encoder_output is None:  # plain path: faster-whisper's own detection pass
                    _, _, all_probs = model.detect_language(features=features)
                    allowed = {lang: dict(all_probs).get(lang, 0.0) for lang in self.languages}
                    language, probs = max(allowed, key=allowed.__getitem__), allowed
                else:
                    language, probs = self.choose_language(encoder_output)
            t2 = time.perf_counter()
            _check_cancel(cancel)
            if prompt is None and s.fixed_encode:
                prompt = self._prompts.get(language)
            tokenizer = Tokenizer(
                model.hf_tokenizer,
                model.model.is_multilingual,
                task="transcribe",
                language=language,
            )
            if preview and cancel is not None and encoder_output is not None and PREVIEW_STEP:
                segments = self._preview_segments(
                    encoder_output, tokenizer, prompt, s, speech_seconds, cancel
                )
                ratio = s.compression_ratio_threshold
                if ratio and segments[0].compression_ratio > ratio and len(s.temperatures) > 1:
                    # a loop: what faster-whisper does next, its temperature fallback
                    hotter = dataclasses.replace(s, temperatures=s.temperatures[1:])
                    segments = list(
                        model.generate_segments(
                            features,
                            tokenizer,
                            self._options(prompt, hotter),
                            False,
                            encoder_output,
                        )
                    )
            else:
                segments = list(
                    model.generate_segments(
                        features, tokenizer, self._options(prompt, s), False, encoder_output
                    )
                )
            avg_logprob = min((seg.avg_logprob for seg in segments), default=0.0)
            wrong = self._looks_wrong(segments, speech_seconds)
            unsure = wrong or self._unsure(segments, s)
            ref_settings = s.reference()
            escalated = False
            if unsure and escalate and s.fixed_encode and ref_settings != s:
                # The fast decode looped or is unsure: redo it the way faster-whisper would by
                # default (30 s window, beam 5, timestamps), on the same audio and language.
                log.info(
                    "fast decode %s (%r, avg log-prob %.2f); running the reference decode",
                    "looked wrong" if wrong else "was unsure",
                    "".join(seg.text for seg in segments)[:80],
                    avg_logprob,
                )
                _check_cancel(cancel)
                escalated, unsure = True, False
                if window != FULL_WINDOW:
                    window = FULL_WINDOW
                    encoder_output = self._encode(features, FULL_WINDOW)
                segments = list(
                    model.generate_segments(
                        features,
                        tokenizer,
                        self._options(prompt, ref_settings),
                        False,
                        encoder_output,
                    )
                )
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(
                f"{self.model_id} failed while transcribing {duration:.1f} s of audio: {exc}"
            ) from exc
        t3 = time.perf_counter()
        raw = "".join(seg.text for seg in segments).strip()
        if is_prompt_echo(raw, prompt):
            log.info("dropped a transcript that repeats the vocabulary prompt: %r", raw)
            raw = ""
        text = raw
        if self.number_form != "raw":
            from runtime.speech.normalize import normalize_transcript

            text = normalize_transcript(raw, script=self.script, number_form=self.number_form)  # type: ignore[arg-type]
        transcript = Transcript(
            text=text,
            language=language,
            duration_s=duration,
            segments=tuple((seg.start, seg.end, seg.text.strip()) for seg in segments),
        )
        return TimedTranscript(
            transcript,
            raw,
            vad_ms=(t1 - t0) * 1e3,
            encode_ms=(t2 - t1) * 1e3,
            decode_ms=(t3 - t2) * 1e3,
            language_probs=probs,
            window_frames=window,
            escalated=escalated,
            avg_logprob=avg_logprob,
            unsure=unsure,
            looked_wrong=wrong and not escalated,
        )

    def transcribe(
        self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        return self.transcribe_timed(audio, language=language, prompt=prompt).transcript

"""A streaming speech session: 16 kHz mono PCM chunks in, partial and final transcripts out.

The UI sends microphone audio over a WebSocket in small chunks. The endpoint
that receives them owns one :class:`StreamingSession` per connection and does
only this::

    session = StreamingSession(transcriber, StreamSettings.from_config(cfg.speech))
    for chunk in websocket:                 # bytes: s16le mono 16 kHz
        for event in session.feed(chunk):   # speech_start / partial / final
            send(event.to_json())
    on push-to-talk release: send(session.end().to_json())

Inside, Silero VAD judges every 32 ms window as it arrives. An utterance starts
at the first speech window (with a little audio from before it, so the first
syllable is not clipped), gets a partial transcript every ``partial_interval_ms``
of audio while the visitor speaks, and ends with a final transcript when the
trailing silence reaches ``endpoint_silence_ms``, when it hits
``max_utterance_s`` (clamped, reason "max_length") or when :meth:`end` is called.

Untrusted input is bounded: a chunk over ``max_chunk_bytes``, a client that
sends faster than ``max_input_rate`` × real time after an ``input_burst_s``
allowance, or a session longer than ``max_session_s`` of audio raise
:class:`AudioLimitError`; the endpoint closes the connection with its message.
Memory is bounded by ``max_utterance_s`` of float32 samples plus the pre-roll.

``feed`` runs the model synchronously (run it in a worker thread); partials
back off when decoding is slower than the interval, so a slow box never builds
a backlog.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from runtime.errors import AudioLimitError, AudioStreamError
from runtime.inference.base import Transcriber, Transcript

from .audio import pcm16_to_float
from .vad import WINDOW, WINDOW_MS, StreamingVad

RATE = 16000
EventKind = Literal["speech_start", "partial", "final"]


@dataclass(frozen=True)
class StreamSettings:
    """Endpointing and limits for one session; :meth:`from_config` reads [speech]."""

    threshold: float = 0.5
    endpoint_silence_ms: int = 500
    partial_interval_ms: int = 1200
    partials: bool = True
    min_speech_ms: int = 160  # shorter bursts (a tap, a cough) are dropped, not transcribed
    pre_roll_ms: int = 256
    # Trailing silence kept for the decoder: with none whisper erred more (one clip: 4 vs 2 CER
    # edits); 128 and 192 ms were alike within noise (31 vs 32 edits on 290 characters).
    tail_keep_ms: int = 128
    # Once the trailing silence passes tail_keep_ms the audio to decode no longer changes, so the
    # final decode starts then (and is shown as a partial); the endpoint only confirms it. Both are
    # past the longest pause measured inside a Mandarin sentence (96 ms).
    speculate_ms: int = 128
    # The final is redone the reference way (30 s window, beam 5; about a second on 2 cores) only
    # below this average log-probability, or when the decode loops. Lower than the file path's
    # gate: the stream's cut (256 ms pre-roll) decoded Mandarin as well as plain faster-whisper
    # even before any redo, and the visitor is waiting.
    escalate_logprob: float | None = -0.5
    max_utterance_s: float = 15.0
    max_session_s: float = 120.0
    max_input_rate: float = 2.0
    input_burst_s: float = 3.0
    max_chunk_bytes: int = 64 * 1024

    @property
    def neg_threshold(self) -> float:
        return max(0.01, self.threshold - 0.15)  # hysteresis, as faster-whisper's VadOptions

    @classmethod
    def from_config(cls, speech) -> StreamSettings:  # speech: SpeechSection
        return cls(
            threshold=speech.vad_threshold,
            endpoint_silence_ms=speech.endpoint_silence_ms,
            speculate_ms=speech.speculate_ms,
            escalate_logprob=speech.stream_escalate_logprob,
            partial_interval_ms=speech.partial_interval_ms,
            max_utterance_s=min(speech.max_utterance_seconds, speech.max_audio_seconds),
            max_session_s=speech.max_session_seconds,
            max_input_rate=speech.max_input_rate,
            input_burst_s=speech.input_burst_seconds,
            max_chunk_bytes=speech.max_chunk_bytes,
        )


@dataclass(frozen=True)
class SpeechEvent:
    """One message for the UI."""

    kind: EventKind
    at_s: float  # seconds of audio received when the event was produced
    text: str = ""
    language: str | None = None
    reason: str | None = None  # final only: "silence" | "release" | "max_length"
    utterance_s: float = 0.0  # length of the utterance audio the text comes from
    compute_ms: float = 0.0  # time spent in the transcriber for this event

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class StreamingSession:
    """Feed 16 kHz mono s16le chunks; get speech_start / partial / final events. One per visitor
    connection."""

    def __init__(
        self,
        transcriber: Transcriber,
        settings: StreamSettings | None = None,
        *,
        vad: Callable[[np.ndarray], np.ndarray] | None = None,
        clock: Callable[[], float] = time.monotonic,
        language: str | None = None,
    ) -> None:
        self.transcriber = transcriber
        self.settings = settings or StreamSettings()
        self._vad = vad if vad is not None else StreamingVad()
        self._clock = clock
        self.language = language
        self._started_at: float | None = None
        self._received_s = 0.0
        self._closed = False
        s = self.settings
        self._pre_roll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(1, s.pre_roll_ms // WINDOW_MS)
        )
        self._pending = np.zeros(0, np.float32)  # samples not yet judged (less than a window)
        self._reset_utterance()
        self.events: list[SpeechEvent] = []  # everything emitted, for logs and tests

    # -- state --------------------------------------------------------------------------
    def _reset_utterance(self) -> None:
        self._speaking = False
        self._windows: list[np.ndarray] = []
        self._speech_windows = 0
        self._silence_ms = 0
        self._since_partial_ms = 0
        self._last_partial = ""
        self._partial_cost_ms = 0.0
        # The early final decode: transcript, ms, seconds of audio, redo it before the final.
        self._speculative: tuple[Transcript, float, float, bool] | None = None
        # Language of the latest partial: the final decode skips detection and its encoder pass.
        self._heard_language: str | None = None

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def received_seconds(self) -> float:
        return self._received_s

    # -- input --------------------------------------------------------------------------
    def _admit(self, n_samples: int) -> None:
        """Session length and input-rate limits, checked before the samples are kept."""
        s = self.settings
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
        incoming = n_samples / RATE
        if self._received_s + incoming > s.max_session_s:
            raise AudioLimitError(
                f"speech stream ran past {s.max_session_s:g} s of audio",
                hint="end each question with silence or the button; "
                "raise [speech] max_session_seconds if needed",
            )
        allowance = s.input_burst_s + (now - self._started_at) * s.max_input_rate
        if self._received_s + incoming > allowance:
            raise AudioLimitError(
                f"speech stream sends audio faster than {s.max_input_rate:g}× real time "
                f"({self._received_s + incoming:.1f} s of audio in {now - self._started_at:.1f} s)",
                hint="send microphone audio as it is recorded; "
                "raise [speech] max_input_rate for replays",
            )
        self._received_s += incoming

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[SpeechEvent]:
        """Take one chunk of s16le mono 16 kHz PCM; return the events it caused (often none)."""
        if self._closed:
            raise AudioStreamError(
                "speech stream received audio after it was closed",
                hint="open a new session for a new connection",
            )
        if len(chunk) > self.settings.max_chunk_bytes:
            raise AudioLimitError(
                f"speech stream chunk of {len(chunk)} bytes; "
                f"the limit is {self.settings.max_chunk_bytes}",
                hint="send chunks of 20-100 ms (640-3200 bytes)",
            )
        samples = pcm16_to_float(chunk)
        return self.feed_samples(samples)

    def feed_samples(self, samples: np.ndarray) -> list[SpeechEvent]:
        """Same as :meth:`feed` for float32 samples in [-1, 1] (benchmarks, tests, file replays)."""
        if self._closed:
            raise AudioStreamError(
                "speech stream received audio after it was closed",
                hint="open a new session for a new connection",
            )
        self._admit(samples.size)
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32)])
        n = buf.size // WINDOW
        self._pending = buf[n * WINDOW :]
        if n == 0:
            return []
        windows = buf[: n * WINDOW].reshape(n, WINDOW)
        probs = self._vad(windows.reshape(-1))
        out: list[SpeechEvent] = []
        for window, prob in zip(windows, probs, strict=True):
            out.extend(self._step(window, float(prob)))
        self.events.extend(out)
        return out

    # -- the state machine, one 32 ms window at a time -----------------------------------
    def _step(self, window: np.ndarray, prob: float) -> list[SpeechEvent]:
        s = self.settings
        if not self._speaking:
            if prob < s.threshold:
                self._pre_roll.append(window)
                return []
            self._speaking = True
            self._windows = list(self._pre_roll)
            self._pre_roll.clear()
            self._windows.append(window)
            self._speech_windows = 1
            return [SpeechEvent("speech_start", self._received_at())]
        self._windows.append(window)
        self._since_partial_ms += WINDOW_MS
        if prob >= s.neg_threshold:
            self._speech_windows += 1 if prob >= s.threshold else 0
            self._silence_ms = 0
            self._speculative = None  # the visitor went on: the early decode is stale
        else:
            self._silence_ms += WINDOW_MS
        if self._silence_ms >= s.endpoint_silence_ms:
            return self._finish("silence")
        if (
            s.speculate_ms
            and self._speculative is None
            and self._silence_ms >= max(s.speculate_ms, s.tail_keep_ms)
            and self._speech_windows * WINDOW_MS >= s.min_speech_ms
        ):
            return self._speculate()
        if len(self._windows) * WINDOW >= s.max_utterance_s * RATE:
            return self._finish("max_length")
        if (
            s.partials
            and self._silence_ms == 0
            and self._since_partial_ms >= self._partial_interval()
        ):
            return self._partial()
        return []

    def _partial_interval(self) -> float:
        # Never ask for partials faster than the box decodes them: keeps feed() near real time.
        return max(self.settings.partial_interval_ms, 1.5 * self._partial_cost_ms)

    def _received_at(self) -> float:
        return round(self._received_s - self._pending.size / RATE, 3)

    def _utterance_audio(self) -> np.ndarray:
        keep = len(self._windows)
        trailing = self._silence_ms // WINDOW_MS
        extra = trailing - self.settings.tail_keep_ms // WINDOW_MS
        if extra > 0:
            keep -= extra
        return np.concatenate(self._windows[:keep]) if keep > 0 else np.zeros(0, np.float32)

    def _run(
        self,
        audio: np.ndarray,
        *,
        escalate: bool = True,
        reference: bool = False,
        preview: bool = False,
        language=None,
    ) -> tuple[Transcript, float, bool]:
        """Transcript, milliseconds, and whether the final should redo this (fast) decode.

        Partials run as cheap previews (``preview=True``: short window, never escalated) and the
        early final decode fast only (``escalate=False``): a visitor who goes on talking must not
        wait for a slow decode of a stale utterance. The final redoes a decode that loops or is
        under the stream's ``escalate_logprob`` with ``reference=True``.
        """
        t0 = time.perf_counter()
        timed = getattr(self.transcriber, "transcribe_timed", None)
        language = self.language or language  # a session language set by the UI wins
        if timed is not None:
            kwargs = {"preview": True} if preview else {}
            result = timed(
                audio,
                language=language,
                trim=False,
                escalate=escalate,
                reference=reference,
                **kwargs,
            )
            transcript = result.transcript
            gate = self.settings.escalate_logprob
            unsure = bool(getattr(result, "looked_wrong", False)) or (
                bool(result.unsure) and gate is not None and result.avg_logprob < gate
            )
        else:
            transcript, unsure = self.transcriber.transcribe(audio, language=language), False
        return transcript, (time.perf_counter() - t0) * 1e3, unsure

    def _partial(self) -> list[SpeechEvent]:
        self._since_partial_ms = 0
        audio = self._utterance_audio()
        transcript, ms, _ = self._run(audio, escalate=False, preview=True)
        self._partial_cost_ms = ms
        if transcript.text:
            self._heard_language = transcript.language
        return self._partial_event(transcript, ms, audio)

    def _speculate(self) -> list[SpeechEvent]:
        """Decode the finished-looking utterance now; the endpoint reuses it if nobody speaks."""
        audio = self._utterance_audio()
        transcript, ms, unsure = self._run(audio, escalate=False, language=self._heard_language)
        self._speculative = (transcript, ms, audio.size / RATE, unsure)
        return self._partial_event(transcript, ms, audio)

    def _partial_event(self, transcript, ms: float, audio) -> list[SpeechEvent]:
        """A "partial" event for new text; nothing when the text is empty or unchanged."""
        if not transcript.text or transcript.text == self._last_partial:
            return []
        self._last_partial = transcript.text
        return [
            SpeechEvent(
                "partial",
                self._received_at(),
                transcript.text,
                transcript.language,
                utterance_s=audio.size / RATE,
                compute_ms=ms,
            )
        ]

    def _finish(self, reason: str) -> list[SpeechEvent]:
        enough = self._speech_windows * WINDOW_MS >= self.settings.min_speech_ms
        audio = self._utterance_audio()
        speculative = self._speculative if reason == "silence" else None
        heard_language = self._heard_language
        self._reset_utterance()
        if not enough:
            return []  # a click or a cough: nothing to say to the UI
        if speculative is not None and speculative[2] == audio.size / RATE:
            transcript, ms, redo = speculative[0], 0.0, speculative[3]  # decoded in the silence
        else:
            transcript, ms, redo = self._run(audio, escalate=False, language=heard_language)
        if redo:  # the fast decode looped or was very unsure: the reference decode decides
            transcript, extra_ms, _ = self._run(audio, reference=True, language=transcript.language)
            ms += extra_ms
        return [
            SpeechEvent(
                "final",
                self._received_at(),
                transcript.text,
                transcript.language,
                reason,
                utterance_s=audio.size / RATE,
                compute_ms=ms,
            )
        ]

    # -- ending ---------------------------------------------------------------------------
    def end(self) -> SpeechEvent:
        """Push-to-talk release: the final transcript of the speech so far (empty text when there
        was none)."""
        if self._closed:
            raise AudioStreamError(
                "speech stream ended after it was closed",
                hint="open a new session for a new connection",
            )
        if self._speaking and self._pending.size:
            self._windows.append(
                self._pending.copy()
            )  # the last few ms, too short for the VAD to judge
        self._pending = np.zeros(0, np.float32)
        events = self._finish("release") if self._speaking else []
        event = (
            events[0]
            if events
            else SpeechEvent("final", self._received_at(), "", self.language, "release")
        )
        self.events.append(event)
        self._pre_roll.clear()
        self._vad_reset()
        return event

    def _vad_reset(self) -> None:
        reset = getattr(self._vad, "reset", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        """Drop everything this visitor said (nothing of the last visitor survives the reset)."""
        self._closed = True
        self._reset_utterance()
        self._pre_roll.clear()
        self._pending = np.zeros(0, np.float32)

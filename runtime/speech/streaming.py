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

Decodes run on one worker thread the session owns, so ``feed`` keeps judging
audio while whisper works: the early final decode starts on the first silent
window and is cancelled (between the encoder and the decoder) when the visitor
goes on; a partial still running when the silence starts is cancelled so it
never delays the final; a partial is skipped while the worker is busy. Only the
final waits for the worker, in the ``feed`` call that reaches the endpoint.
Pass ``executor=InlineExecutor()`` to run every decode inside ``feed`` instead
(deterministic: unit tests, file replays).
"""

from __future__ import annotations

import collections
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from runtime.errors import AudioLimitError, AudioStreamError, DecodeCancelledError
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
    # Audio after the speech that the decoder sees, as files get vad_pad_ms after theirs: the
    # trailing silence received when the early decode starts (speculate_ms), completed with
    # digital silence. 128 ms of real tail and nothing more made 6 Mandarin character errors on
    # the three benchmark clips against plain's 3; 300 ms (real or zero-filled) made 3
    # (docs/speech.md).
    tail_ms: int = 300
    # The early final decode starts after this much trailing silence, on the worker thread, and
    # is cancelled if the visitor goes on; the endpoint then only confirms it. The audio it
    # decodes (speech + speculate_ms of real silence + zeros up to tail_ms) is exactly what the
    # final would decode, so the final reuses it.
    speculate_ms: int = 32
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
            tail_ms=speech.vad_pad_ms,
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


def _accepts(fn: Callable, name: str) -> bool:
    """Does ``fn`` take the keyword ``name`` (a transcriber that can stop a stale decode)?"""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class InlineExecutor(concurrent.futures.Executor):
    """Runs each decode at once inside ``submit`` (inside ``feed``): deterministic, for tests and
    offline replays."""

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
            future.set_exception(exc)
        return future


@dataclass
class _Job:
    """One decode on the worker: what it was for and how to call it off."""

    kind: Literal["partial", "speculative", "final"]
    samples: int  # length of the audio it decodes
    future: concurrent.futures.Future
    cancel: threading.Event
    started_at_s: float  # seconds of audio received when it was submitted

    def cancelled(self) -> bool:
        return self.cancel.is_set()


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
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.transcriber = transcriber
        self.settings = settings or StreamSettings()
        self._vad = vad if vad is not None else StreamingVad()
        self._clock = clock
        self.language = language
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="speech-decode"
        )
        self._job: _Job | None = None  # the decode on the worker now (or finished, unread)
        self.cancelled_decodes = 0  # early decodes and partials called off (logs, benchmarks)
        timed = getattr(transcriber, "transcribe_timed", None)
        self._cancel_kw = timed is not None and _accepts(timed, "cancel")
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
        # The early final decode on the worker (its result: transcript, ms, redo it).
        self._speculative: _Job | None = None
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
        out: list[SpeechEvent] = self._collect()
        if n:
            windows = buf[: n * WINDOW].reshape(n, WINDOW)
            probs = self._vad(windows.reshape(-1))
            for window, prob in zip(windows, probs, strict=True):
                out.extend(self._step(window, float(prob)))
                out.extend(self._collect())
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
            if self._speculative is not None:  # the visitor went on: the early decode is stale
                self._call_off(self._speculative)
                self._speculative = None
        else:
            self._silence_ms += WINDOW_MS
        if self._silence_ms >= s.endpoint_silence_ms:
            return self._finish("silence")
        if (
            s.speculate_ms
            and self._speculative is None
            and self._silence_ms >= s.speculate_ms
            and self._speech_windows * WINDOW_MS >= s.min_speech_ms
        ):
            self._speculate()
            return []
        if len(self._windows) * WINDOW + s.tail_ms * RATE // 1000 >= s.max_utterance_s * RATE:
            return self._finish("max_length")  # the decoded audio, tail included, stays in limit
        if (
            s.partials
            and self._silence_ms == 0
            and self._since_partial_ms >= self._partial_interval()
            and self._worker_idle()
        ):
            self._partial()
        return []

    def _partial_interval(self) -> float:
        # Never ask for partials faster than the box decodes them: keeps feed() near real time.
        return max(self.settings.partial_interval_ms, 1.5 * self._partial_cost_ms)

    def _received_at(self) -> float:
        return round(self._received_s - self._pending.size / RATE, 3)

    def _utterance_audio(self) -> np.ndarray:
        """The audio a decode of the utterance sees: pre-roll and speech, then ``tail_ms`` made
        of the first ``speculate_ms`` of trailing silence and digital silence after it.

        Fixed by the speech alone, so the early decode and the final decode the same samples
        however long the silence has been when each runs.
        """
        s = self.settings
        trailing = self._silence_ms // WINDOW_MS
        real_tail = min(trailing, s.speculate_ms // WINDOW_MS, s.tail_ms // WINDOW_MS)
        keep = len(self._windows) - trailing + real_tail
        pad = max(0, s.tail_ms * RATE // 1000 - real_tail * WINDOW)
        if keep <= 0:
            return np.zeros(0, np.float32)
        return np.concatenate(self._windows[:keep] + [np.zeros(pad, np.float32)])

    def _run(
        self,
        audio: np.ndarray,
        *,
        escalate: bool = True,
        reference: bool = False,
        preview: bool = False,
        language=None,
        cancel: threading.Event | None = None,
    ) -> tuple[Transcript, float, bool]:
        """Transcript, milliseconds, and whether the final should redo this (fast) decode.

        Partials run as cheap previews (``preview=True``: short window, never escalated) and the
        early final decode fast only (``escalate=False``): a visitor who goes on talking must not
        wait for a slow decode of a stale utterance. The final redoes a decode that loops or is
        under the stream's ``escalate_logprob`` with ``reference=True``.
        """
        t0 = time.perf_counter()
        if cancel is not None and cancel.is_set():
            raise DecodeCancelledError("speech decode called off: the utterance went on")
        timed = getattr(self.transcriber, "transcribe_timed", None)
        language = self.language or language  # a session language set by the UI wins
        if timed is not None:
            kwargs: dict[str, object] = {"preview": True} if preview else {}
            if cancel is not None and self._cancel_kw:
                kwargs["cancel"] = cancel
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
        if cancel is not None and cancel.is_set():
            raise DecodeCancelledError("speech decode called off: the utterance went on")
        return transcript, (time.perf_counter() - t0) * 1e3, unsure

    # -- the worker ----------------------------------------------------------------------
    def _submit(self, kind, audio: np.ndarray, **run_kw) -> _Job:
        cancel = threading.Event()
        future = self._executor.submit(self._run, audio, cancel=cancel, **run_kw)
        job = _Job(kind, audio.size, future, cancel, self._received_at())
        self._job = job
        return job

    def _worker_idle(self) -> bool:
        return self._job is None or self._job.future.done()

    def _call_off(self, job: _Job) -> None:
        """Cancel a decode whose audio is stale; the worker drops it at its next check."""
        if not job.future.done():
            self.cancelled_decodes += 1
        job.cancel.set()

    def _wait(self, job: _Job) -> tuple[Transcript, float, bool] | None:
        """The job's result, blocking; None when it was cancelled."""
        try:
            return job.future.result()
        except DecodeCancelledError:
            return None

    def _collect(self) -> list[SpeechEvent]:
        """Events from a decode that finished on the worker since the last look."""
        job = self._job
        if job is None or not job.future.done() or job.kind == "final":
            return []
        self._job = None
        result = self._wait(job)
        if result is None or job.cancelled():
            return []
        transcript, ms, _ = result
        if job.kind == "partial":
            self._partial_cost_ms = ms
            if transcript.text:
                self._heard_language = transcript.language
        return self._partial_event(transcript, ms, job.samples)

    def _partial(self) -> None:
        self._since_partial_ms = 0
        self._submit("partial", self._utterance_audio(), escalate=False, preview=True)

    def _speculate(self) -> None:
        """Decode the finished-looking utterance now, on the worker; the endpoint reuses it if
        nobody speaks, speech cancels it. A partial still running is called off: its audio is
        older and the final must not wait for it."""
        if self._job is not None and self._job.kind == "partial":
            self._call_off(self._job)
        audio = self._utterance_audio()
        self._speculative = self._submit(
            "speculative", audio, escalate=False, language=self._heard_language
        )

    def _partial_event(self, transcript, ms: float, samples: int) -> list[SpeechEvent]:
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
                utterance_s=samples / RATE,
                compute_ms=ms,
            )
        ]

    def _finish(self, reason: str) -> list[SpeechEvent]:
        enough = self._speech_windows * WINDOW_MS >= self.settings.min_speech_ms
        audio = self._utterance_audio()
        speculative = self._speculative
        heard_language = self._heard_language
        self._reset_utterance()
        running = self._job
        self._job = None
        if not enough:
            if speculative is not None:
                self._call_off(speculative)
            return []  # a click or a cough: nothing to say to the UI
        result = None
        if speculative is not None and speculative.samples == audio.size:
            # decoded, or decoding, since the silence began: the final waits only for the rest
            was_done = speculative.future.done()
            result = self._wait(speculative)
            if result is not None and was_done:
                result = (result[0], 0.0, result[2])
        else:
            if speculative is not None:
                self._call_off(speculative)
            if running is not None and running.kind == "partial":
                self._call_off(running)  # a preview of older audio: the final must not wait
        if result is None:
            result = self._executor.submit(
                self._run, audio, escalate=False, language=heard_language
            ).result()
        transcript, ms, redo = result
        if redo:  # the fast decode looped or was very unsure: the reference decode decides
            transcript, extra_ms, _ = self._executor.submit(
                self._run, audio, reference=True, language=transcript.language
            ).result()
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
        if self._speaking and self._pending.size and not self._silence_ms:
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
        """Drop everything this visitor said (nothing of the last visitor survives the reset) and
        stop the worker."""
        self._closed = True
        if self._job is not None:
            self._call_off(self._job)
            self._job = None
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._reset_utterance()
        self._pre_roll.clear()
        self._pending = np.zeros(0, np.float32)

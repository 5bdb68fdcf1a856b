"""The streaming session's state machine, limits and events, with a fake transcriber and an energy
VAD.

The real Silero VAD and whisper run the same session in tests/integration/test_asr_real.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from runtime.errors import AudioFormatError, AudioLimitError, AudioStreamError
from runtime.inference.base import Transcriber, Transcript
from runtime.speech.audio import float_to_pcm16
from runtime.speech.streaming import InlineExecutor, SpeechEvent, StreamingSession, StreamSettings

RATE = 16000


class CountingTranscriber(Transcriber):
    """Says how much audio it got and how loud its first 50 ms were, and records every call."""

    model_id = "fake"
    backend = "numpy"
    device = "CPU"

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def transcribe(self, audio, *, language=None, prompt=None) -> Transcript:
        self.calls.append(audio.copy())
        return Transcript(
            text=f"heard {audio.size / RATE:.2f}s",
            language=language or "en",
            duration_s=audio.size / RATE,
        )


def energy_vad(samples: np.ndarray) -> np.ndarray:
    windows = samples.reshape(-1, 512)
    return (np.sqrt((windows**2).mean(axis=1)) > 0.05).astype(np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def run(
    session: StreamingSession, clock: Clock, audio: np.ndarray, chunk_ms: int = 20
) -> list[SpeechEvent]:
    pcm = float_to_pcm16(audio).tobytes()
    step = RATE * 2 * chunk_ms // 1000
    events = []
    for i in range(0, len(pcm), step):
        clock.now += chunk_ms / 1000  # paced like a microphone
        events.extend(session.feed(pcm[i : i + step]))
    return events


def make(settings: StreamSettings | None = None):
    clock = Clock()
    tr = CountingTranscriber()
    return (
        StreamingSession(
            tr, settings or StreamSettings(), vad=energy_vad, clock=clock, executor=InlineExecutor()
        ),
        tr,
        clock,
    )


def test_partials_come_before_the_final_and_silence_ends_the_utterance():
    session, tr, clock = make(StreamSettings(partial_interval_ms=500, endpoint_silence_ms=480))
    events = run(session, clock, np.concatenate([silence(0.5), speech(2.0), silence(1.0)]))
    kinds = [e.kind for e in events]
    assert kinds[0] == "speech_start"
    assert kinds.count("final") == 1 and kinds[-1] == "final"
    assert kinds.count("partial") >= 2
    assert all(k != "final" for k in kinds[:-1])
    final = events[-1]
    assert final.reason == "silence"
    # ended by silence: about 0.5 s after the speech stopped at 2.5 s, with no end() call
    assert 2.9 <= final.at_s <= 3.1
    # partial texts grow with the audio they were made from
    partial_lengths = [e.utterance_s for e in events if e.kind == "partial"]
    assert partial_lengths == sorted(partial_lengths)


def test_final_audio_has_pre_roll_and_a_fixed_tail_of_real_then_digital_silence():
    settings = StreamSettings(
        partials=False, endpoint_silence_ms=640, pre_roll_ms=256, speculate_ms=64, tail_ms=300
    )
    session, tr, clock = make(settings)
    noise = np.random.default_rng(0).normal(0, 0.01, int(1.0 * RATE)).astype(np.float32)
    run(session, clock, np.concatenate([silence(1.0), speech(1.0), noise]))
    (audio,) = tr.calls  # the early decode, reused by the endpoint
    # 1.0 s of speech (rounded to whole 32 ms windows) + 256 ms pre-roll + 300 ms tail
    assert 1.0 + 0.256 + 0.3 - 0.04 <= audio.size / RATE <= 1.0 + 0.256 + 0.3 + 0.04
    assert np.abs(audio[: int(0.2 * RATE)]).max() == 0.0  # the pre-roll is the silence before
    tail = audio[-int(0.3 * RATE) :]
    # the first 64 ms of the tail are the real (noisy) silence, the rest is digital silence
    assert np.abs(tail[: int(0.06 * RATE)]).max() > 0.0
    assert np.abs(tail[-int(0.3 * RATE) + 64 * 16 + 32 * 16 :]).max() == 0.0


def test_release_decodes_the_same_audio_as_the_endpoint_would():
    settings = StreamSettings(partials=False, speculate_ms=0, tail_ms=300)
    session, tr, clock = make(settings)
    run(session, clock, np.concatenate([speech(1.0), silence(0.3)]))
    session.end()
    session2, tr2, clock2 = make(dataclasses.replace(settings, endpoint_silence_ms=320))
    run(session2, clock2, np.concatenate([speech(1.0), silence(0.5)]))
    assert tr.calls[0].size == tr2.calls[0].size  # speech + 300 ms, whatever ended it


def test_two_questions_give_two_finals():
    session, tr, clock = make(StreamSettings(partials=False))
    events = run(
        session, clock, np.concatenate([speech(1.0), silence(0.8), speech(0.7), silence(0.8)])
    )
    finals = [e for e in events if e.kind == "final"]
    assert [f.reason for f in finals] == ["silence", "silence"]
    assert finals[0].utterance_s > finals[1].utterance_s  # 1.0 s then 0.7 s of speech
    assert len(tr.calls) == 2


def test_pause_shorter_than_the_endpoint_keeps_one_utterance():
    session, tr, clock = make(StreamSettings(partials=False, endpoint_silence_ms=500))
    events = run(
        session, clock, np.concatenate([speech(1.0), silence(0.35), speech(1.0), silence(0.8)])
    )
    finals = [e for e in events if e.kind == "final"]
    assert len(finals) == 1 and finals[0].utterance_s > 2.3


def test_push_to_talk_release_ends_the_utterance():
    session, tr, clock = make(StreamSettings(partials=False))
    events = run(session, clock, speech(1.5))
    assert [e.kind for e in events] == ["speech_start"]
    final = session.end()
    # released while speaking: 1.5 s of speech + the 300 ms tail of digital silence
    assert (
        final.kind == "final" and final.reason == "release" and final.text.startswith("heard 1.8")
    )


def test_release_without_speech_gives_an_empty_final_and_no_model_call():
    session, tr, clock = make()
    run(session, clock, silence(1.0))
    final = session.end()
    assert (final.kind, final.text, final.reason) == ("final", "", "release")
    assert tr.calls == []


def test_a_click_is_not_transcribed():
    session, tr, clock = make(StreamSettings(min_speech_ms=160))
    events = run(session, clock, np.concatenate([silence(0.3), speech(0.064), silence(1.0)]))
    assert [e.kind for e in events] == ["speech_start"]
    assert tr.calls == []


def test_long_speech_is_clamped_at_the_utterance_limit():
    session, tr, clock = make(StreamSettings(partials=False, max_utterance_s=2.0))
    events = run(session, clock, speech(3.0))
    finals = [e for e in events if e.kind == "final"]
    assert finals and finals[0].reason == "max_length"
    assert finals[0].utterance_s <= 2.0 + 0.04
    assert all(a.size <= 2.04 * RATE for a in tr.calls)


def test_sending_faster_than_real_time_is_refused_after_the_burst():
    session, tr, clock = make(StreamSettings(max_input_rate=2.0, input_burst_s=1.0))
    pcm = float_to_pcm16(speech(5.0)).tobytes()
    with pytest.raises(AudioLimitError, match="faster than 2× real time"):
        for i in range(0, len(pcm), 640):
            session.feed(pcm[i : i + 640])  # the clock never moves: a flood
    assert session.received_seconds <= 1.0 + 0.02


def test_real_time_sender_is_never_refused():
    session, tr, clock = make(StreamSettings(max_input_rate=1.0, input_burst_s=0.1, partials=False))
    run(session, clock, np.concatenate([speech(3.0), silence(1.0)] * 2))
    assert sum(e.kind == "final" for e in session.events) == 2


def test_a_stream_that_never_ends_is_cut_at_the_session_limit():
    session, tr, clock = make(StreamSettings(max_session_s=3.0, partials=False))
    with pytest.raises(AudioLimitError, match="ran past 3 s of audio"):
        run(session, clock, silence(10.0))
    assert session.received_seconds <= 3.0


def test_chunk_limits_and_misuse():
    session, tr, clock = make(StreamSettings(max_chunk_bytes=3200))
    with pytest.raises(AudioLimitError, match="chunk of 3202 bytes"):
        session.feed(bytes(3202))
    with pytest.raises(AudioFormatError, match="odd number"):
        session.feed(bytes(641))
    session.close()
    with pytest.raises(AudioStreamError):
        session.feed(bytes(640))
    with pytest.raises(AudioStreamError):
        session.end()


def test_events_serialise_for_the_websocket():
    session, tr, clock = make(StreamSettings(partials=False))
    events = run(session, clock, np.concatenate([speech(1.0), silence(1.0)]))
    payload = events[-1].to_json()
    assert (
        payload["kind"] == "final" and payload["reason"] == "silence" and "heard" in payload["text"]
    )
    assert "reason" not in events[0].to_json()


def test_settings_follow_the_config():
    from kiosk_config.schema import SpeechSection

    s = StreamSettings.from_config(
        SpeechSection(endpoint_silence_ms=700, max_utterance_seconds=50, max_audio_seconds=20)
    )
    assert s.endpoint_silence_ms == 700 and s.max_utterance_s == 20
    assert (
        StreamSettings.from_config(SpeechSection(stream_escalate_logprob=-0.8)).escalate_logprob
        == -0.8
    )
    # the stream's decoder sees as much audio after the speech as the file path keeps
    s = StreamSettings.from_config(SpeechSection(vad_pad_ms=200, speculate_ms=64))
    assert (s.tail_ms, s.speculate_ms) == (200, 64)
    assert StreamSettings.from_config(SpeechSection()).speculate_ms == 32


def test_final_decode_starts_during_the_trailing_silence():
    settings = StreamSettings(partials=False, speculate_ms=224, endpoint_silence_ms=640)
    session, tr, clock = make(settings)
    events = run(session, clock, np.concatenate([speech(1.5), silence(1.0)]))
    kinds = [e.kind for e in events]
    assert kinds == ["speech_start", "partial", "final"]
    partial, final = events[1], events[2]
    # the early decode happened ~0.22 s into the silence and is the final's text: one model call
    assert 1.5 + 0.2 <= partial.at_s <= 1.5 + 0.3
    assert final.text == partial.text and final.compute_ms == 0.0
    assert len(tr.calls) == 1


def test_speech_after_the_early_decode_makes_it_stale():
    settings = StreamSettings(partials=False, speculate_ms=224, endpoint_silence_ms=500)
    session, tr, clock = make(settings)
    audio = np.concatenate([speech(1.0), silence(0.35), speech(1.0), silence(1.0)])
    events = run(session, clock, audio)
    finals = [e for e in events if e.kind == "final"]
    assert (
        len(finals) == 1 and finals[0].utterance_s > 2.3
    )  # both parts, not the stale first decode
    assert len(tr.calls) == 2  # the stale early decode, then the one reused by the endpoint
    assert finals[0].text == f"heard {tr.calls[-1].size / RATE:.2f}s"


class UnsureTranscriber(CountingTranscriber):
    """A whisper-like transcriber whose fast decode is always unsure: records how it was asked."""

    def __init__(self, logprob: float = -0.9) -> None:
        super().__init__()
        self.modes: list[str] = []
        self.logprob = logprob  # of every fast decode

    def transcribe_timed(
        self, audio, *, language=None, trim=None, escalate=True, reference=False, preview=False
    ):
        from types import SimpleNamespace

        assert trim is False  # the session has cut the utterance already
        mode = "reference" if reference else ("auto" if escalate else "fast")
        if preview:
            mode = "preview"
        self.modes.append(mode)
        transcript = self.transcribe(audio, language=language)
        if mode != "fast":
            transcript = Transcript(
                f"sure {transcript.text}", transcript.language, audio.size / RATE
            )
        unsure = mode in ("fast", "preview")
        return SimpleNamespace(
            transcript=transcript,
            unsure=unsure,
            avg_logprob=self.logprob if unsure else -0.1,
            looked_wrong=False,
        )


def _make_unsure(settings: StreamSettings, logprob: float = -0.9):
    clock = Clock()
    tr = UnsureTranscriber(logprob)
    return (
        StreamingSession(tr, settings, vad=energy_vad, clock=clock, executor=InlineExecutor()),
        tr,
        clock,
    )


def test_partials_and_the_early_decode_never_escalate_the_final_does_when_unsure():
    settings = StreamSettings(partial_interval_ms=500, endpoint_silence_ms=480, speculate_ms=128)
    session, tr, clock = _make_unsure(settings)
    events = run(session, clock, np.concatenate([speech(1.5), silence(1.0)]))
    final = next(e for e in events if e.kind == "final")
    # partials are previews, the early final decode fast, then (unsure) one reference decode
    assert tr.modes[-2:] == ["fast", "reference"] and set(tr.modes[:-2]) == {"preview"}
    assert final.text.startswith("sure ") and final.compute_ms > 0
    assert tr.calls[-1].size == tr.calls[-2].size  # the reference decode saw the same audio


def test_release_without_an_early_decode_is_redone_when_unsure():
    session, tr, clock = _make_unsure(StreamSettings(partials=False))
    run(session, clock, speech(1.5))
    final = session.end()
    assert tr.modes == ["fast", "reference"] and final.text.startswith("sure ")


def test_a_moderately_unsure_final_is_kept_in_a_stream():
    # unsure by the file path's gate (-0.35) but above the stream's (-0.5): no slow redo
    settings = StreamSettings(partials=False, escalate_logprob=-0.5)
    session, tr, clock = _make_unsure(settings, logprob=-0.4)
    events = run(session, clock, np.concatenate([speech(1.5), silence(1.0)]))
    final = next(e for e in events if e.kind == "final")
    assert tr.modes == ["fast"] and not final.text.startswith("sure ")


def test_early_decode_starts_on_the_first_silent_window_by_default():
    session, tr, clock = make(StreamSettings(partials=False, endpoint_silence_ms=480))
    events = run(session, clock, np.concatenate([speech(1.5), silence(1.0)]))
    partial = next(e for e in events if e.kind == "partial")
    # one 32 ms window of silence (plus the 20 ms chunking), not 128 ms as before
    assert 1.5 + 0.03 <= partial.at_s <= 1.5 + 0.07
    assert len(tr.calls) == 1
    final = events[-1]
    assert final.kind == "final" and final.text == partial.text and final.compute_ms == 0.0


def test_the_final_decode_reuses_the_language_the_partials_heard():
    session, tr, clock = _make_unsure(
        StreamSettings(partial_interval_ms=500, endpoint_silence_ms=480)
    )
    asked: list[str | None] = []

    def transcribe(audio, *, language=None, prompt=None):
        asked.append(language)
        return Transcript("你好", language or "zh", audio.size / RATE)

    tr.transcribe = transcribe
    run(session, clock, np.concatenate([speech(1.5), silence(1.0)]))
    assert asked[0] is None  # the first partial detects
    assert tr.modes[-2:] == ["fast", "reference"] and asked[-2:] == ["zh", "zh"]


class GatedTranscriber(CountingTranscriber):
    """Blocks every decode until ``gate`` opens, honours ``cancel`` like whisper does after its
    encoder, and records what it was asked (to test the session's worker thread)."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.kinds: list[str] = []
        self.cancelled = 0

    def transcribe_timed(
        self,
        audio,
        *,
        language=None,
        trim=None,
        escalate=True,
        reference=False,
        preview=False,
        cancel=None,
    ):
        from types import SimpleNamespace

        from runtime.errors import DecodeCancelledError

        self.kinds.append("preview" if preview else "fast")
        self.entered.release()
        assert self.gate.wait(10)
        if cancel is not None and cancel.is_set():
            self.cancelled += 1
            raise DecodeCancelledError("called off")
        transcript = self.transcribe(audio, language=language)
        return SimpleNamespace(transcript=transcript, unsure=False, avg_logprob=-0.1)


def _threaded(settings: StreamSettings):
    clock = Clock()
    tr = GatedTranscriber()
    return StreamingSession(tr, settings, vad=energy_vad, clock=clock), tr, clock


def test_early_decode_runs_on_the_worker_and_is_cancelled_when_speech_resumes():
    session, tr, clock = _threaded(StreamSettings(partials=False, endpoint_silence_ms=480))
    try:
        # speech, then a short pause: the early decode starts and feed() does not wait for it
        events = run(session, clock, np.concatenate([speech(1.0), silence(0.1)]))
        assert tr.entered.acquire(timeout=5)
        assert [e.kind for e in events] == ["speech_start"]
        # the visitor goes on: the early decode (still inside the model) is called off
        run(session, clock, speech(0.5))
        assert session.cancelled_decodes == 1
        tr.gate.set()
        events = run(session, clock, silence(1.0))
        finals = [e for e in events if e.kind == "final"]
        assert tr.cancelled == 1  # the stale decode stopped instead of returning a result
        # the final covers both parts: speech, the pause, more speech, and the 300 ms tail
        assert len(finals) == 1 and finals[0].utterance_s > 1.0 + 0.1 + 0.5 + 0.25
        assert finals[0].text == f"heard {tr.calls[-1].size / RATE:.2f}s"
    finally:
        tr.gate.set()
        session.close()


def test_a_partial_running_when_the_silence_starts_is_called_off():
    settings = StreamSettings(partial_interval_ms=500, endpoint_silence_ms=480)
    session, tr, clock = _threaded(settings)
    try:
        run(session, clock, speech(0.9))  # one partial submitted at ~0.5 s, blocked in the model
        assert tr.entered.acquire(timeout=5) and tr.kinds == ["preview"]
        run(session, clock, silence(0.1))  # silence: the early final decode is queued
        assert session.cancelled_decodes == 1  # ... and the partial is called off
        tr.gate.set()
        events = run(session, clock, silence(1.0))
        final = next(e for e in events if e.kind == "final")
        assert tr.cancelled == 1 and tr.kinds == ["preview", "fast"]
        assert final.text == f"heard {tr.calls[-1].size / RATE:.2f}s"
        assert final.utterance_s > 0.9 + 0.25  # the whole utterance, not the partial's audio
    finally:
        tr.gate.set()
        session.close()


def test_partials_are_skipped_while_the_worker_is_busy():
    settings = StreamSettings(partial_interval_ms=300, endpoint_silence_ms=480)
    session, tr, clock = _threaded(settings)
    try:
        run(session, clock, speech(2.0))  # 6 partial intervals, but the first never finishes
        assert tr.entered.acquire(timeout=5)
        assert tr.kinds == ["preview"]  # no backlog of partials queued behind it
        tr.gate.set()
        events = run(session, clock, silence(1.0))
        assert [e.kind for e in events][-1] == "final"
    finally:
        tr.gate.set()
        session.close()


def test_the_endpoint_waits_for_a_running_early_decode_instead_of_decoding_again():
    import threading

    session, tr, clock = _threaded(StreamSettings(partials=False, endpoint_silence_ms=480))
    try:
        run(session, clock, np.concatenate([speech(1.0), silence(0.1)]))
        assert tr.entered.acquire(timeout=5)  # the early decode is inside the model
        threading.Timer(0.2, tr.gate.set).start()  # ... and finishes after the endpoint
        events = run(session, clock, silence(0.6))
        final = next(e for e in events if e.kind == "final")
        assert tr.kinds == ["fast"]  # one decode: the endpoint took the early one's result
        assert final.compute_ms > 0  # it was still running when the endpoint came
        assert final.text == f"heard {tr.calls[-1].size / RATE:.2f}s"
    finally:
        tr.gate.set()
        session.close()

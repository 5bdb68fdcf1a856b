"""The real transcriber (whisper base, CTranslate2 int8) on real human speech, English and Mandarin.

Prints the error rate of every clip; asserts pooled rates, the configured script, streaming
behaviour (partials before the final, an utterance ended by silence alone) and the limits.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from runtime.errors import AudioLimitError
from runtime.speech.audio import AudioLimits, float_to_pcm16, read_audio_file
from runtime.speech.normalize import convert_script, corpus_error_rate, error_rate

pytestmark = pytest.mark.real_models


@pytest.fixture(scope="module")
def transcriber(model_cache):
    from conftest import require_prepared

    from kiosk_config import load_config
    from runtime.inference.transcribe_whisper import WhisperTranscriber

    require_prepared(model_cache, "whisper-base", "ct2-int8")
    cfg = load_config(environ={"KIOSK_MODEL_CACHE": str(model_cache)})
    return WhisperTranscriber.from_config(cfg)


@pytest.fixture(scope="module")
def clips(shared_data):
    folder = shared_data / "speech"
    with (folder / "transcripts.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        (r["file"], r["lang"], r["transcript"], read_audio_file(folder / r["file"], AudioLimits()))
        for r in rows
    ]


def test_real_speech_error_rates(transcriber, clips):
    pairs = []
    for name, lang, reference, audio in clips:
        timed = transcriber.transcribe_timed(audio)
        tr = timed.transcript
        er = error_rate(reference, tr.text, lang)
        redo = " (redone: 30 s window, beam 5)" if timed.escalated else ""
        print(f"{er.name} {er.rate:6.3f}  {lang} {name}: {tr.text}{redo}")
        assert tr.language == lang, f"{name}: detected {tr.language}"
        if lang == "zh":
            assert convert_script(tr.text, "simplified") == tr.text, (
                f"{name}: not in Simplified: {tr.text}"
            )
        pairs.append((reference, tr.text, lang))
    rates = corpus_error_rate(pairs)
    print(f"pooled: English WER {rates['en']:.3f}, Mandarin CER {rates['zh']:.3f}")
    assert rates["en"] <= 0.05
    assert rates["zh"] <= 0.10  # plain faster-whisper: 3 edits in 58 characters (0.052)


def test_traditional_kiosk_gets_traditional_text(transcriber, clips):
    name, lang, reference, audio = next(c for c in clips if c[0].startswith("zh/fireredasr_BAC"))
    previous = transcriber.script
    transcriber.script = "traditional"
    try:
        text = transcriber.transcribe(audio, language="zh").text
    finally:
        transcriber.script = previous
    assert convert_script(text, "traditional") == text and "几乎" not in text and "幾乎" in text


def test_pack_vocabulary_fixes_a_name(transcriber, clips):
    *_, audio = next(c for c in clips if c[0].endswith("funasr_asr_example.wav"))
    plain = transcriber.transcribe(audio, language="zh").text
    transcriber.set_vocabulary(["达摩院", "语音识别模型"])
    try:
        biased = transcriber.transcribe(audio, language="zh").text
    finally:
        transcriber.set_vocabulary([])
    print(f"without vocabulary: {plain}\nwith vocabulary:    {biased}")
    assert "达摩院" in biased
    reference = "欢迎大家来体验达摩院推出的语音识别模型"
    assert error_rate(reference, biased, "zh").errors <= error_rate(reference, plain, "zh").errors


def test_unsure_decodes_are_redone_confident_ones_are_not(transcriber, clips):
    """The confidence gate on real speech: pink noise at 0 dB SNR makes whisper unsure, and the
    transcriber redoes that decode the reference way; the clean clip is kept as decoded."""
    name, lang, reference, audio = next(c for c in clips if c[0].startswith("zh/fireredasr_BAC"))
    clean = transcriber.transcribe_timed(audio)
    assert not clean.escalated and clean.avg_logprob >= transcriber.settings.escalate_logprob
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, audio.size).astype(np.float32)
    noise *= np.sqrt(np.mean(audio**2) / np.mean(noise**2))  # 0 dB SNR
    noisy = transcriber.transcribe_timed(audio + noise)
    print(f"clean: {clean.transcript.text} ({clean.avg_logprob:.2f})")
    print(
        f"noisy: {noisy.transcript.text} (fast {noisy.avg_logprob:.2f}, redone {noisy.escalated})"
    )
    assert noisy.avg_logprob < transcriber.settings.escalate_logprob
    assert noisy.escalated and noisy.window_frames == 3000
    preview = transcriber.transcribe_timed(audio + noise, escalate=False)
    assert not preview.escalated and preview.unsure


def test_silence_and_noise_give_no_text(transcriber):
    rng = np.random.default_rng(0)
    assert transcriber.transcribe(np.zeros(3 * 16000, np.float32)).text == ""
    clipping_noise = np.clip(rng.normal(0, 0.8, 3 * 16000), -1, 1).astype(np.float32)
    assert transcriber.transcribe(clipping_noise).text == ""


def test_too_long_audio_is_refused_before_decoding(transcriber):
    with pytest.raises(AudioLimitError, match="limit is 30 s"):
        transcriber.transcribe(np.zeros(3600 * 16000 // 100, np.float32).repeat(100))


def test_streaming_partials_then_final_on_silence_alone(transcriber, clips):
    from runtime.speech.streaming import InlineExecutor, StreamingSession, StreamSettings

    name, lang, reference, audio = next(c for c in clips if c[0].startswith("en/wenet_librispeech"))
    clock = [0.0]
    session = StreamingSession(
        transcriber,
        StreamSettings(partial_interval_ms=2500),
        clock=lambda: clock[0],
        executor=InlineExecutor(),  # decodes inside feed(): the fast replay below stays in step
    )
    pcm = float_to_pcm16(np.concatenate([audio, np.zeros(16000, np.float32)])).tobytes()
    events = []
    for i in range(0, len(pcm), 640):  # 20 ms chunks, paced like a microphone
        clock[0] += 0.02
        events.extend(session.feed(pcm[i : i + 640]))
    for e in events:
        print(f"{e.at_s:6.2f}s {e.kind:12s} {e.text}")
    kinds = [e.kind for e in events]
    assert "final" in kinds, "the utterance did not end on silence"  # no end() call was made
    first_final = kinds.index("final")
    assert "partial" in kinds[:first_final]
    # partials decode in cancellable steps; one looped ("the dreams, the dreams, ...") until the
    # step decoder learnt faster-whisper's temperature fallback
    assert all(len(e.text) <= len(reference) + 20 for e in events if e.kind == "partial")
    final = events[first_final]
    assert final.reason == "silence"
    assert final.at_s < audio.size / 16000 + 1.0
    assert error_rate(reference, final.text, lang).rate <= 0.1


def test_cli_transcribe(shared_data, model_cache):
    from click.testing import CliRunner

    from runtime.cli import cli

    clip = shared_data / "speech/zh/fireredasr_TEST_NET_Y0000000000_-KTKHdZ2fb8_S00000.wav"
    result = CliRunner().invoke(
        cli, ["transcribe", "--json", str(clip)], env={"KIOSK_MODEL_CACHE": str(model_cache)}
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (
        out["language"] == "zh"
        and error_rate("我有的时候说不清楚你们知道吗", out["text"], "zh").rate <= 0.15
    )


def test_streaming_cut_makes_no_more_mandarin_errors_than_the_file_path(transcriber, clips):
    """Every Mandarin clip through the session (socket bytes, as the UI sends them): the stream's
    cut (256 ms pre-roll, speech, 300 ms tail) against the file path's VAD trim, pooled."""
    from runtime.speech.streaming import InlineExecutor, StreamingSession, StreamSettings

    stream_errors = file_errors = 0
    for name, lang, reference, audio in (c for c in clips if c[1] == "zh"):
        clock = [0.0]
        session = StreamingSession(
            transcriber,
            StreamSettings(),
            clock=lambda clock=clock: clock[0],
            executor=InlineExecutor(),
        )
        pcm = float_to_pcm16(np.concatenate([audio, np.zeros(16000, np.float32)])).tobytes()
        finals = []
        for i in range(0, len(pcm), 640):
            clock[0] += 0.02
            finals += [e for e in session.feed(pcm[i : i + 640]) if e.kind == "final"]
        assert [f.reason for f in finals] == ["silence"], name  # one question, not cut short
        stream = error_rate(reference, finals[0].text, lang).errors
        file = error_rate(reference, transcriber.transcribe(audio).text, lang).errors
        print(f"{name}: stream {stream} ({finals[0].text}), file {file}")
        stream_errors, file_errors = stream_errors + stream, file_errors + file
    assert stream_errors <= file_errors


def test_streaming_in_real_time_reuses_the_early_decode(transcriber, clips):
    """A Mandarin clip paced like a microphone through the session's worker thread: the early
    final decode, started on the first silent window, is the final (no second decode)."""
    import time

    from runtime.speech.streaming import StreamingSession, StreamSettings

    name, lang, reference, audio = next(c for c in clips if c[0].startswith("zh/fireredasr_BAC"))
    kinds: list[str] = []
    timed = transcriber.transcribe_timed

    def counting(samples, **kw):
        kinds.append("preview" if kw.get("preview") else "final")
        return timed(samples, **kw)

    session = StreamingSession(transcriber, StreamSettings())
    session.transcriber = type("T", (), {"transcribe_timed": staticmethod(counting)})()
    pcm = float_to_pcm16(np.concatenate([audio, np.zeros(16000, np.float32)])).tobytes()
    events = []
    t0 = time.perf_counter()
    try:
        for n, i in enumerate(range(0, len(pcm), 640)):
            time.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.perf_counter()))
            events.extend(session.feed(pcm[i : i + 640]))
    finally:
        session.close()
    finals = [e for e in events if e.kind == "final"]
    print(f"{name}: {[(e.kind, e.text) for e in events]}")
    assert len(finals) == 1 and finals[0].reason == "silence"
    assert kinds.count("final") == 1  # the early decode was the final
    assert error_rate(reference, finals[0].text, lang).errors <= 1


def test_a_cancellable_partial_decodes_the_same_and_stops_when_called_off(transcriber, clips):
    """Streaming partials decode in cancellable steps: the same text as one greedy call, and a
    set cancel flag stops the decode with DecodeCancelledError instead of finishing it."""
    import threading

    from runtime.errors import DecodeCancelledError

    for name, _lang, _reference, audio in clips[:3]:
        audio = audio[: 16000 * 9]
        whole = transcriber.transcribe_timed(audio, preview=True).transcript.text
        stepped = transcriber.transcribe_timed(
            audio, preview=True, cancel=threading.Event()
        ).transcript.text
        print(f"{name}: {whole!r} / {stepped!r}")
        assert stepped == whole
    called_off = threading.Event()
    called_off.set()
    with pytest.raises(DecodeCancelledError):
        transcriber.transcribe_timed(clips[0][3][: 16000 * 9], preview=True, cancel=called_off)

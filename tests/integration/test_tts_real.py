"""The real voices: hibari (English, neural) and espeak-ng through pinyin (Chinese).

Intelligibility is checked by the real transcriber where it is fair (English); the Chinese
espeak-ng voice is robotic, so its whisper CER is printed and its timing checked.
"""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest

from runtime.speech.audio import AudioLimits, read_audio_file, to_mono_16k
from runtime.speech.normalize import error_rate

pytestmark = pytest.mark.real_models


@pytest.fixture(scope="module")
def cfg(model_cache):
    from kiosk_config import load_config

    return load_config(environ={"KIOSK_MODEL_CACHE": str(model_cache)})


@pytest.fixture(scope="module")
def hibari(cfg, model_cache):
    from conftest import require_prepared

    from runtime.inference.synth_hibari import HibariSynthesizer

    require_prepared(model_cache, "hibari-en", "onnx-int8")
    return HibariSynthesizer.from_config(cfg)


@pytest.fixture(scope="module")
def espeak(cfg):
    from runtime.inference.synth_espeak import EspeakSynthesizer

    if shutil.which(cfg.speech.espeak_binary) is None:
        message = "espeak-ng is not installed (apt-get install espeak-ng)"
        if os.environ.get("KIOSK_REQUIRE_MODELS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return EspeakSynthesizer.from_config(cfg)


@pytest.fixture(scope="module")
def transcriber(cfg, model_cache):
    from conftest import require_prepared

    from runtime.inference.transcribe_whisper import WhisperTranscriber

    require_prepared(model_cache, "whisper-base", "ct2-int8")
    return WhisperTranscriber.from_config(cfg)


def _as_16k(audio) -> np.ndarray:
    return to_mono_16k(audio.samples.astype(np.float32) / 32768.0, audio.sample_rate)


def test_english_voice_is_understood_by_the_recognizer(hibari, transcriber):
    text = "The passport office is on the second floor, next to the cafe."
    audio = hibari.synthesize(text, language="en")
    seconds = audio.samples.size / audio.sample_rate
    assert audio.sample_rate == 24000 and 2.0 < seconds < 8.0
    heard = transcriber.transcribe(_as_16k(audio), language="en").text
    er = error_rate(text, heard, "en")
    print(f"hibari -> whisper: {heard!r} WER {er.rate:.3f}")
    assert er.rate <= 0.15


def test_chinese_voice_reads_pinyin_at_a_speaking_pace(espeak, transcriber):
    text = "欢迎来到市民服务中心，护照办理在二楼。"
    audio = espeak.synthesize(text, language="zh")
    seconds = audio.samples.size / audio.sample_rate
    syllables = 17
    assert 0.12 * syllables < seconds < 0.6 * syllables, (
        f"{seconds:.2f} s for {syllables} syllables"
    )
    x = audio.samples.astype(np.float32) / 32768.0
    assert np.sqrt(np.mean(x**2)) > 0.01  # not silence
    heard = transcriber.transcribe(_as_16k(audio), language="zh").text
    print(
        f"espeak-ng zh -> whisper: {heard!r} "
        f"CER {error_rate(text, heard, 'zh').rate:.3f} (robotic voice)"
    )


def test_streamed_answer_starts_speaking_before_it_is_complete(hibari):
    from runtime.speech.speaker import CollectSink, Speaker

    sink = CollectSink()
    first_played = threading.Event()
    original = sink.play

    def play(audio, stop):
        original(audio, stop)
        first_played.set()

    sink.play = play  # type: ignore[method-assign]

    def answer():
        yield "The office opens at nine. "
        assert first_played.wait(10)
        yield "Please take a number at the entrance."

    report = Speaker({"en": hibari}, sink).speak_stream(answer(), "en")
    assert len(sink.chunks) == 2 and report.first_audio_ms is not None
    print(f"hibari first audio {report.first_audio_ms:.0f} ms after the first sentence")


def test_cli_speak_writes_a_wav(tmp_path, model_cache, espeak):
    from click.testing import CliRunner

    from runtime.cli import cli

    out = tmp_path / "zh.wav"
    result = CliRunner().invoke(
        cli,
        ["speak", "请到三号窗口办理。", "--out", str(out)],
        env={"KIOSK_MODEL_CACHE": str(model_cache)},
    )
    assert result.exit_code == 0, result.output
    audio = read_audio_file(out, AudioLimits())
    assert 1.0 < audio.size / 16000 < 6.0

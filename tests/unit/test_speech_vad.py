"""Streaming Silero VAD gives the same probabilities as faster-whisper's whole-clip run."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.speech.audio import AudioLimits, read_audio_file
from runtime.speech.vad import WINDOW, StreamingVad


@pytest.fixture(scope="module")
def clip(shared_data):
    audio = read_audio_file(shared_data / "speech" / "zh" / "funasr_asr_example.wav", AudioLimits())
    return audio[: audio.size // WINDOW * WINDOW]


def test_streaming_equals_whole_clip_whatever_the_chunking(clip):
    from faster_whisper.vad import get_vad_model

    whole = get_vad_model()(clip).reshape(-1)
    vad = StreamingVad()
    rng = np.random.default_rng(0)
    got, pos = [], 0
    while pos < clip.size:
        n = int(rng.integers(1, 3000))  # odd sizes: windows straddle chunks
        got.append(vad(clip[pos : pos + n]))
        pos += n
    streamed = np.concatenate(got)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    # real speech: mostly speech in the middle, silence at the very start
    assert whole[:5].max() < 0.5 and (whole > 0.5).mean() > 0.5


def test_silence_and_reset(clip):
    vad = StreamingVad()
    assert vad(np.zeros(16000, np.float32)).max() < 0.2
    first = vad(clip)
    vad.reset()
    np.testing.assert_allclose(
        vad(np.concatenate([np.zeros(16000, np.float32), clip]))[-first.size :], first, atol=0.05
    )

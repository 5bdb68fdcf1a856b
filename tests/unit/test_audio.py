"""Safe audio decoding: valid files decode right; lying, truncated and foreign bytes are refused
early."""

from __future__ import annotations

import io
import struct
import tracemalloc
import wave

import numpy as np
import pytest

from runtime.errors import AudioError, AudioFormatError, AudioLimitError
from runtime.speech.audio import (
    AudioLimits,
    decode_bytes,
    float_to_pcm16,
    parse_flac_header,
    pcm16_to_float,
    probe,
    read_audio_file,
    to_mono_16k,
    write_wav,
)

LIMITS = AudioLimits(
    max_bytes=4 * 1024 * 1024, max_seconds=30.0, max_channels=2, min_rate=8000, max_rate=96000
)


def wav_bytes(samples: np.ndarray, rate: int = 16000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def raw_wav(
    *,
    tag=1,
    channels=1,
    rate=16000,
    bits=16,
    data: bytes = b"",
    declared: int | None = None,
    byte_rate: int | None = None,
    block_align: int | None = None,
    extensible: bool = False,
) -> bytes:
    """A WAV built by hand, so every header field can lie independently."""
    block = block_align if block_align is not None else channels * bits // 8
    brate = byte_rate if byte_rate is not None else rate * block
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, brate, block, bits)
        fmt += (
            struct.pack("<HHI", 22, bits, 0)
            + struct.pack("<H", tag)
            + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        )
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, brate, block, bits)
    size = len(data) if declared is None else declared
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# -- valid input ----------------------------------------------------------------------


def test_16k_mono_pcm_round_trips():
    x = tone(1.0)
    pcm = (x * 32767).astype(np.int16)
    out = decode_bytes(wav_bytes(pcm), LIMITS)
    assert out.dtype == np.float32 and out.shape == (16000,)
    np.testing.assert_allclose(out, pcm / 32768.0, atol=1e-6)


def test_stereo_44k_is_mixed_down_and_resampled():
    left = (tone(2.0, 44100, 440.0) * 32767).astype(np.int16)
    stereo = np.stack([left, left], axis=1).reshape(-1)
    out = decode_bytes(wav_bytes(stereo, rate=44100, channels=2), LIMITS)
    assert abs(out.size - 32000) <= 64
    # still a 440 Hz tone after resampling: the spectrum peaks at 440 Hz
    spectrum = np.abs(np.fft.rfft(out[:16000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 2


@pytest.mark.parametrize(
    "bits,tag,encode",
    [
        (8, 1, lambda x: (x * 127 + 128).astype(np.uint8).tobytes()),
        (
            24,
            1,
            lambda x: b"".join(
                int(v).to_bytes(3, "little", signed=True) for v in (x * 8388607).astype(np.int32)
            ),
        ),
        (32, 3, lambda x: x.astype("<f4").tobytes()),
    ],
)
def test_other_sample_formats(bits, tag, encode):
    x = tone(0.05)
    out = decode_bytes(raw_wav(tag=tag, bits=bits, data=encode(x)), LIMITS)
    np.testing.assert_allclose(out, x, atol=2e-2)


def test_wave_format_extensible_pcm():
    x = (tone(0.1) * 32767).astype("<i2")
    out = decode_bytes(raw_wav(extensible=True, data=x.tobytes()), LIMITS)
    assert out.size == x.size


def test_float_wav_with_nan_and_overrange_is_cleaned():
    data = np.array([np.nan, 5.0, -5.0, 0.25], dtype="<f4").tobytes()
    out = decode_bytes(raw_wav(tag=3, bits=32, data=data), LIMITS)
    assert np.all(np.isfinite(out)) and out.max() <= 1.0 and out.min() >= -1.0


def test_silence_and_clipping_noise_decode_without_error():
    assert not decode_bytes(wav_bytes(np.zeros(16000, np.int16)), LIMITS).any()
    rng = np.random.default_rng(1)
    noisy = rng.choice([-32768, 32767], size=16000).astype(np.int16)
    out = decode_bytes(wav_bytes(noisy), LIMITS)
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_streamed_wav_with_placeholder_size_uses_the_bytes_present():
    x = (tone(0.5) * 32767).astype("<i2")
    out = decode_bytes(raw_wav(data=x.tobytes(), declared=0xFFFFFFFF), LIMITS)
    assert out.size == x.size


# -- lying headers, truncation, foreign bytes ------------------------------------------


def _refused_with_small_peak(data: bytes, error: type[AudioError], *words: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(error) as info:
            decode_bytes(data, LIMITS, name="visitor.wav")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(data) + 256 * 1024, f"allocated {peak} bytes before refusing"
    message = str(info.value)
    assert "visitor.wav" in message
    for word in words:
        assert word in message


def test_declared_4gb_data_chunk_is_refused_before_allocation():
    _refused_with_small_peak(
        raw_wav(data=b"\x00" * 3200, declared=4_000_000_000), AudioFormatError, "4000000000"
    )


def test_65535_channels_refused():
    _refused_with_small_peak(
        raw_wav(channels=65535, block_align=2, byte_rate=32000, data=b"\x00" * 1000),
        AudioLimitError,
        "65535 channels",
    )


def test_sample_rate_1e8_refused():
    _refused_with_small_peak(
        raw_wav(rate=100_000_000, data=b"\x00" * 1000), AudioLimitError, "100000000 Hz"
    )


def test_self_contradicting_header_refused():
    _refused_with_small_peak(
        raw_wav(data=b"\x00" * 1000, block_align=7), AudioFormatError, "contradicts"
    )


def test_one_hour_declared_is_refused_from_the_header():
    # A real 1-hour file (8 kHz mono, 57 MB) under a byte cap that lets it through: the duration
    # limit fires from the header, before any sample is converted.
    big_limits = AudioLimits(max_bytes=64 * 1024 * 1024, max_seconds=30.0)
    data = raw_wav(rate=8000, data=bytes(8000 * 2 * 3600))
    with pytest.raises(AudioLimitError, match="3600.0 s long; the limit is 30 s"):
        decode_bytes(data, big_limits, name="hour.wav")


@pytest.mark.parametrize("cut", [3, 11, 20, 36, 43])
def test_truncated_headers_refused(cut):
    full = wav_bytes(np.zeros(1600, np.int16))
    with pytest.raises(AudioFormatError):
        decode_bytes(full[:cut], LIMITS)


def test_truncated_data_refused():
    full = wav_bytes(np.zeros(16000, np.int16))
    with pytest.raises(AudioFormatError, match="truncated"):
        decode_bytes(full[: len(full) // 2], LIMITS)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"hello, this is not audio" * 10,
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"RIFF\x10\x00\x00\x00AVI LIST",
    ],
)
def test_non_audio_bytes_refused(payload, tmp_path):
    path = tmp_path / "question.wav"
    path.write_bytes(payload)
    with pytest.raises(AudioFormatError, match="question.wav"):
        read_audio_file(path, LIMITS)


def test_oversized_file_refused_without_reading(tmp_path):
    path = tmp_path / "huge.wav"
    with path.open("wb") as fh:
        fh.truncate(4 * 1024**3)  # sparse 4 GiB: stat says 4 GiB, nothing is on disk
    with pytest.raises(AudioLimitError, match="4294967296 bytes"):
        read_audio_file(path, LIMITS)


def test_missing_file_is_a_typed_error(tmp_path):
    with pytest.raises(AudioFormatError, match="does not exist"):
        read_audio_file(tmp_path / "nope.wav", LIMITS)


def test_pcm16_round_trip_gives_back_the_same_samples():
    every = np.arange(-32768, 32768, dtype=np.int16)
    back = float_to_pcm16(pcm16_to_float(every.tobytes()))
    assert np.array_equal(back, every)  # a socket replay of a 16-bit file hears the file exactly
    assert float_to_pcm16(np.array([2.0, -2.0, 0.49999], np.float32)).tolist() == [
        32767,
        -32768,
        16384,
    ]


def test_raw_pcm_needs_whole_samples():
    assert pcm16_to_float(b"\x00\x40").tolist() == [0.5]
    with pytest.raises(AudioFormatError, match="odd number of bytes"):
        pcm16_to_float(b"\x00\x40\x00")


# -- FLAC ------------------------------------------------------------------------------


def flac_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            samples.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def test_flac_decodes_and_is_checked():
    x = (tone(1.0, 22050) * 32767).astype(np.int16)
    data = flac_bytes(x, 22050)
    info = probe(data, LIMITS)
    assert (info.container, info.sample_rate, info.channels) == ("flac", 22050, 1)
    out = decode_bytes(data, LIMITS)
    assert abs(out.size - 16000) <= 64 and 0.3 < np.abs(out).max() <= 1.0


def _patch_streaminfo(
    data: bytes, *, rate: int | None = None, channels: int | None = None, total: int | None = None
) -> bytes:
    info = int.from_bytes(data[18:26], "big")
    if rate is not None:
        info = (info & ~(0xFFFFF << 44)) | (rate << 44)
    if channels is not None:
        info = (info & ~(0x7 << 41)) | ((channels - 1) << 41)
    if total is not None:
        info = (info & ~0xFFFFFFFFF) | total
    return data[:18] + info.to_bytes(8, "big") + data[26:]


def test_flac_lying_streaminfo_refused():
    data = flac_bytes((tone(0.2) * 32767).astype(np.int16))
    with pytest.raises(AudioLimitError, match="8 channels"):
        parse_flac_header(_patch_streaminfo(data, channels=8), LIMITS)
    with pytest.raises(AudioLimitError, match="sample rate"):
        parse_flac_header(_patch_streaminfo(data, rate=655350), LIMITS)
    with pytest.raises(AudioLimitError, match="long"):
        parse_flac_header(_patch_streaminfo(data, total=2**35), LIMITS)


def test_flac_without_total_is_capped_while_decoding():
    short = AudioLimits(max_seconds=1.0)
    data = _patch_streaminfo(flac_bytes((tone(3.0) * 32767).astype(np.int16)), total=0)
    with pytest.raises(AudioLimitError, match="longer than the limit of 1 s"):
        decode_bytes(data, short)


def test_write_wav_reads_back(tmp_path):
    path = tmp_path / "out.wav"
    write_wav(path, tone(0.5, 24000), 24000)
    out = read_audio_file(path, LIMITS)
    assert abs(out.size - 8000) <= 32


def test_to_mono_16k_keeps_16k_untouched():
    x = tone(0.1)
    assert to_mono_16k(x, 16000) is not None
    np.testing.assert_array_equal(to_mono_16k(x[:, None], 16000), x)

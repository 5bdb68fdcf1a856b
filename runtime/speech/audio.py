"""Safe audio decoding: untrusted WAV / FLAC / raw PCM bytes → 16 kHz mono float32.

Audio reaches the kiosk from operators (`kiosk transcribe FILE`) and from the UI's
microphone stream. Headers can lie (a 4 GB data chunk, 65535 channels, a sample
rate of 1e8), files can be cut short or be something else renamed to .wav. So
every input goes through the same order: byte cap, then a header parse that
checks each declared number against :class:`AudioLimits` and against the bytes
actually present, and only then any sample buffer is allocated or any decoder
runs. Every refusal is an :class:`AudioFormatError` (not audio we read) or an
:class:`AudioLimitError` (audio, but over a [speech] limit).

WAV PCM (8/16/24/32-bit integer, 32/64-bit float, plain or WAVE_FORMAT_EXTENSIBLE)
is parsed here with numpy; FLAC's STREAMINFO is checked here and the frames are
decoded with PyAV (FFmpeg, already installed with faster-whisper) under a running
sample cap. Resampling and down-mixing also use PyAV's resampler.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import AudioFormatError, AudioLimitError

log = logging.getLogger(__name__)

TARGET_RATE = 16000
_PCM = 0x0001
_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE
_STREAMING_SIZES = (
    0,
    0xFFFFFFFF,
    0x7FFFF000,
)  # placeholders written when a WAV is streamed (recorders, espeak-ng --stdout)
_FORMAT_HINT = "send a 16-bit PCM WAV or a FLAC file (16 kHz mono is best)"
_MAX_RIFF_CHUNKS = 64  # a real WAV has a handful; more is a crafted file


@dataclass(frozen=True)
class AudioLimits:
    """What an untrusted audio input may declare; see [speech] in kiosk.toml."""

    max_bytes: int = 16 * 1024 * 1024
    max_seconds: float = 30.0
    max_channels: int = 2
    min_rate: int = 8000
    max_rate: int = 96000

    @classmethod
    def from_config(cls, speech) -> AudioLimits:  # speech: kiosk_config.schema.SpeechSection
        return cls(
            max_bytes=speech.max_file_bytes,
            max_seconds=speech.max_audio_seconds,
            max_channels=speech.max_channels,
            min_rate=speech.min_sample_rate,
            max_rate=speech.max_sample_rate,
        )


@dataclass(frozen=True)
class AudioInfo:
    """What a header declares, after it passed the checks."""

    container: str  # "wav" | "flac"
    sample_rate: int
    channels: int
    bits: int
    frames: int | None  # None: FLAC without a total (decoded under the running cap)
    codec: str  # "pcm" | "float" | "flac"

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


@dataclass(frozen=True)
class _WavLayout:
    info: AudioInfo
    data_offset: int
    data_size: int


def _check_common(name: str, rate: int, channels: int, limits: AudioLimits) -> None:
    if channels < 1:
        raise AudioFormatError(
            f"audio {name}: header declares {channels} channels", hint=_FORMAT_HINT
        )
    if channels > limits.max_channels:
        raise AudioLimitError(
            f"audio {name}: {channels} channels; the limit is {limits.max_channels}",
            hint="record mono (or stereo) audio, or raise [speech] max_channels",
        )
    if not limits.min_rate <= rate <= limits.max_rate:
        raise AudioLimitError(
            f"audio {name}: sample rate {rate} Hz is outside "
            f"{limits.min_rate}..{limits.max_rate} Hz",
            hint="resample to 16000 Hz, or change [speech] min_sample_rate / max_sample_rate",
        )


def _check_duration(name: str, frames: int, rate: int, limits: AudioLimits) -> None:
    seconds = frames / rate
    if seconds > limits.max_seconds:
        raise AudioLimitError(
            f"audio {name}: {seconds:.1f} s long; the limit is {limits.max_seconds:g} s",
            hint="cut the recording to one question, or raise [speech] max_audio_seconds",
        )


def parse_wav_header(data: bytes, limits: AudioLimits, name: str = "input") -> _WavLayout:
    """Walk the RIFF chunks up to ``data``, checking every declared number; allocates nothing."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX", b"RF64") or data[8:12] != b"WAVE":
        raise AudioFormatError(
            f"audio {name}: not a WAV file (no RIFF/WAVE header)", hint=_FORMAT_HINT
        )
    if data[:4] != b"RIFF":
        raise AudioFormatError(
            f"audio {name}: {data[:4].decode('ascii')} WAV files are not supported",
            hint=_FORMAT_HINT,
        )
    pos = 12
    fmt: tuple[int, int, int, int, int, int] | None = None
    for _ in range(_MAX_RIFF_CHUNKS):
        if pos + 8 > len(data):
            break
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + size > len(data):
                raise AudioFormatError(
                    f"audio {name}: WAV fmt chunk is {size} bytes or cut short", hint=_FORMAT_HINT
                )
            tag, channels, rate, byte_rate, block_align, bits = struct.unpack_from(
                "<HHIIHH", data, body
            )
            if tag == _EXTENSIBLE:
                if size < 40:
                    raise AudioFormatError(
                        f"audio {name}: WAVE_FORMAT_EXTENSIBLE fmt chunk is too short",
                        hint=_FORMAT_HINT,
                    )
                tag = struct.unpack_from("<H", data, body + 24)[
                    0
                ]  # first two bytes of the sub-format GUID
            fmt = (tag, channels, rate, byte_rate, block_align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioFormatError(
                    f"audio {name}: WAV data chunk comes before its fmt chunk", hint=_FORMAT_HINT
                )
            return _wav_layout(name, fmt, body, size, len(data), limits)
        pos = body + size + (size & 1)  # chunks are word aligned
    raise AudioFormatError(
        f"audio {name}: WAV file has no data chunk (cut short?)", hint=_FORMAT_HINT
    )


def _wav_layout(
    name: str, fmt: tuple[int, ...], offset: int, declared: int, total: int, limits: AudioLimits
) -> _WavLayout:
    tag, channels, rate, byte_rate, block_align, bits = fmt
    if tag == _PCM and bits in (8, 16, 24, 32):
        codec = "pcm"
    elif tag == _FLOAT and bits in (32, 64):
        codec = "float"
    else:
        raise AudioFormatError(
            f"audio {name}: WAV encoding {tag:#06x} with {bits} bits is not supported",
            hint=_FORMAT_HINT,
        )
    _check_common(name, rate, channels, limits)
    if block_align != channels * bits // 8 or byte_rate != rate * block_align:
        raise AudioFormatError(
            f"audio {name}: WAV header contradicts itself "
            f"(block align {block_align}, byte rate {byte_rate} "
            f"for {channels} channels of {bits}-bit at {rate} Hz)",
            hint=_FORMAT_HINT,
        )
    present = total - offset
    if declared in _STREAMING_SIZES:
        size = present  # a recorder that streamed the file never went back to fill in the size
    elif declared > present:
        raise AudioFormatError(
            f"audio {name}: WAV header declares {declared} bytes of samples "
            f"but the file holds {present}"
            " (truncated or lying header)",
            hint="re-record or re-export the file",
        )
    else:
        size = declared
    frames = size // block_align
    _check_duration(name, frames, rate, limits)
    info = AudioInfo("wav", rate, channels, bits, frames, codec)
    return _WavLayout(info, offset, frames * block_align)


def parse_flac_header(data: bytes, limits: AudioLimits, name: str = "input") -> AudioInfo:
    """Check FLAC's STREAMINFO block (rate, channels, bits, total samples) before decoding."""
    if len(data) < 4 + 4 + 34 or data[:4] != b"fLaC":
        raise AudioFormatError(f"audio {name}: not a FLAC file or cut short", hint=_FORMAT_HINT)
    block_type = data[4] & 0x7F
    length = int.from_bytes(data[5:8], "big")
    if block_type != 0 or length != 34:
        raise AudioFormatError(
            f"audio {name}: FLAC file does not start with a STREAMINFO block", hint=_FORMAT_HINT
        )
    info = int.from_bytes(
        data[8 + 10 : 8 + 18], "big"
    )  # 20 bits rate, 3 channels-1, 5 bits-1, 36 total
    rate = info >> 44
    channels = ((info >> 41) & 0x7) + 1
    bits = ((info >> 36) & 0x1F) + 1
    total = info & 0xFFFFFFFFF
    if rate == 0:
        raise AudioFormatError(
            f"audio {name}: FLAC STREAMINFO declares a sample rate of 0", hint=_FORMAT_HINT
        )
    _check_common(name, rate, channels, limits)
    if total:
        _check_duration(name, total, rate, limits)
    return AudioInfo("flac", rate, channels, bits, total or None, "flac")


def probe(data: bytes, limits: AudioLimits, name: str = "input") -> AudioInfo:
    """The checked header of WAV or FLAC bytes."""
    if data[:4] == b"fLaC":
        return parse_flac_header(data, limits, name)
    return parse_wav_header(data, limits, name).info


def _wav_samples(data: bytes, layout: _WavLayout) -> np.ndarray:
    """(frames, channels) float32 in [-1, 1] from the checked data region."""
    info = layout.info
    raw = memoryview(data)[layout.data_offset : layout.data_offset + layout.data_size]
    if info.codec == "float":
        x = np.frombuffer(raw, dtype="<f4" if info.bits == 32 else "<f8").astype(np.float32)
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        np.clip(x, -1.0, 1.0, out=x)
    elif info.bits == 8:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif info.bits == 16:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif info.bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    return x.reshape(-1, info.channels)


def _flac_samples(data: bytes, info: AudioInfo, limits: AudioLimits, name: str) -> np.ndarray:
    """Decode FLAC with PyAV straight to 16 kHz mono, stopping at the duration cap."""
    import av  # lazy: FFmpeg bindings, installed with faster-whisper

    cap = int(limits.max_seconds * TARGET_RATE) + TARGET_RATE // 10
    out: list[np.ndarray] = []
    n = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format="flac") as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_RATE)
            for frame in container.decode(audio=0):
                for res in resampler.resample(frame):
                    arr = res.to_ndarray().reshape(-1)
                    n += arr.size
                    if n > cap:
                        raise AudioLimitError(
                            f"audio {name}: longer than the limit of {limits.max_seconds:g} s",
                            hint="cut the recording to one question, "
                            "or raise [speech] max_audio_seconds",
                        )
                    out.append(arr)
            for res in resampler.resample(None):
                out.append(res.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise AudioFormatError(
            f"audio {name}: FLAC data cannot be decoded ({exc})", hint=_FORMAT_HINT
        ) from None
    if not out:
        raise AudioFormatError(f"audio {name}: FLAC file holds no audio frames", hint=_FORMAT_HINT)
    return np.clip(np.concatenate(out), -1.0, 1.0).astype(np.float32, copy=False)


def to_mono_16k(frames: np.ndarray, rate: int) -> np.ndarray:
    """(frames, channels) float32 at ``rate`` → 1-D float32 at 16 kHz (channel mean, then PyAV's
    resampler)."""
    mono = frames.mean(axis=1, dtype=np.float32) if frames.ndim == 2 else frames.astype(np.float32)
    if rate == TARGET_RATE or mono.size == 0:
        return np.ascontiguousarray(mono, dtype=np.float32)
    import av

    frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_RATE)
    parts = [r.to_ndarray().reshape(-1) for r in resampler.resample(frame)]
    parts += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    return (
        np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    )


def decode_bytes(data: bytes, limits: AudioLimits, name: str = "input") -> np.ndarray:
    """WAV or FLAC bytes → 16 kHz mono float32, refusing anything the limits do not allow."""
    if len(data) > limits.max_bytes:
        raise AudioLimitError(
            f"audio {name}: {len(data)} bytes; the limit is {limits.max_bytes}",
            hint="send a shorter recording, or raise [speech] max_file_bytes",
        )
    if data[:4] == b"fLaC":
        info = parse_flac_header(data, limits, name)
        return _flac_samples(data, info, limits, name)
    layout = parse_wav_header(data, limits, name)
    if layout.data_size == 0:
        raise AudioFormatError(f"audio {name}: WAV file holds no samples", hint=_FORMAT_HINT)
    return to_mono_16k(_wav_samples(data, layout), layout.info.sample_rate)


def read_audio_file(path: Path | str, limits: AudioLimits) -> np.ndarray:
    """A WAV or FLAC file → 16 kHz mono float32; the file's size is checked before it is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise AudioFormatError(
                f"audio {path} is not a regular file", hint="pass a WAV or FLAC file"
            )
        if size > limits.max_bytes:
            raise AudioLimitError(
                f"audio {path}: {size} bytes; the limit is {limits.max_bytes}",
                hint="cut the recording, or raise [speech] max_file_bytes",
            )
        with path.open("rb") as fh:
            data = fh.read(limits.max_bytes + 1)  # a file growing while read is still capped
    except FileNotFoundError:
        raise AudioFormatError(f"audio file {path} does not exist", hint="check the path") from None
    except OSError as exc:
        raise AudioFormatError(f"audio file {path} cannot be read: {exc.strerror}") from None
    return decode_bytes(data, limits, name=str(path))


def pcm16_to_float(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Raw little-endian 16-bit mono PCM → float32 in [-1, 1]. The byte count must be even."""
    if len(data) % 2:
        raise AudioFormatError(
            f"raw PCM chunk has an odd number of bytes ({len(data)})",
            hint="send 16-bit little-endian mono samples, whole samples per chunk",
        )
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] → int16 (clipped), the inverse of :func:`pcm16_to_float`: audio read
    from 16-bit PCM goes back to the same samples (a replay through the streaming socket then
    hears exactly what the file path heard; truncating at × 32767 moved every sample and
    changed whisper's transcript of one benchmark clip)."""
    scaled = np.rint(np.asarray(samples, np.float32) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def normalize_loudness(
    samples: np.ndarray, target_peak: float = 0.5, max_gain: float = 30.0
) -> np.ndarray:
    """Scale quiet speech up to a common peak (AISHELL-style recordings peak near 0.05).

    Uses the 99.9th percentile of |x| instead of the maximum, so one click does not
    decide the gain; never amplifies more than ``max_gain`` so near-silence stays quiet.
    """
    if samples.size == 0:
        return samples
    peak = float(np.percentile(np.abs(samples), 99.9))
    if peak <= 1e-6:
        return samples
    gain = min(max_gain, target_peak / peak)
    if 0.8 <= gain <= 1.25:
        return samples
    return np.clip(samples * gain, -1.0, 1.0).astype(np.float32)


def write_wav(path: Path | str, samples: np.ndarray, sample_rate: int) -> None:
    """int16 or float mono samples → 16-bit PCM WAV (stdlib wave: nothing untrusted here)."""
    import wave

    pcm = samples if samples.dtype == np.int16 else float_to_pcm16(samples)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.astype("<i2").tobytes())

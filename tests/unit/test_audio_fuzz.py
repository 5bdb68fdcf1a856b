"""Fuzzing the audio reader: any bytes give float32 audio or an AudioError, nothing else."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import AudioError
from runtime.speech.audio import AudioLimits, decode_bytes

LIMITS = AudioLimits(max_bytes=256 * 1024, max_seconds=5.0)


def _valid() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(1600) / 5) * 8000).astype("<i2").tobytes())
    return buf.getvalue()


VALID = _valid()


def _check(data: bytes) -> None:
    try:
        out = decode_bytes(data, LIMITS)
    except AudioError:
        return
    assert out.dtype == np.float32 and out.ndim == 1
    assert out.size <= LIMITS.max_seconds * 16000 + 16000
    assert np.all(np.isfinite(out))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    _check(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=6))
def test_header_byte_flips(flips):
    data = bytearray(VALID)
    for pos, value in flips:
        data[pos] = value
    _check(bytes(data))


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from([4, 16, 22, 24, 28, 32, 34, 40]), value=st.integers(0, 2**32 - 1))
def test_header_fields_set_to_any_value(field, value):
    data = bytearray(VALID)
    if field in (22, 32, 34):
        data[field : field + 2] = struct.pack("<H", value & 0xFFFF)
    else:
        data[field : field + 4] = struct.pack("<I", value)
    _check(bytes(data))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(VALID)))
def test_every_truncation(cut):
    _check(VALID[:cut])

"""`kiosk transcribe` refuses bad audio before loading any model; `kiosk speak` checks its text."""

from __future__ import annotations

import struct

import pytest

from runtime.cli import main


@pytest.fixture(autouse=True)
def _empty_model_cache(monkeypatch, tmp_path):
    # No prepared models here: a refusal must come from the audio checks, not from a missing model.
    monkeypatch.setenv("KIOSK_MODEL_CACHE", str(tmp_path / "no-models"))


def test_transcribe_refuses_non_audio(tmp_path, capsys):
    path = tmp_path / "visitor.wav"
    path.write_text("not audio at all")
    assert main(["transcribe", str(path)]) == 2
    err = capsys.readouterr().err
    assert "visitor.wav: not a WAV file" in err and "fix:" in err


def test_transcribe_refuses_a_lying_header(tmp_path, capsys):
    fmt = struct.pack("<HHIIHH", 1, 1, 100_000_000, 200_000_000, 2, 16)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 4_000_000_000)
    )
    path = tmp_path / "lie.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) + 100) + body + bytes(100))
    assert main(["transcribe", str(path)]) == 2
    assert "sample rate 100000000 Hz is outside 8000..96000 Hz" in capsys.readouterr().err


def test_transcribe_without_a_prepared_model_says_how_to_prepare(tmp_path, capsys):
    import io
    import wave

    path = tmp_path / "ok.wav"
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(3200))
    path.write_bytes(buf.getvalue())
    assert main(["transcribe", str(path)]) == 2
    assert "kiosk models prepare whisper-base" in capsys.readouterr().err


def test_speak_refuses_text_over_the_cap(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KIOSK_SPEECH__TTS_MAX_CHARS", "10")
    out = tmp_path / "x.wav"
    assert main(["speak", "This text is longer than ten characters.", "--out", str(out)]) == 2
    assert "limit is 10" in capsys.readouterr().err and not out.exists()

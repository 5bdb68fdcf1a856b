"""The voice WebSocket and /v1/kiosk/speak on a real loopback server with the real speech models.

The service is wired as `kiosk serve` wires it (``from_app_state``: whisper + Silero VAD for
``/v1/kiosk/voice``, hibari and espeak-ng for ``/v1/kiosk/speak``); only the answer pipeline
runs on the small test store with the fake embedder, to keep the run short.

- a real Mandarin recording, converted to 16 kHz mono s16le by ``runtime.speech.audio`` and
  streamed in 100 ms chunks at real time: partials, then a final transcript close to the
  reference, then the answer to that transcript;
- ``/speak`` in English and Chinese: a valid WAV of plausible length that is not silence;
- round trip: the English voice says a pack FAQ question, the WAV goes back in over the
  WebSocket, and the kiosk answers it from the FAQ.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import wave
from types import SimpleNamespace

import numpy as np
import pytest
from server_helpers import make_pipeline, running_server

from runtime.speech.audio import AudioLimits, float_to_pcm16, read_audio_file, to_mono_16k
from runtime.speech.normalize import error_rate

pytestmark = pytest.mark.real_models

CHUNK = 3200  # bytes: 100 ms of 16 kHz s16le
CLIP = ("zh/fireredasr_BAC009S0764W0121.wav", "甚至出现交易几乎停滞的情况")


@pytest.fixture(scope="module")
def served(model_cache, tmp_path_factory):
    from conftest import require_prepared

    from kiosk_config import load_config
    from runtime.server.app import AppState
    from runtime.server.service_app import from_app_state, uvicorn_options

    require_prepared(model_cache, "whisper-base", "ct2-int8")
    require_prepared(model_cache, "hibari-en", "onnx-int8")
    cfg = load_config(environ={"KIOSK_MODEL_CACHE": str(model_cache)})
    if shutil.which(cfg.speech.espeak_binary) is None:
        message = "espeak-ng is not installed (apt-get install espeak-ng)"
        if os.environ.get("KIOSK_REQUIRE_MODELS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    tmp = tmp_path_factory.mktemp("voice")
    cfg.paths.data_dir = tmp / "data"
    pipeline = make_pipeline(tmp)
    state = AppState()
    state.service = SimpleNamespace(pipeline=pipeline)
    state.ready.set()
    app = from_app_state(state, cfg)
    with running_server(app, **uvicorn_options(cfg)) as url:
        yield url, cfg
    pipeline.close()


def _ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http") + "/v1/kiosk/voice"


def _stream(url: str, pcm: bytes, *, pace_s: float) -> list[dict]:
    """Send ``pcm`` in 100 ms chunks, one every ``pace_s``; return every event until the answer."""
    from websockets.sync.client import connect

    events: list[dict] = []
    with connect(_ws_url(url), open_timeout=10, max_size=2**20) as ws:
        t0 = time.monotonic()
        for i, start in enumerate(range(0, len(pcm), CHUNK)):
            delay = t0 + i * pace_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ws.send(pcm[start : start + CHUNK])
        ws.send(json.dumps({"type": "end"}))  # push-to-talk release (a no-op if silence ended it)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            ev = json.loads(ws.recv(timeout=max(0.1, end - time.monotonic())))
            events.append(ev)
            if ev["kind"] == "answer":
                break
    return events


def _pcm(samples: np.ndarray, silence_s: float = 1.0) -> bytes:
    tail = np.zeros(int(16000 * silence_s), np.float32)
    return float_to_pcm16(np.concatenate([samples, tail])).tobytes()


def test_real_speech_over_the_websocket_gives_partials_a_final_and_an_answer(served, shared_data):
    url, cfg = served
    name, reference = CLIP
    audio = read_audio_file(shared_data / "speech" / name, AudioLimits.from_config(cfg.speech))
    events = _stream(url, _pcm(audio), pace_s=0.1)  # real time
    for e in events:
        print(e.get("kind"), e.get("at_s"), e.get("text", "")[:60])
    kinds = [e["kind"] for e in events]
    assert "error" not in kinds, events
    assert kinds[0] == "speech_start"
    finals = [e for e in events if e["kind"] == "final" and e["text"].strip()]
    assert finals, kinds
    assert "partial" in kinds[: kinds.index("final")]
    final = finals[0]
    assert error_rate(reference, final["text"], "zh").rate <= 0.2, final["text"]
    answer = events[-1]
    assert answer["kind"] == "answer" and answer["text"] and answer["trace_id"]
    assert answer["question"] == final["text"].strip() or final["text"].strip().startswith(
        answer["question"][:10]
    )
    assert answer["path"] in ("cache", "faq", "rag", "extractive", "fallback", "refusal")


def _wav(body: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(body)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getcomptype() == "NONE"
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2"), rate


@pytest.mark.parametrize(
    "language,text",
    [
        ("en", "The car park is in the basement, entrance from Wangjiang Lane."),
        ("zh", "停车场在地下一层，从望江巷进入。"),
    ],
)
def test_speak_returns_real_audio_in_both_languages(served, language, text):
    import httpx

    url, _ = served
    r = httpx.post(url + "/v1/kiosk/speak", json={"text": text, "language": language}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav", r.text[:200]
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WAVE"
    samples, rate = _wav(r.content)
    seconds = samples.size / rate
    print(f"{language}: {seconds:.2f} s at {rate} Hz")
    assert 8000 <= rate <= 48000
    assert 1.0 <= seconds <= 12.0  # one short sentence: a second or more, never a minute
    loud = np.abs(samples.astype(np.float32)) > 500
    assert loud.mean() > 0.1  # speech, not silence or a click


def test_spoken_faq_question_round_trip(served):
    """/speak says a pack FAQ question; its audio, sent back over the WebSocket, is answered."""
    import httpx

    url, _ = served
    r = httpx.post(
        url + "/v1/kiosk/speak", json={"text": "Where can I park?", "language": "en"}, timeout=60
    )
    assert r.status_code == 200
    samples, rate = _wav(r.content)
    audio = to_mono_16k(samples.astype(np.float32) / 32768.0, rate)
    pad = np.zeros(8000, np.float32)  # half a second before the speech, as from a microphone
    events = _stream(url, _pcm(np.concatenate([pad, audio])), pace_s=0.05)  # 2x real time
    final = next(e for e in events if e["kind"] == "final" and e["text"].strip())
    assert error_rate("Where can I park?", final["text"], "en").rate <= 0.25, final["text"]
    answer = events[-1]
    assert answer["kind"] == "answer", [e["kind"] for e in events]
    assert answer["path"] == "faq" and "basement" in answer["text"]
    assert answer["sources"][0]["faq_id"] == "en-parking-01"

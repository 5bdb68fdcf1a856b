"""Kiosk endpoints on a real loopback server: SSE ask events, sessions, FAQ, speak, voice WebSocket,
admin PIN lockout over HTTP, bad input (malformed JSON, wrong types, huge bodies) and
healthz/metrics."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fakes import FakeGenerator
from server_helpers import make_config, make_pipeline, running_server

from runtime.server.service_app import build_service_app, uvicorn_options

pytestmark = pytest.mark.network_loopback


class _FakeVoiceSession:
    """Stands in for runtime.speech.streaming.StreamingSession: every 3200 bytes (0.1 s) is a
    partial; ``end`` gives the final transcript (the real session needs whisper + VAD models)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.closed = False

    def feed(self, chunk: bytes):
        from runtime.speech.streaming import SpeechEvent

        self.bytes += len(chunk)
        return [SpeechEvent("partial", self.bytes / 32000, text="where can")]

    def end(self):
        from runtime.speech.streaming import SpeechEvent

        return SpeechEvent("final", self.bytes / 32000, text="Where can I park?", reason="release")

    def close(self) -> None:
        self.closed = True


class _ToneSynth:
    model_id, backend, device, languages = "tone", "numpy", "CPU", ("zh", "en")

    def synthesize(self, text: str, *, language: str):
        import numpy as np

        from runtime.inference.base import SpeechAudio

        return SpeechAudio(np.zeros(1600, dtype=np.int16), 16000)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kiosk")
    pipeline = make_pipeline(
        tmp, generator=FakeGenerator(lambda r: "Saturdays: 09:00 to 12:30 [1].")
    )
    cfg = make_config(
        tmp, admin_pin="2468", admin_max_attempts=3, max_body_bytes=4096, max_ws_message_bytes=8192
    )
    state = {"pipeline": None}
    sessions: list[_FakeVoiceSession] = []

    def voice():
        sessions.append(_FakeVoiceSession())
        return sessions[-1]

    app = build_service_app(
        cfg,
        get_pipeline=lambda: state["pipeline"],
        make_voice_session=voice,
        get_synthesizer=lambda lang: _ToneSynth(),
    )
    with running_server(app, **uvicorn_options(cfg)) as url:
        yield url, state, pipeline, sessions, app
    pipeline.close()


def test_healthz_503_while_loading_then_200(served):
    url, state, pipeline, _, _ = served
    state["pipeline"] = None
    assert httpx.get(url + "/healthz").status_code == 503
    r = httpx.post(url + "/v1/kiosk/ask", json={"question": "hi"})
    assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
    state["pipeline"] = pipeline
    assert httpx.get(url + "/healthz").status_code == 200


def _events(body: str) -> list[tuple[str, dict]]:
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines.get("event", ""), json.loads(lines["data"])))
    return out


def test_sse_ask_events_sources_partial_path_done(served):
    url, state, pipeline, _, _ = served
    state["pipeline"] = pipeline
    with httpx.stream(
        "POST",
        url + "/v1/kiosk/ask",
        json={"question": "When is the hall open on Saturday?", "stream": True},
    ) as r:
        assert r.status_code == 200
        events = _events(r.read().decode())
    kinds = [k for k, _ in events]
    assert kinds[0] == "sources" and kinds[-2:] == ["path", "done"]
    assert "partial" in kinds
    done = events[-1][1]
    assert done["path"] == events[-2][1]["path"] and done["sources"] and done["degraded"] is False
    assert "generated" not in done


def test_sessions_keep_history_and_reset(served):
    url, state, pipeline, _, _ = served
    state["pipeline"] = pipeline
    with httpx.Client(base_url=url) as c:
        c.post("/v1/kiosk/ask", json={"question": "How much is a passport?", "session": "s1"})
        r = c.post("/v1/kiosk/session/reset", json={"session": "s1"})
        assert r.json() == {"session": "s1", "reset": True}
        assert c.post("/v1/kiosk/session/reset", json={"session": "s1"}).json()["reset"] is False


def test_faq_list_and_speak(served):
    url, state, pipeline, _, _ = served
    state["pipeline"] = pipeline
    zh = httpx.get(url + "/v1/kiosk/faq?lang=zh").json()["entries"]
    assert zh and all(e["language"] == "zh" for e in zh)
    assert httpx.get(url + "/v1/kiosk/faq?lang=fr").status_code == 422
    wav = httpx.post(url + "/v1/kiosk/speak", json={"text": "hello", "language": "en"})
    assert (
        wav.status_code == 200
        and wav.headers["content-type"] == "audio/wav"
        and wav.content[:4] == b"RIFF"
    )


@pytest.mark.parametrize(
    "body,ctype,status",
    [
        (b"{not json", "application/json", 400),
        (b'["a list"]', "application/json", 400),
        (b'{"question": 5}', "application/json", 422),
        (b'{"question": "hi", "history": "no"}', "application/json", 422),
        (b'{"question": "hi", "stream": "yes"}', "application/json", 422),
        (b'{"question": NaN}', "application/json", 400),
        (b"[" * 100 + b"]" * 100, "application/json", 400),
        (b'{"question": "hi"}', "text/plain", 415),
        (b'{"question": "' + b"x" * 5000 + b'"}', "application/json", 413),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(served, body, ctype, status):
    url, state, pipeline, _, _ = served
    state["pipeline"] = pipeline
    r = httpx.post(url + "/v1/kiosk/ask", content=body, headers={"content-type": ctype})
    assert r.status_code == status and r.json()["error"]["message"]
    assert (
        httpx.post(url + "/v1/kiosk/ask", json={"question": "Where can I park?"}).status_code == 200
    )


def test_admin_pin_lockout_over_http_and_config_masks_secrets(served):
    url, state, pipeline, _, _ = served
    with httpx.Client(base_url=url) as c:
        ok = c.get("/v1/admin/config", headers={"x-admin-pin": "2468"})
        assert ok.status_code == 200 and ok.json()["server"]["admin_pin"] == "***"
        codes = [
            c.get("/v1/admin/config", headers={"x-admin-pin": "0000"}).status_code for _ in range(5)
        ]
        assert codes == [401, 401, 429, 429, 429]
        locked = c.get("/v1/admin/config", headers={"x-admin-pin": "2468"})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        assert c.get("/v1/models").status_code == 200  # other endpoints unaffected
        metrics = c.get("/metrics").text
    assert 'kiosk_rejected_requests_total{reason="admin_bad_pin"} 3.0' in metrics
    assert 'kiosk_rejected_requests_total{reason="admin_locked"}' in metrics


def test_voice_websocket_transcript_then_answer_and_message_cap(served):
    url, state, pipeline, sessions, _ = served
    state["pipeline"] = pipeline
    from websockets.sync.client import connect

    ws_url = url.replace("http://", "ws://") + "/v1/kiosk/voice"
    with connect(ws_url) as ws:
        ws.send(b"\x00\x00" * 1600)
        assert json.loads(ws.recv())["kind"] == "partial"
        ws.send(json.dumps({"type": "end"}))
        final = json.loads(ws.recv())
        assert final["kind"] == "final" and final["text"] == "Where can I park?"
        answer = json.loads(ws.recv())
        assert answer["kind"] == "answer" and "B1" in answer["text"]
    with connect(ws_url) as ws:
        ws.send(b"\x00" * 9000)  # over max_ws_message_bytes
        with pytest.raises(Exception) as closed:
            ws.recv()
        assert "1009" in str(closed.value)
    assert all(s.closed for s in sessions)


def test_websocket_from_another_site_is_refused(served):
    url, *_ = served
    from websockets.sync.client import connect

    with pytest.raises(Exception) as refused:
        with connect(
            url.replace("http://", "ws://") + "/v1/kiosk/voice", origin="http://evil.example.com"
        ):
            pass
    assert "403" in str(refused.value)


def test_many_concurrent_streams_all_complete(served):
    url, state, pipeline, _, _ = served
    state["pipeline"] = pipeline

    async def main():
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=100)) as c:

            async def one(i):
                r = await c.post(
                    "/v1/kiosk/ask", json={"question": "Where can I park?", "stream": True}
                )
                return r.status_code, r.text.rstrip().endswith("}")

            return await asyncio.gather(*(one(i) for i in range(100)))

    results = asyncio.run(main())
    assert results == [(200, True)] * 100


def test_thousand_failed_pins_clear_4xx_no_crash_counted(tmp_path):
    """1,000 wrong PINs from rotating LAN addresses (with a valid API token): every answer is
    401 or 429, admin ends locked for everyone, the rest of the service is unaffected, and every
    attempt is counted in /metrics."""
    pipeline = make_pipeline(tmp_path)
    cfg = make_config(tmp_path, admin_pin="2468", api_tokens=["lan-token"], rate_limit_per_s=0)
    cfg.audit.enabled = False
    app = build_service_app(cfg, get_pipeline=lambda: pipeline)

    async def main():
        codes: dict[int, int] = {}
        for i in range(1000):
            t = httpx.ASGITransport(app=app, client=(f"10.20.{i // 200}.{i % 200 + 1}", 4000))
            async with httpx.AsyncClient(transport=t, base_url="http://127.0.0.1:8765") as c:
                r = await c.get(
                    "/v1/admin/config",
                    headers={"x-admin-pin": f"{i:04d}", "authorization": "Bearer lan-token"},
                )
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
        t = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=t, base_url="http://127.0.0.1:8765") as c:
            ask = await c.post("/v1/kiosk/ask", json={"question": "Where can I park?"})
            metrics = (await c.get("/metrics")).text
            admin = await c.get("/v1/admin/config", headers={"x-admin-pin": "2468"})
        return codes, ask, metrics, admin

    codes, ask, metrics, admin = asyncio.run(main())
    assert set(codes) == {401, 429} and sum(codes.values()) == 1000
    assert codes[401] == cfg.server.admin_global_max_failures - 1
    assert ask.status_code == 200 and admin.status_code == 429
    bad = 'kiosk_rejected_requests_total{reason="admin_bad_pin"} '
    locked = 'kiosk_rejected_requests_total{reason="admin_locked"} '
    n_bad = float(metrics.split(bad)[1].split()[0])
    n_locked = float(metrics.split(locked)[1].split()[0])
    assert n_bad == cfg.server.admin_global_max_failures and n_bad + n_locked == 1000
    pipeline.close()


def test_app_factory_with_config_serves_the_full_service(tmp_path):
    """`kiosk serve` builds its app with runtime.server.app.create_app(state, cfg=cfg): the loader's
    /healthz and form page, plus everything of this service (security, metrics, APIs, audit)."""
    from types import SimpleNamespace

    from runtime.server.app import AppState, create_app

    pipeline = make_pipeline(tmp_path)
    cfg = make_config(tmp_path)
    state = AppState()
    app = create_app(state, max_body_bytes=cfg.server.max_body_bytes, cfg=cfg)
    with running_server(app, **uvicorn_options(cfg)) as url:
        assert httpx.get(url + "/healthz").status_code == 503  # still loading
        svc = SimpleNamespace(
            pipeline=pipeline,
            knowledge="test knowledge",
            generator="none",
            placements={"embedder": "fake"},
            close=lambda: None,
        )
        state.load(lambda: svc)
        health = httpx.get(url + "/healthz")
        assert health.status_code == 200 and health.json()["knowledge"] == "test knowledge"
        assert httpx.get(url + "/").status_code == 200
        r = httpx.post(url + "/v1/kiosk/ask", json={"question": "Where can I park?"})
        assert r.status_code == 200 and r.json()["path"] == "faq" and r.json()["degraded"] is False
        assert (
            'kiosk_answers_total{degraded="false",path="faq"} 1.0'
            in httpx.get(url + "/metrics").text
        )
        assert (
            httpx.get(url + "/healthz", headers={"host": "rebind.example.com"}).status_code == 403
        )
    pipeline.close()


def test_admin_pack_upload_status_rollback_and_unanswered(tmp_path):
    """Real signed packs (runtime.packs.sample.PackKit) uploaded over HTTP with the admin PIN."""
    from fakes import FakeEmbedder

    from runtime.packs.install import PackInstaller
    from runtime.packs.sample import PackKit

    kit = PackKit(tmp_path / "pub", FakeEmbedder(32))
    installer = PackInstaller(tmp_path / "packs", kit.settings())
    pipeline = make_pipeline(tmp_path)
    cfg = make_config(tmp_path, admin_pin="2468")
    app = build_service_app(cfg, get_pipeline=lambda: pipeline, get_installer=lambda: installer)
    pin = {"x-admin-pin": "2468"}
    with (
        running_server(app, **uvicorn_options(cfg)) as url,
        httpx.Client(base_url=url, timeout=60) as c,
    ):
        for v in (1, 2):
            body = kit.make(v, n_docs=3, chunks_per_doc=2).read_bytes()
            r = c.post(
                "/v1/admin/packs/upload",
                content=body,
                headers={**pin, "content-type": "application/octet-stream"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["installed"]["version"] == v
        assert c.get("/v1/admin/packs", headers=pin).json()["current"]["version"] == 2
        bad = c.post("/v1/admin/packs/upload", content=b"not a pack" * 100, headers=pin)
        assert 400 <= bad.status_code < 500 and bad.json()["error"]["message"]
        back = c.post("/v1/admin/packs/rollback", headers=pin)
        assert back.status_code == 200 and back.json()["active"]["version"] == 1
        again = c.post("/v1/admin/packs/rollback", headers=pin)  # the pointer swaps: back to 2
        assert again.status_code == 200 and again.json()["active"]["version"] == 2
        assert c.post("/v1/admin/packs/upload", content=body).status_code == 401  # no PIN
        asked = c.post("/v1/kiosk/ask", json={"question": "xyzzy plugh frobnicate?"}).json()
        assert asked["path"] in ("fallback", "refusal")
        turns = c.get("/v1/admin/unanswered?limit=5", headers=pin).json()["turns"]
        assert turns and turns[0]["question"] == "xyzzy plugh frobnicate?"
        assert turns[0]["path"] in ("fallback", "refusal")
    pipeline.close()

"""The minimal kiosk HTTP app on a real loopback socket (uvicorn), with a fake-embedder store."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fakes import FakeEmbedder, build_answer_store

from runtime.answer import AnswerPipeline, PipelineSettings
from runtime.answer.service import Service
from runtime.server.app import AppState, create_app


@pytest.fixture
def server(tmp_path):
    store = build_answer_store(tmp_path / "k.sqlite", FakeEmbedder(dim=64))
    state = AppState()
    app = create_app(state, max_body_bytes=4096)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"

    def load():
        p = AnswerPipeline(
            store, FakeEmbedder(dim=64), None, settings=PipelineSettings(faq_threshold=0.9)
        )
        state.load(
            lambda: Service(p, "test store", "no generator", {"embedder": p.embedder.describe()})
        )

    yield base, state, load
    srv.should_exit = True
    thread.join(5)
    store.close()


def test_healthz_is_503_while_loading_then_200(server):
    base, state, load = server
    r = httpx.get(f"{base}/healthz")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert httpx.post(f"{base}/v1/kiosk/ask", json={"question": "hi"}).status_code == 503
    load()
    r = httpx.get(f"{base}/healthz")
    body = r.json()
    assert r.status_code == 200 and body["knowledge"] == "test store"
    assert body["placements"]["embedder"]["model"] == "fake-ngram-embedder"
    assert body["pipeline"]["breakers"]["generator"]["state"] == "closed"


def test_ask_returns_the_answer_with_sources_and_path(server):
    base, state, load = server
    load()
    r = httpx.post(f"{base}/v1/kiosk/ask", json={"question": "Is the hall open on Sundays?"})
    a = r.json()
    assert r.status_code == 200 and a["path"] == "extractive" and "closed" in a["text"]
    assert a["sources"][0]["document"] == "Opening Hours" and a["trace_id"]
    r = httpx.post(
        f"{base}/v1/kiosk/ask",
        json={
            "question": "And on Sundays?",
            "history": [{"role": "user", "content": "What are the opening hours on Saturday?"}],
        },
    )
    assert r.status_code == 200
    assert r.json()["rewritten"] == "What are the opening hours on Sundays?"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"question": 5}', 400),
        (b'{"question": "x", "history": [{"role": "system", "content": "x"}]}', 400),
        (b'{"question": "' + b"a" * 5000 + b'"}', 413),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(server, body, status):
    base, state, load = server
    load()
    r = httpx.post(
        f"{base}/v1/kiosk/ask", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status and r.json()["error"]


def test_page_renders_answers_as_text_only(server):
    base, state, load = server
    r = httpx.get(f"{base}/")
    assert r.status_code == 200 and "<form" in r.text
    assert "innerHTML" not in r.text and "textContent" in r.text
    assert "src=" not in r.text and "http" not in r.text.replace(
        "http-equiv", ""
    )  # everything inline, offline

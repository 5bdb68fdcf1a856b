"""The official `openai` Python client against the running service (real uvicorn on loopback).

The pipeline is the real AnswerPipeline over a real SQLite store with the fake embedder and a
scripted generator, so answers are deterministic and the HTTP layer is what is tested.
"""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")

from fakes import FakeGenerator  # noqa: E402
from server_helpers import make_config, make_pipeline, running_server  # noqa: E402

from runtime.server.service_app import build_service_app, uvicorn_options  # noqa: E402

pytestmark = pytest.mark.network_loopback


def _reply(req) -> str:
    if "passport" in req.prompt.lower():
        return "A passport application costs 120 yuan [1]."
    return "I don't know."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openai")
    pipeline = make_pipeline(tmp, generator=FakeGenerator(_reply))
    cfg = make_config(tmp, api_tokens=["tablet-token"], admin_pin="2468")
    app = build_service_app(cfg, get_pipeline=lambda: pipeline)
    with running_server(app, **uvicorn_options(cfg)) as url:
        yield url, app
    pipeline.close()


@pytest.fixture
def client(server):
    url, _ = server
    with openai.OpenAI(
        base_url=url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=20
    ) as c:
        yield c


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "kiosk-assistant" and "fake-ngram-embedder" in ids


def test_chat_completion_non_streaming_with_sources(client):
    r = client.chat.completions.create(
        model="kiosk-assistant",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "What does a passport application cost?"},
        ],
    )
    text = r.choices[0].message.content
    assert "120 yuan" in text and r.choices[0].finish_reason == "stop"
    extra = r.model_extra
    assert (
        extra["kiosk"]["path"] in ("rag", "extractive", "faq")
        and extra["kiosk"]["degraded"] is False
    )
    assert extra["sources"] and any("120" in s["quote"] for s in extra["sources"])
    assert r.id.startswith("chatcmpl-") and r.usage.total_tokens > 0


def test_chat_completion_streaming_ends_with_sources_and_done(client, server):
    stream = client.chat.completions.create(
        model="kiosk-assistant",
        stream=True,
        messages=[{"role": "user", "content": "Where can I park?"}],
    )
    chunks = list(stream)  # the client stops at data: [DONE]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "The car park is in the basement (B1), entrance from Wangjiang Lane."
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["sources"][0]["faq_id"] == "en-parking-01"


def test_raw_stream_ends_with_done_marker(server):
    import httpx

    url, _ = server
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json={"stream": True, "messages": [{"role": "user", "content": "在哪里停车？"}]},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert "停车场在地下一层" in body


def test_history_turns_are_passed_and_follow_up_answered(client):
    r = client.chat.completions.create(
        model="kiosk-assistant",
        messages=[
            {"role": "user", "content": "What does a passport application cost?"},
            {"role": "assistant", "content": "A passport application costs 120 yuan."},
            {"role": "user", "content": "and postal delivery?"},
        ],
    )
    assert r.choices[0].message.content
    assert r.model_extra["kiosk"]["trace_id"]


def test_embeddings_float_and_base64(client):
    r = client.embeddings.create(
        model="fake-ngram-embedder", input=["opening hours", "opening hours?"]
    )
    assert len(r.data) == 2 and len(r.data[0].embedding) == 64
    import numpy as np

    a, b = np.array(r.data[0].embedding), np.array(r.data[1].embedding)
    assert (
        float(a @ b) > 0.8
    )  # near-duplicates embed close together (the fake embedder is n-gram based)
    one = client.embeddings.create(model="x", input="hello", encoding_format="float")
    assert len(one.data) == 1


def test_openai_errors_are_typed_4xx(client):
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="kiosk-assistant", messages=[{"role": "assistant", "content": "hi"}]
        )
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="x", input=["x" * 5000])


def test_remote_style_token_is_checked(server):
    """A non-loopback client is simulated over ASGI; loopback HTTP clients need no token."""
    import asyncio

    import httpx

    _, app = server

    async def go(token):
        t = httpx.ASGITransport(app=app, client=("192.168.1.50", 5555))
        async with httpx.AsyncClient(transport=t, base_url="http://127.0.0.1") as c:
            h = {"authorization": f"Bearer {token}"} if token else {}
            return (await c.get("/v1/models", headers=h)).status_code

    assert asyncio.run(go(None)) == 401
    assert asyncio.run(go("wrong")) == 401
    assert asyncio.run(go("tablet-token")) == 200

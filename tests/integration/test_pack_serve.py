"""`kiosk serve`'s pack wiring on a real uvicorn server on loopback.

The service is assembled the way `kiosk serve` does it (``from_app_state`` around a built
answer Service, plus ``start_pack_serving``), on the fake embedder: a pack dropped into the
configured USB folder is installed by the background sync, the next /v1/kiosk/ask answers
from it, and GET /v1/admin/packs shows the result. A pack signed by the trusted key whose
binding claims the kiosk's model but whose vectors come from another model is refused by
the server's smoke-vector check, and the kiosk keeps answering from the installed pack.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
from server_helpers import FakeEmbedder, make_config, make_pipeline, running_server

from runtime.answer.service import Service
from runtime.packs.install import read_pointer
from runtime.packs.sample import PackKit
from runtime.packs.serving import start_pack_serving
from runtime.server.app import AppState
from runtime.server.service_app import from_app_state, uvicorn_options

PIN = {"x-admin-pin": "2468"}


def _drop(kit_path, usb):
    """Copy a pack onto the 'stick' the way a file manager does: temp name, then rename."""
    tmp = usb / ".incoming.tmp"
    tmp.write_bytes(kit_path.read_bytes())
    os.replace(tmp, usb / kit_path.name)


def _wait_for(client, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get("/v1/admin/packs", headers=PIN).json()
        if predicate(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"timed out; last admin status: {status}")


def _ask(client, question):
    r = client.post("/v1/kiosk/ask", json={"question": question})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def served(tmp_path):
    pipeline = make_pipeline(tmp_path)  # starts on a small non-pack store, like the demo one
    kiosk_emb = pipeline.embedder
    assert isinstance(kiosk_emb, FakeEmbedder)
    kit = PackKit(tmp_path / "pub", kiosk_emb)
    usb = tmp_path / "usb"
    usb.mkdir()
    cfg = make_config(tmp_path, admin_pin="2468")
    cfg.packs.trusted_keys = [kit.public_key]
    cfg.packs.usb_mount = usb
    cfg.packs.usb_poll_s = 0.1
    cfg.packs.sync_interval_s = 0
    cfg.kiosk.languages = ["en", "zh"]
    svc = Service(pipeline, knowledge="demo knowledge (test store)", generator="none")
    svc.packs = start_pack_serving(cfg, svc)
    assert svc.packs is not None and svc.packs.sync is not None
    state = AppState()
    state.service = svc
    state.ready.set()
    app = from_app_state(state, cfg)
    try:
        with running_server(app, **uvicorn_options(cfg)) as url:
            with httpx.Client(base_url=url, timeout=30) as client:
                yield client, kit, usb, svc, cfg
    finally:
        svc.close()


def test_usb_pack_installed_in_background_then_answered_and_reported(served):
    client, kit, usb, svc, cfg = served
    question = "payment3 counter 3 rule 1"
    before = _ask(client, question)
    assert all(s["pack_id"] != "demo" for s in before["sources"])

    _drop(kit.make(1, n_docs=8, chunks_per_doc=3), usb)
    status = _wait_for(
        client,
        lambda s: (s.get("sync", {}).get("last_result") or {}).get("outcome") == "installed",
    )
    result = status["sync"]["last_result"]
    assert (result["pack_id"], result["version"], result["smoke_passed"]) == ("demo", 1, 4)
    assert result["source"] == "usb" and status["sync"]["background"] is True
    assert status["current"]["pack_id"] == "demo" and status["current"]["version"] == 1
    assert status["sync"]["active"]["version"] == 1

    after = _ask(client, question)
    cited = {(s["source_path"], s["pack_id"], s["pack_version"]) for s in after["sources"]}
    assert ("docs/payment-00003.md", "demo", 1) in cited, after


def test_server_refuses_a_signed_pack_with_another_models_vectors(served):
    client, kit, usb, svc, cfg = served
    _drop(kit.make(1, n_docs=8, chunks_per_doc=3), usb)
    _wait_for(client, lambda s: (s.get("current") or {}).get("version") == 1)
    pointer = (svc.packs.packs_dir / "ACTIVE").read_bytes()

    # Same trusted key, same declared binding (the kiosk's model), other model's vectors.
    other = PackKit(kit.work / "other", FakeEmbedder(kiosk_dim(svc), ngrams=(2, 4)), key=kit.key)
    bad = other.make(2, binding=kit.binding, name="demo-v2.kpack")
    _drop(bad, usb)
    status = _wait_for(
        client,
        lambda s: (s.get("sync", {}).get("last_result") or {}).get("outcome") == "failed",
    )
    last = status["sync"]["last_result"]
    assert last["error_type"] == "PackCompatibilityError", last
    assert "not made by this kiosk's embedder" in last["error"]
    assert status["current"]["version"] == 1
    assert (svc.packs.packs_dir / "ACTIVE").read_bytes() == pointer
    assert read_pointer(svc.packs.packs_dir)["current"]["version"] == 1
    answer = _ask(client, "payment3 counter 3 rule 1")
    assert ("docs/payment-00003.md", 1) in {
        (s["source_path"], s["pack_version"]) for s in answer["sources"]
    }


def kiosk_dim(svc) -> int:
    return svc.pipeline.embedder.dim

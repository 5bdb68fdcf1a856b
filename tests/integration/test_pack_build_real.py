"""`kiosk pack build` with the real default embedder, then install and answer in zh and en.

Builds a pack from four demo documents (two per language) with the prepared
use-multilingual-v3 through the real CLI, installs it through the CLI, checks it again with
an installer holding the live embedder (the smoke-vector cosine check, on a real model),
and answers a Chinese and an English question from the installed store with the real model.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_prepared

from runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "kiosk_config" / "demo" / "docs"
DOCS = [
    "en/opening-hours.md",
    "en/fees-and-payment.md",
    "zh/opening-hours.md",
    "zh/fees-and-payment.md",
]
SMOKE = """\
- question: "What time does the hall open on Saturday?"
  source: en/opening-hours.md
  language: en
- question: "周六几点开门？"
  source: zh/opening-hours.md
  language: zh
- question: "Which payment methods are accepted?"
  source: en/fees-and-payment.md
  language: en
- question: "可以用什么方式缴费？"
  source: zh/fees-and-payment.md
  language: zh
"""


@pytest.fixture(scope="module")
def hall(tmp_path_factory, model_cache):
    """A key, a kiosk config (real model cache) and hall-v1.kpack built by `kiosk pack build`."""
    require_prepared(model_cache, "use-multilingual-v3", "onnx-int8")
    tmp = tmp_path_factory.mktemp("hall")
    src = tmp / "hall"
    for rel in DOCS:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEMO / rel, src / rel)
    (src / "smoke.yaml").write_text(SMOKE, encoding="utf-8")
    key = tmp / "keys" / "hall.key"
    assert main(["pack", "keygen", str(key)]) == 0
    pub = (tmp / "keys" / "hall.key.pub").read_text().strip()
    conf = tmp / "kiosk.toml"
    conf.write_text(
        f'[paths]\ndata_dir = "{tmp / "data"}"\nmodel_cache = "{model_cache}"\n'
        f'[kiosk]\nlanguages = ["zh", "en"]\n[packs]\ntrusted_keys = ["{pub}"]\n'
    )
    out = tmp / "hall-v1.kpack"
    args = ["--config", str(conf), "pack", "build", str(src), "--key", str(key)]
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        assert main([*args, "--pack-id", "hall", "--version", "1", "--out", str(out)]) == 0
    return {"conf": conf, "pack": out, "pub": pub, "tmp": tmp, "built": buf.getvalue()}


@pytest.mark.real_models
def test_build_with_the_real_embedder_install_and_answer_zh_en(hall, capsys):
    from kiosk_config import load_config
    from runtime.inference.loader import load_embedder
    from runtime.packs.active import ActiveKnowledge
    from runtime.packs.binding import binding_for_config
    from runtime.packs.install import (
        PackInstaller,
        packs_dir_for,
        read_pointer,
        settings_from_config,
    )
    from runtime.packs.serving import kiosk_binding

    conf, out, tmp = hall["conf"], hall["pack"], hall["tmp"]
    assert "4 documents" in hall["built"] and "4 smoke questions" in hall["built"], hall
    cfg = load_config(str(conf))
    embedder = load_embedder(cfg)
    assert embedder.model_id == "use-multilingual-v3"
    # the kiosk's binding (from the live embedder) equals the configured model's manifest
    assert kiosk_binding(cfg, embedder) == binding_for_config(cfg)

    # verify with the live real embedder: smoke questions re-embedded, cosine >= 0.98
    settings = settings_from_config(cfg, kiosk_binding(cfg, embedder))
    settings.embedder = embedder
    vp = PackInstaller(tmp / "check", settings).verify_file(out)
    assert vp.manifest.embedding.model_id == "use-multilingual-v3"
    capsys.readouterr()
    assert main(["--config", str(conf), "pack", "install", str(out)]) == 0
    assert "installed hall v1" in capsys.readouterr().out

    packs = packs_dir_for(cfg)
    assert read_pointer(packs)["current"]["smoke_passed"] == 4
    active = ActiveKnowledge(packs)
    try:
        with active.acquire() as store:
            for question, expected in (
                ("周六上午营业到几点？", "zh/opening-hours.md"),
                ("Until what time is the hall open on Saturday morning?", "en/opening-hours.md"),
                ("缴费可以用现金吗？", "zh/fees-and-payment.md"),
            ):
                hits = store.search(question, embedder.embed(question), k=3)
                assert hits, question
                top = hits[0].citation
                assert top.source_path == expected, (question, [h.citation for h in hits])
                assert (top.pack_id, top.pack_version) == ("hall", 1)
    finally:
        active.close()


@pytest.mark.real_models
def test_kiosk_serve_installs_a_usb_pack_in_the_background(hall, tmp_path):
    """The real `kiosk serve` process: starts on the demo knowledge, a pack appears on the
    configured USB folder, the background sync installs it (live-embedder check included)
    and the next /v1/kiosk/ask cites it; GET /v1/admin/packs reports the install."""
    import httpx

    usb = tmp_path / "stick"
    usb.mkdir()
    conf = tmp_path / "kiosk.toml"
    conf.write_text(
        hall["conf"].read_text().replace(str(hall["tmp"] / "data"), str(tmp_path / "data"))
        + f'usb_mount = "{usb}"\nusb_poll_s = 0.2\nsync_interval_s = 0\n'
        + '[server]\nadmin_pin = "2468"\n'
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    # scripts/test.sh exports KIOSK_DATA_DIR for the whole run, and the environment wins over
    # the config file: without this the server would start on the fixture's installed pack.
    env["KIOSK_DATA_DIR"] = str(tmp_path / "data")
    cmd = [sys.executable, "-m", "runtime.cli", "--config", str(conf)]
    proc = subprocess.Popen(
        [*cmd, "serve", "--port", "0", "--no-generator"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert "kiosk serving on" in line, line
        url = line.split()[-1].rstrip("/")
        with httpx.Client(base_url=url, timeout=60) as c:
            deadline = time.monotonic() + 120
            while True:  # the socket is bound before uvicorn listens; then models load
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.ConnectError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "server not ready"
                time.sleep(0.3)
            question = "周六上午营业到几点？"
            q = {"question": question}
            first = c.post("/v1/kiosk/ask", json=q).json()
            assert all(s["pack_id"] != "hall" for s in first["sources"]), first

            tmp_copy = usb / ".copying"
            tmp_copy.write_bytes(hall["pack"].read_bytes())
            os.replace(tmp_copy, usb / "hall-v1.kpack")
            pin = {"x-admin-pin": "2468"}
            while True:
                status = c.get("/v1/admin/packs", headers=pin).json()
                last = (status.get("sync") or {}).get("last_result") or {}
                if last.get("outcome") in ("installed", "failed"):
                    break
                assert time.monotonic() < deadline, status
                time.sleep(0.3)
            assert last["outcome"] == "installed" and last["version"] == 1, last
            assert status["current"]["pack_id"] == "hall"
            answer = c.post("/v1/kiosk/ask", json=q).json()
            cited = {(s["source_path"], s["pack_id"]) for s in answer["sources"]}
            assert ("zh/opening-hours.md", "hall") in cited, answer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

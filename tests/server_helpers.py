"""Helpers for the HTTP service tests: a real answer pipeline on fake models, and a real
uvicorn server on a free loopback port running in a thread.

Import as ``from server_helpers import ...`` (tests/ is on sys.path, like ``fakes``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fakes import FakeEmbedder, FakeGenerator, build_answer_store

DEMO_FAQ = Path(__file__).resolve().parent.parent / "kiosk_config" / "demo" / "faq.csv"


def make_pipeline(tmp_path: Path, *, generator=None, **settings):
    """The real AnswerPipeline over a small real SQLite store, with the fake embedder."""
    from runtime.answer.pipeline import AnswerPipeline, PipelineSettings
    from runtime.answer.static_faq import StaticFaq

    emb = FakeEmbedder()
    store = build_answer_store(tmp_path / "kb.sqlite", emb)
    return AnswerPipeline(
        store,
        emb,
        generator,
        settings=PipelineSettings(**settings),
        static_faq=StaticFaq.from_csv(DEMO_FAQ),
    )


def make_config(tmp_path: Path, **server):
    """A KioskConfig with its data (and audit log) under tmp_path and server overrides."""
    from kiosk_config.schema import KioskConfig

    cfg = KioskConfig()
    cfg.paths.data_dir = tmp_path / "data"
    for k, v in server.items():
        setattr(cfg.server, k, v)
    return cfg


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", **uvicorn_kw) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of ``host``; yields the base URL."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", **uvicorn_kw)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


__all__ = ["FakeEmbedder", "FakeGenerator", "make_pipeline", "running_server", "make_config"]

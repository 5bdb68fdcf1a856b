"""A minimal Starlette app around the answer pipeline.

- ``GET /healthz``: 503 while the pipeline is loading, then 200 with model placements,
  the active knowledge and breaker states.
- ``POST /v1/kiosk/ask`` ``{"question": "...", "history": [{"role", "content"}]}``
  → the answer as JSON.
- ``GET /``: one plain HTML page with a form; all assets inline; answers are put into the page
  with ``textContent``, never as HTML, so nothing from a document or the model can become markup.

Bodies are capped (``[server] max_body_bytes``) and validated before use; the pipeline is
synchronous, so requests run in Starlette's thread pool. A later issue adds the
OpenAI-compatible endpoints, SSE, admission control and Host/Origin checks.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from runtime.answer.types import Turn

log = logging.getLogger(__name__)

MAX_HISTORY = 20
MAX_TURN_CHARS = 2000


class AppState:
    """Holds the service once it is built (loading happens in a background thread)."""

    def __init__(self) -> None:
        self.service = None
        self.error: str | None = None
        self.ready = threading.Event()

    def load(self, build: Callable[[], object]) -> None:
        try:
            self.service = build()
            freeze_startup_objects()
        except Exception as exc:  # noqa: BLE001 - reported by /healthz
            log.exception("loading the answer service failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()


def freeze_startup_objects() -> None:
    """Move everything loaded at start (models' Python side, tokenizer and jieba tables,
    libraries) out of the cyclic garbage collector's sight.

    Those objects live until the process ends, yet every full collection walked all of them:
    tens of milliseconds with the event loop stopped, which is what a visitor's p99 saw
    under a crowd. ``gc.freeze`` keeps them out of later collections.
    """
    import gc

    gc.collect()
    gc.freeze()


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _parse_history(raw) -> list[Turn] | None:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_HISTORY:
        return None
    turns = []
    for t in raw:
        if (
            not isinstance(t, dict)
            or t.get("role") not in ("user", "assistant")
            or not isinstance(t.get("content"), str)
        ):
            return None
        turns.append(Turn(t["role"], t["content"][:MAX_TURN_CHARS]))
    return turns


def create_app(state: AppState, *, max_body_bytes: int = 256 * 1024, cfg=None) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        if not state.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        if state.service is None:
            return JSONResponse({"status": "error", "error": state.error}, status_code=503)
        svc = state.service
        return JSONResponse(
            {
                "status": "ok",
                "knowledge": svc.knowledge,
                "generator": svc.generator,
                "placements": svc.placements,
                "pipeline": svc.pipeline.health(),
            }
        )

    async def ask(request: Request) -> JSONResponse:
        if state.service is None:
            return _bad("the kiosk is still loading; try again in a moment", 503)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return _bad(f"request body over {max_body_bytes} bytes", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return _bad(f"request body over {max_body_bytes} bytes", 413)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _bad('body must be JSON: {"question": "..."}')
        if not isinstance(data, dict) or not isinstance(data.get("question"), str):
            return _bad('body must be a JSON object with a string "question"')
        history = _parse_history(data.get("history"))
        if history is None:
            return _bad(
                f'"history" must be a list of at most {MAX_HISTORY} {{role, content}} turns'
            )
        answer = await run_in_threadpool(state.service.pipeline.answer, data["question"], history)
        return JSONResponse(answer.to_dict())

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/v1/kiosk/ask", ask, methods=["POST"]),
    ]
    if cfg is not None:  # `kiosk serve`: security, admission, APIs, metrics, audit (docs/server.md)
        from .service_app import from_app_state

        return from_app_state(state, cfg, base_routes=routes)
    return Starlette(routes=routes)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kiosk assistant</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;
font-size:1.2rem}
input{width:75%;font-size:1.2rem;padding:.4rem}button{font-size:1.2rem;padding:.4rem 1rem}
#answer{white-space:pre-wrap;margin-top:1.5rem}.src{color:#444;font-size:1rem;white-space:pre-wrap;
border-left:4px solid #aaa;padding-left:.6rem;margin:.6rem 0}.meta{color:#777;font-size:.9rem}
</style></head><body>
<h1>Ask a question / 请提问</h1>
<form id="f"><input id="q" maxlength="500" autocomplete="off" autofocus
placeholder="e.g. 周六几点开门？">
<button>Ask</button></form>
<div id="answer"></div><div id="sources"></div><div class="meta" id="meta"></div>
<script>
const history = [];
document.getElementById('f').addEventListener('submit', async (e) => {
  e.preventDefault();
  const q = document.getElementById('q').value;
  const out = document.getElementById('answer'), src = document.getElementById('sources'),
        meta = document.getElementById('meta');
  out.textContent = '…'; src.textContent = ''; meta.textContent = '';
  try {
    const r = await fetch('/v1/kiosk/ask', {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({question: q, history: history.slice(-6)})});
    const a = await r.json();
    if (!r.ok) {
      out.textContent = (a.error && (a.error.message || a.error)) || ('error ' + r.status);
      return;
    }
    out.textContent = a.text;
    for (const s of a.sources) {
      const d = document.createElement('div'); d.className = 'src';
      d.textContent = '[' + s.number + '] ' + s.document
        + (s.section ? ' > ' + s.section : '') + '\\n' + s.quote;
      src.appendChild(d);
    }
    meta.textContent = a.path + ' · ' + Math.round(a.timings_ms.total) + ' ms · ' + a.trace_id;
    history.push({role: 'user', content: q}, {role: 'assistant', content: a.text});
  } catch (err) { out.textContent = String(err); }
});
</script></body></html>
"""

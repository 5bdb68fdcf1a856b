"""OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

So any OpenAI client (the official Python one, LangChain, a tablet app) can ask the
kiosk. Answers are the kiosk's grounded answers, not free generation: the last
user message is the question, earlier user/assistant messages are the history,
system messages are ignored (the kiosk's own prompt rules). Each response carries
the cited passages in an extra ``sources`` field and ``kiosk`` (path, degraded,
trace id), which OpenAI clients keep as extra attributes.

Streaming sends only text that passed the pipeline's citation/claim check: OpenAI
deltas cannot be retracted, so the checked answer is streamed in pieces as soon as
it is final (the kiosk's own ``/v1/kiosk/ask/stream`` shows unchecked partials and
replaces them). Every stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.errors import KioskError

from .common import (
    SSE_HEADERS,
    FastJSONResponse,
    busy_response,
    error_response,
    read_json,
    reject,
    source_dict,
    sse,
    sse_response,
)
from .turns import TurnRunner

CHAT_MODEL = "kiosk-assistant"
MAX_MESSAGES = 50
MAX_MESSAGE_CHARS = 4000
MAX_EMBED_INPUTS = 64
MAX_EMBED_CHARS = 2000
_ROLES = ("system", "developer", "user", "assistant")


class EmbedderLike(Protocol):
    """What /v1/embeddings calls (runtime.inference.base.Embedder)."""

    model_id: str
    dim: int

    def embed_batch(self, texts: Sequence[str]) -> Any: ...


def _content_text(content: Any, i: int) -> str:
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):  # [{"type": "text", "text": "..."}]
        parts = []
        for part in content[:32]:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise reject(f"messages[{i}].content: only text parts are supported", None, 422)
            parts.append(part["text"])
        text = "".join(parts)
    elif content is None:
        text = ""
    else:
        raise reject(f"messages[{i}].content must be a string or a list of text parts", None, 422)
    if len(text) > MAX_MESSAGE_CHARS:
        raise reject(
            f"messages[{i}].content is longer than {MAX_MESSAGE_CHARS} characters", None, 422
        )
    return text


def parse_messages(raw: Any) -> tuple[str, list[Any]]:
    """(question, history) from OpenAI ``messages``; 422 on anything malformed."""
    from runtime.answer.types import Turn

    if not isinstance(raw, list) or not raw:
        raise reject(
            '"messages" must be a non-empty list', 'send [{"role": "user", "content": "..."}]', 422
        )
    if len(raw) > MAX_MESSAGES:
        raise reject(
            f'"messages" has more than {MAX_MESSAGES} entries', "send only the recent turns", 422
        )
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise reject(
                f"messages[{i}] must be an object with role one of {', '.join(_ROLES)}", None, 422
            )
        turns.append((m["role"], _content_text(m.get("content"), i)))
    convo = [(r, c) for r, c in turns if r in ("user", "assistant")]
    if not convo or convo[-1][0] != "user":
        raise reject("the last message must come from the user", None, 422)
    history = [Turn(r, c) for r, c in convo[:-1]]
    return convo[-1][1], history


def _sources(answer: Any) -> list[dict]:
    return [source_dict(s) for s in getattr(answer, "sources", [])]


def _kiosk(answer: Any, degraded: bool) -> dict:
    return {
        "path": answer.path,
        "degraded": degraded,
        "trace_id": answer.trace_id,
        "language": answer.language,
        "experiment_id": getattr(answer, "experiment_id", ""),
        "timings_ms": dict(answer.timings_ms),
    }


def _usage(question: str, text: str) -> dict:
    # Characters, not tokens: the kiosk does not bill; clients only need the field to exist.
    p, c = len(question), len(text)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


_PIECE = re.compile(r".{1,24}(?:\s|$)|.{1,24}", re.S)


def _pieces(text: str) -> list[str]:
    return [m.group(0) for m in _PIECE.finditer(text)] or [""]


class OpenAIRoutes:
    def __init__(
        self, turns: TurnRunner, *, get_embedder=lambda: None, max_body_bytes: int = 256 * 1024
    ) -> None:
        self.turns = turns
        self.get_embedder = get_embedder
        self.max_body_bytes = max_body_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ]

    async def chat(self, request: Request):
        """Answer the last user message (stream=true: server-sent events ending in [DONE])."""
        try:
            self.turns.check_rate(request.client, request.headers)
            data = await read_json(request, self.max_body_bytes)
            question, history = parse_messages(data.get("messages"))
            stream = data.get("stream", False)
            if not isinstance(stream, bool):
                raise reject('"stream" must be true or false', None, 422)
            model = data.get("model", CHAT_MODEL)
            if not isinstance(model, str) or len(model) > 200:
                raise reject('"model" must be a string', None, 422)
            self.turns.pipeline()
        except KioskError as exc:
            self.turns.metrics.rejected.labels(reason=type(exc).__name__).inc()
            return error_response(exc)
        deadline = self.turns.deadline(request.headers)
        client = "loopback" if _loopback(request) else "remote"
        cid = "chatcmpl-" + os.urandom(12).hex()
        created = int(time.time())
        if not stream:
            res = await self.turns.answer(
                question, history, deadline, channel="openai", client=client
            )
            a = res.answer
            return FastJSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": a.text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": _usage(question, a.text),
                    "sources": _sources(a),
                    "kiosk": _kiosk(a, res.degraded),
                }
            )

        def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
            return sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    **extra,
                }
            )

        hit = self.turns.fast(question, history, channel="openai", client=client)
        if hit is not None:  # complete already: the same chunks in one plain response
            parts = [chunk({"role": "assistant", "content": ""})]
            parts += [chunk({"content": piece}) for piece in _pieces(hit.text)]
            parts += [
                chunk({}, "stop", sources=_sources(hit), kiosk=_kiosk(hit, False)),
                b"data: [DONE]\n\n",
            ]
            return Response(
                b"".join(parts),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )

        async def events():
            metrics = self.turns.metrics
            metrics.sse_sessions.inc()
            try:
                yield chunk({"role": "assistant", "content": ""})
                async for kind, item, degraded in self.turns.stream(
                    question, history, deadline, channel="openai", client=client
                ):
                    if kind != "done":
                        # unchecked partials are not sent to OpenAI clients (see module docstring)
                        continue
                    for piece in _pieces(item.text):
                        yield chunk({"content": piece})
                    yield chunk({}, "stop", sources=_sources(item), kiosk=_kiosk(item, degraded))
                yield b"data: [DONE]\n\n"
            finally:
                metrics.sse_sessions.dec()

        return sse_response(events())

    async def embeddings(self, request: Request):
        """Embed ``input`` (a string or a list of strings) with the kiosk's embedding model."""
        try:
            self.turns.check_rate(request.client, request.headers)
            data = await read_json(request, self.max_body_bytes)
            raw = data.get("input")
            texts = [raw] if isinstance(raw, str) else raw
            if (
                not isinstance(texts, list)
                or not texts
                or not all(isinstance(t, str) for t in texts)
            ):
                raise reject('"input" must be a string or a non-empty list of strings', None, 422)
            if len(texts) > MAX_EMBED_INPUTS:
                raise reject(
                    f'"input" has more than {MAX_EMBED_INPUTS} texts', "send smaller batches", 422
                )
            if any(len(t) > MAX_EMBED_CHARS for t in texts):
                raise reject(
                    f"an input is longer than {MAX_EMBED_CHARS} characters", "split the text", 422
                )
            fmt = data.get("encoding_format", "float")
            if fmt not in ("float", "base64"):
                raise reject('"encoding_format" must be "float" or "base64"', None, 422)
            self.turns.pipeline()
            embedder = self.get_embedder()
            if embedder is None:
                raise reject("no embedding model is loaded", "check `kiosk doctor`", 503)
        except KioskError as exc:
            self.turns.metrics.rejected.labels(reason=type(exc).__name__).inc()
            return error_response(exc)
        import numpy as np

        from .admission import DeadlineMissed

        deadline = self.turns.deadline(request.headers)
        adm = self.turns.admission
        reason = adm.decide(deadline)
        if reason is not None:
            self.turns.metrics.shed.labels(reason=reason).inc()
            return busy_response("the kiosk is busy")
        try:
            vectors = await adm.run(deadline, embedder.embed_batch, list(texts))
        except DeadlineMissed:
            self.turns.metrics.shed.labels(reason="late").inc()
            return busy_response("embedding did not finish in time")
        vectors = np.asarray(vectors, dtype=np.float32)
        out = []
        for i, v in enumerate(vectors):
            emb: Any = (
                base64.b64encode(v.astype("<f4").tobytes()).decode()
                if fmt == "base64"
                else v.tolist()
            )
            out.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(len(t) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": out,
                "model": getattr(embedder, "model_id", "embedder"),
                "usage": {"prompt_tokens": n, "total_tokens": n},
            }
        )

    async def models(self, request: Request):
        """The chat model (the kiosk's answer pipeline) and the embedding model."""
        created = 0
        data = [{"id": CHAT_MODEL, "object": "model", "created": created, "owned_by": "kiosk"}]
        embedder = self.get_embedder()
        if embedder is not None:
            data.append(
                {
                    "id": getattr(embedder, "model_id", "embedder"),
                    "object": "model",
                    "created": created,
                    "owned_by": "kiosk",
                }
            )
        return JSONResponse({"object": "list", "data": data})


def _loopback(request: Request) -> bool:
    from .security import is_loopback

    return is_loopback(request.client)

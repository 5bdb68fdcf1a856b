"""A raw ASGI lane for the commonest request: a kiosk question the cache or an FAQ answers.

Most of a cache/FAQ answer's cost was not the answer but the framework around it:
Starlette's exception middleware, routing, the ``Request`` and ``Response`` objects and three
layers of wrapped ``send``. :class:`KioskFastLane` sits just inside the security middleware
(every check has already run) and handles ``POST /v1/kiosk/ask`` itself when, and only when,
it can answer from the fast path: a plain JSON body, no history, and a cache or FAQ hit. It
sends the very bytes the routed endpoint would (same events, same headers).

Anything else — a miss, a history, a malformed or unusual body, a loading kiosk — goes on to
the routed endpoint unchanged, with the body it already read handed over as if unread, so
errors, degraded answers and streaming keep one implementation (:mod:`.kiosk_api`).
"""

from __future__ import annotations

from runtime.errors import KioskError

from .common import SSE_HEADERS, dumps, parse_json_object, sse
from .kiosk_api import MAX_QUESTION_CHARS, RATE_CHECKED, answer_json
from .security import HEADERS_KEY, is_loopback

PATH = "/v1/kiosk/ask"
_SSE_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()] + [
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class KioskFastLane:
    """Pure ASGI middleware; ``kiosk`` is the :class:`~.kiosk_api.KioskRoutes` it shortcuts."""

    def __init__(self, app, kiosk) -> None:
        self.app = app
        self.kiosk = kiosk

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # Read the body (the security middleware in front caps its size and time).
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # client gone: let the route see it
                await self.app(scope, _replay(b"".join(chunks), receive, message), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if not await self._answer(scope, body, send):
            await self.app(scope, _replay(body, receive), send)

    async def _answer(self, scope, body: bytes, send) -> bool:
        """Send the answer and return True, or return False to leave the request to the route."""
        k = self.kiosk
        turns = k.turns
        headers = scope.get(HEADERS_KEY)
        if headers is None:
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in scope.get("headers", ())
            }
        ctype = headers.get("content-type", "")
        if ctype and "json" not in ctype.lower():
            return False
        try:
            data = parse_json_object(body)
        except KioskError:
            return False
        question = data.get("question")
        sid = data.get("session")
        stream = data.get("stream", False)
        if (
            not isinstance(question, str)
            or len(question) > MAX_QUESTION_CHARS
            or data.get("history") not in (None, [])
            or not (sid is None or (isinstance(sid, str) and len(sid) <= 64))
            or not isinstance(stream, bool)
        ):
            return False
        if sid and k.sessions.get(sid):
            return False  # a follow-up in a session: never a fast-path answer
        client = scope.get("client")
        try:
            turns.check_rate(client, headers)
        except KioskError as exc:
            await k._fail(exc)(scope, _replay(b"", None), send)
            return True
        scope[RATE_CHECKED] = True
        try:
            turns.pipeline()
        except KioskError:
            return False
        where = "loopback" if is_loopback(client) else "remote"
        hit = turns.fast(question, [], channel="kiosk", client=where)
        if hit is None:
            return False
        if sid:
            from runtime.answer.types import Turn

            k.sessions.append(sid, Turn("user", question), Turn("assistant", hit.text))
        if stream or "text/event-stream" in headers.get("accept", ""):
            out = sse({"path": hit.path, "degraded": False}, "path") + sse(
                answer_json(hit, False), "done"
            )
            extra = _SSE_HEADERS
        else:
            out = dumps(answer_json(hit, False))
            extra = _JSON_HEADERS
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(out)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": out})
        return True


def _replay(body: bytes, receive, first: dict | None = None):
    """A ``receive`` that gives the already-read body once, then the real one's messages."""
    pending = [first or {"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        if pending:
            return pending.pop()
        if receive is None:
            return {"type": "http.disconnect"}
        return await receive()

    return replayed

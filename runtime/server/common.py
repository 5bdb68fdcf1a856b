"""Small helpers shared by the API modules: bounded JSON bodies, typed errors → HTTP responses,
SSE framing."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from runtime.errors import KioskError, RateLimitedError, RequestRejectedError

from .security import error_payload

MAX_JSON_DEPTH = 32


def reject(message: str, hint: str | None = None, status: int = 400) -> RequestRejectedError:
    err = RequestRejectedError(message, hint=hint)
    err.status = status
    return err


def _depth_ok(obj: Any, depth: int = 0) -> bool:
    if depth > MAX_JSON_DEPTH:
        return False
    if isinstance(obj, dict):
        return all(_depth_ok(v, depth + 1) for v in obj.values())
    if isinstance(obj, list):
        return all(_depth_ok(v, depth + 1) for v in obj)
    return True


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or a 4xx :class:`RequestRejectedError` saying what is wrong.

    The security middleware already caps the bytes received; this re-checks so the
    helper is safe on its own, and refuses non-objects, NaN and absurd nesting.
    """
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise reject(
            f"Content-Type {ctype[:60]!r} is not JSON", "send Content-Type: application/json", 415
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise reject(f"request body over {max_bytes} bytes", "send a shorter request", 413)
    return parse_json_object(bytes(body))


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object: no NaN/Infinity, at most 32 levels deep, else a 400."""
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise reject(f"body is not valid JSON: {str(exc)[:120]}", "send a JSON object") from None
    if not isinstance(data, dict):
        raise reject("body must be a JSON object", "send {...}")
    if not _depth_ok(data):
        raise reject(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _status_for(exc: KioskError) -> int:
    """Errors about what the client sent are 4xx; anything else is the kiosk's fault (500)."""
    from runtime.errors import AudioError, PackError, PackInstallError

    if isinstance(exc, RequestRejectedError):
        return 400
    if isinstance(exc, PackInstallError):
        return 409  # the pack was fine but could not be switched to (another install, failed check)
    if isinstance(exc, (PackError, AudioError)):
        return 422  # the uploaded pack or audio is malformed, unsigned, stale or incompatible
    return 500


def error_response(exc: KioskError, *, kind: str | None = None) -> JSONResponse:
    status = getattr(exc, "status", None) or _status_for(exc)
    headers = {}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="kiosk"'
    return JSONResponse(
        error_payload(exc.message, exc.hint, kind or type(exc).__name__),
        status_code=status,
        headers=headers,
    )


def busy_response(message: str = "the kiosk is busy") -> JSONResponse:
    """503 with Retry-After: work that needs a model worker could not be done in time."""
    return JSONResponse(
        {"error": {"message": message, "type": "busy", "hint": "retry shortly"}},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return obj


def source_dict(s: Any) -> dict:
    """A Source (flat dataclass of plain values) as a dict, without ``asdict``'s deep copies."""
    if hasattr(s, "__dataclass_fields__"):
        return {name: getattr(s, name) for name in s.__dataclass_fields__}
    return dict(s)


def answer_dict(answer: Any) -> dict:
    """An Answer as a JSON-ready dict: shallow copy of its fields, sources converted.

    ``dataclasses.asdict`` deep-copies every value; on the cache/FAQ fast path it was the
    largest single cost of a request.
    """
    d = {name: getattr(answer, name) for name in answer.__dataclass_fields__}
    d["sources"] = [source_dict(s) for s in d.get("sources") or ()]
    for key in ("timings_ms",):
        if key in d:
            d[key] = dict(d[key])
    for key in ("notes",):
        if key in d:
            d[key] = list(d[key])
    return d


def _load_orjson():
    try:
        import orjson

        return orjson.dumps
    except ImportError:  # optional (the `server` speed-up); the standard library does the same
        return None


_orjson_dumps = _load_orjson()


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON of a response body.

    orjson when installed (an order of magnitude cheaper: JSON encoding was a tenth of a
    cache answer's cost), else the standard library. Text the strict encoder refuses (a lone
    surrogate a client sent) is written with ``\\u`` escapes instead of failing the request.
    """
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(data)
        except TypeError:
            pass
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode()


class FastJSONResponse(JSONResponse):
    """A JSONResponse encoded with :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


# Headers of every server-sent-event response: no caching, and no buffering in a reverse
# proxy (nginx would otherwise hold partial answers back until the stream ends).
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def sse_response(events) -> StreamingResponse:
    """A server-sent-event stream of ``events`` (an async iterator of :func:`sse` frames)."""
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded (one line, so no framing injection)."""
    if isinstance(data, str):
        payload = data.encode("utf-8", "backslashreplace")
    else:
        payload = dumps(data)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"


def str_field(
    data: dict, name: str, *, max_chars: int, required: bool = True, default: str = ""
) -> str:
    value = data.get(name, None)
    if value is None:
        if required:
            raise reject(f'"{name}" is required', f'send a string "{name}"', 422)
        return default
    if not isinstance(value, str):
        raise reject(f'"{name}" must be a string, not {type(value).__name__}', None, 422)
    if len(value) > max_chars:
        raise reject(f'"{name}" is longer than {max_chars} characters', "send a shorter text", 422)
    return value

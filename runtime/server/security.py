"""Who may talk to the kiosk service, and how much: the checks every request passes first.

A kiosk service on a branch LAN is reachable by any web page a staff member opens
(DNS rebinding: a hostile page's name re-pointed at 127.0.0.1, as in the known
local-LLM-server CVEs) and by any device on the network. So, on *every* request
and WebSocket, before any route runs (:class:`SecurityMiddleware`):

- the ``Host`` header must name an allowed host (``[server] allowed_hosts``) with no
  port or the port the server actually listens on → else 403;
- an ``Origin`` header, when present, must be the service itself or a configured
  CORS origin → else 403 (``null`` and other sites are refused);
- a client not on loopback must present ``Authorization: Bearer <token>`` from
  ``[server] api_tokens`` (compared in constant time) → else 401;
- bodies are capped (``Content-Length`` and the bytes actually received, 413) and must
  arrive within ``body_timeout_s`` (408); headers within ``header_timeout_s``
  (:func:`guarded_http_protocol`, for uvicorn), so slowloris clients are cut off.

Admin endpoints additionally pass :class:`AdminGuard`: a PIN or token, compared in
constant time, with per-client attempt limits, a lockout (429 + Retry-After), and a
global cap so an attacker rotating addresses locks admin, not the kiosk.
CORS stays off unless ``cors_origins`` is set (:func:`cors_middleware`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from runtime.errors import RateLimitedError, RequestRejectedError

log = logging.getLogger(__name__)

Reject = Callable[[str], None]  # metrics hook: called with the reason of each refusal
HEADERS_KEY = "kiosk.headers"  # scope key: the request headers as a lower-case dict


@dataclass
class SecurityPolicy:
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"])
    api_tokens: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)
    max_body_bytes: int = 256 * 1024
    body_timeout_s: float = 10.0
    body_limits: dict[str, int] = field(default_factory=dict)  # path -> larger cap (pack upload)
    body_timeouts: dict[str, float] = field(default_factory=dict)  # path -> longer body time limit

    def limit_for(self, path: str) -> int:
        return self.body_limits.get(path, self.max_body_bytes)

    def timeout_for(self, path: str) -> float:
        return self.body_timeouts.get(path, self.body_timeout_s)

    @classmethod
    def from_config(cls, server) -> SecurityPolicy:  # server: ServerSection
        return cls(
            allowed_hosts=list(server.allowed_hosts),
            api_tokens=list(server.api_tokens),
            cors_origins=list(server.cors_origins),
            max_body_bytes=server.max_body_bytes,
            body_timeout_s=server.body_timeout_s,
        )


def is_loopback(client: tuple[str, int] | list | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback. Unix sockets (no client address) count
    as local."""
    if not client:
        return True
    return _loopback_host(str(client[0]))


@functools.lru_cache(maxsize=4096)
def _loopback_host(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def secret_matches(given: str | None, secrets: Iterable[str]) -> bool:
    """Constant-time membership: every configured secret is compared, hashes hide lengths."""
    if given is None:
        return False
    g = _digest(given)
    ok = False
    for s in secrets:
        ok |= hmac.compare_digest(g, _digest(s))
    return ok


@functools.lru_cache(maxsize=512)
def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` / ``[v6]:port`` → (lower-case host, port or None); None when malformed."""
    value = value.strip().lower()
    if not value or len(value) > 255 or any(c in value for c in "/@ \\?#"):
        return None
    try:
        parts = urlsplit("//" + value)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    if ":" in host:  # IPv6: keep the bracketed form the config uses
        host = f"[{host}]"
    return host, port


def host_allowed(value: str | None, allowed: Iterable[str], server_port: int | None) -> bool:
    if value is None:
        return False
    hp = split_host(value)
    if hp is None:
        return False
    host, port = hp
    names = {a.strip().lower() for a in allowed}
    if host not in names:
        return False
    return port is None or (server_port is not None and port == server_port)


def origin_allowed(origin: str, policy: SecurityPolicy, server_port: int | None) -> bool:
    if origin in policy.cors_origins:
        return True
    if origin == "null" or len(origin) > 512:
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return False
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return host_allowed(f"{host}:{port}", policy.allowed_hosts, server_port)


def bearer_token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


async def _send_json(
    send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_payload(message: str, hint: str | None, kind: str) -> dict:
    """The one error body shape of the service (OpenAI clients read ``error.message``)."""
    return {"error": {"message": message, "type": kind, "hint": hint}}


class SecurityMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering): cheap enough for every
    request."""

    def __init__(self, app, policy: SecurityPolicy, *, on_reject: Reject | None = None) -> None:
        self.app = app
        self.policy = policy
        self.on_reject = on_reject or (lambda reason: None)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        scope[HEADERS_KEY] = headers  # decoded once; the fast lane reads them from here
        server = scope.get("server")
        server_port = server[1] if server and len(server) > 1 else None
        problem = self._check(scope, headers, server_port)
        if problem is not None:
            status, reason, message, hint = problem
            self.on_reject(reason)
            log.info("refused %s %s: %s", scope["type"], scope.get("path", ""), reason)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
                return
            extra = [(b"www-authenticate", b'Bearer realm="kiosk"')] if status == 401 else []
            await _send_json(send, status, error_payload(message, hint, reason), extra)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._guard_body(scope, receive, send)

    def _check(self, scope, headers: dict[str, str], server_port: int | None):
        p = self.policy
        if not host_allowed(headers.get("host"), p.allowed_hosts, server_port):
            return (
                403,
                "bad_host",
                "Host header not allowed",
                "use one of [server] allowed_hosts (and the port the kiosk listens on)",
            )
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(origin, p, server_port):
            return (
                403,
                "bad_origin",
                "cross-site request refused (Origin not allowed)",
                "open the kiosk page from the kiosk itself, "
                "or add the origin to [server] cors_origins",
            )
        if not is_loopback(scope.get("client")):
            token = bearer_token(headers)
            if token is None and scope["type"] == "websocket":
                token = (
                    parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
                    or [None]
                )[0]
            if not p.api_tokens:
                return (
                    401,
                    "no_token",
                    "this kiosk serves only its own screen (no api_tokens configured)",
                    "ask the administrator to add a token to [server] api_tokens",
                )
            if token is None:
                return (
                    401,
                    "no_token",
                    "missing bearer token",
                    "send Authorization: Bearer <token>",
                )
            if not secret_matches(token, p.api_tokens):
                return (
                    401,
                    "bad_token",
                    "wrong bearer token",
                    "check the token with the administrator",
                )
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return (400, "bad_length", "Content-Length is not a number", None)
            if int(declared) > p.limit_for(scope.get("path", "")):
                return (
                    413,
                    "body_too_large",
                    f"request body over {p.limit_for(scope.get('path', ''))} bytes",
                    "send a shorter request",
                )
        return None

    async def _guard_body(self, scope, receive, send) -> None:
        p = self.policy
        path = scope.get("path", "")
        limit, timeout = p.limit_for(path), p.timeout_for(path)
        received = 0
        body_done = False
        started = False
        timed_out = False
        task = asyncio.current_task()

        def expire() -> None:  # one timer per request, not a wait_for per receive (cheaper)
            nonlocal timed_out
            if not body_done and not started and task is not None:
                timed_out = True
                task.cancel()

        has_body = any(
            (k == b"content-length" and v.strip() not in (b"", b"0")) or k == b"transfer-encoding"
            for k, v in scope.get("headers", [])
        )
        if not has_body:
            body_done = True  # nothing to wait for: handlers may take as long as they need
        timer = asyncio.get_running_loop().call_later(timeout, expire)

        async def guarded_receive():
            nonlocal received, body_done
            message = await receive()
            if body_done or message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
            if not message.get("more_body", False):
                body_done = True
                timer.cancel()
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                timer.cancel()
            await send(message)

        try:
            try:
                await self.app(scope, guarded_receive, tracked_send)
            except asyncio.CancelledError:
                if not timed_out:
                    raise
                task.uncancel()
                raise _BodyTimeout from None
            finally:
                timer.cancel()
        except _BodyTooLarge:
            self.on_reject("body_too_large")
            if not started:
                await _send_json(
                    send,
                    413,
                    error_payload(
                        f"request body over {limit} bytes",
                        "send a shorter request",
                        "body_too_large",
                    ),
                )
        except _BodyTimeout:
            self.on_reject("body_timeout")
            if not started:
                await _send_json(
                    send,
                    408,
                    error_payload(
                        f"request body not received within {timeout:g} s",
                        "send the whole body at once",
                        "body_timeout",
                    ),
                )


def cors_middleware(origins: list[str]):
    """Starlette Middleware entry for CORS, or None when no origin is configured (CORS off)."""
    if not origins:
        return None
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    return Middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "content-type", "x-deadline-ms"],
        allow_credentials=False,
    )


# --- admin ---------------------------------------------------------------------------


@dataclass
class _Attempts:
    failures: int = 0
    locked_until: float = 0.0


class AdminGuard:
    """PIN/token check for admin endpoints with attempt limits and lockout.

    Per client: ``max_attempts`` wrong secrets lock it out for ``lockout_s`` (429, Retry-After);
    during a lockout even the right secret is refused, so guessing cannot continue.
    Globally: ``global_max_failures`` wrong secrets within ``lockout_s`` lock admin for
    everyone until the window passes (address rotation). Ordinary endpoints are never
    affected. The table of clients is bounded (oldest forgotten first).
    """

    MAX_CLIENTS = 10_000

    def __init__(
        self,
        *,
        pin: str | None,
        token: str | None,
        max_attempts: int = 5,
        lockout_s: float = 300.0,
        global_max_failures: int = 50,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Reject | None = None,
    ) -> None:
        self._secrets = [s for s in (pin, token) if s]
        self.max_attempts = max_attempts
        self.lockout_s = lockout_s
        self.global_max_failures = global_max_failures
        self.clock = clock
        self.on_failure = on_failure or (lambda reason: None)
        self._clients: OrderedDict[str, _Attempts] = OrderedDict()
        self._global: deque[float] = deque()
        self._global_locked_until = 0.0

    @classmethod
    def from_config(cls, server, **kw) -> AdminGuard:
        return cls(
            pin=server.admin_pin,
            token=server.admin_token,
            max_attempts=server.admin_max_attempts,
            lockout_s=server.admin_lockout_s,
            global_max_failures=server.admin_global_max_failures,
            **kw,
        )

    @property
    def enabled(self) -> bool:
        return bool(self._secrets)

    def check(self, client: str, headers) -> None:
        """Return when ``headers`` carry the admin PIN/token; else raise (401/403/429)."""
        if not self._secrets:
            err = RequestRejectedError(
                "admin is disabled on this kiosk",
                hint="set [server] admin_pin or admin_token to enable admin endpoints",
            )
            err.status = 403
            raise err
        now = self.clock()
        if now < self._global_locked_until:
            self.on_failure("admin_locked")
            raise RateLimitedError(
                "admin is locked after too many wrong PINs",
                hint="wait and try again",
                retry_after_s=self._global_locked_until - now,
            )
        rec = self._clients.get(client)
        if rec is not None and now < rec.locked_until:
            self.on_failure("admin_locked")
            raise RateLimitedError(
                "too many wrong PINs from this client",
                hint="wait and try again",
                retry_after_s=rec.locked_until - now,
            )
        given = headers.get("x-admin-pin") or bearer_token(headers)
        if secret_matches(given, self._secrets):
            self._clients.pop(client, None)
            return
        self.on_failure("admin_bad_pin")
        if rec is None:
            rec = self._clients[client] = _Attempts()
            while len(self._clients) > self.MAX_CLIENTS:
                self._clients.popitem(last=False)
        self._clients.move_to_end(client)
        if rec.locked_until and now >= rec.locked_until:
            rec.failures, rec.locked_until = 0, 0.0
        rec.failures += 1
        self._global.append(now)
        while self._global and self._global[0] < now - self.lockout_s:
            self._global.popleft()
        if len(self._global) >= self.global_max_failures:
            self._global_locked_until = now + self.lockout_s
            self._global.clear()
            log.warning(
                "admin locked for everyone for %.0f s after %d wrong PINs",
                self.lockout_s,
                self.global_max_failures,
            )
            raise RateLimitedError(
                "admin is locked after too many wrong PINs",
                hint="wait and try again",
                retry_after_s=self.lockout_s,
            )
        if rec.failures >= self.max_attempts:
            rec.locked_until = now + self.lockout_s
            log.warning("admin locked for one client for %.0f s", self.lockout_s)
            raise RateLimitedError(
                "too many wrong PINs from this client",
                hint="wait and try again",
                retry_after_s=self.lockout_s,
            )
        err = RequestRejectedError(
            "wrong or missing admin PIN", hint="send the PIN in the X-Admin-Pin header"
        )
        err.status = 401
        raise err


# --- slow headers ----------------------------------------------------------------------


def guarded_http_protocol(header_timeout_s: float, on_timeout: Callable[[], None] | None = None):
    """A uvicorn HTTP protocol class that closes connections whose request headers do not
    arrive within ``header_timeout_s`` (uvicorn itself only times out idle keep-alives).

    Pass it as ``uvicorn.Config(app, http=guarded_http_protocol(10.0))``. Needs httptools
    (``uvicorn[standard]``); falls back to ``"auto"`` when it is missing.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                if on_timeout is not None:
                    on_timeout()
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(_CoalescingTransport(transport, self.loop))
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol


class _CoalescingTransport:
    """Sends a response's head and its first body part in one ``send`` instead of two.

    uvicorn writes the status line and headers, then the body, each straight to the socket:
    on loopback those two system calls were a quarter of a cache answer's CPU. A write that
    is exactly a response head is held until the next write (or, for a streamed response
    whose first part comes later, the next turn of the event loop) and sent with it.
    Everything else is the real transport's.
    """

    __slots__ = ("_t", "_loop", "_held", "_flush_handle")

    def __init__(self, transport, loop) -> None:
        self._t = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle = None

    def __getattr__(self, name):
        return getattr(self._t, name)

    def write(self, data) -> None:
        if self._held is not None:
            data = self._held + bytes(data)
            self._held = None
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        elif data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n":
            self._held = bytes(data)
            self._flush_handle = self._loop.call_soon(self.flush)
            return
        self._t.write(data)

    def flush(self) -> None:
        self._flush_handle = None
        held, self._held = self._held, None
        if held is not None and not self._t.is_closing():
            self._t.write(held)

    def writelines(self, parts) -> None:
        self.write(b"".join(parts))

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size() + len(self._held or b"")

    def write_eof(self) -> None:
        self.flush()
        self._t.write_eof()

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()
        self._t.close()

    def abort(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._held = None
        self._t.abort()

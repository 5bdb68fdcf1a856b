"""Security middleware and admin guard: Host/Origin (DNS rebinding), bearer tokens, body caps,
PIN lockout."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from runtime.errors import RateLimitedError, RequestRejectedError
from runtime.server.security import (
    AdminGuard,
    SecurityMiddleware,
    SecurityPolicy,
    guarded_http_protocol,
    host_allowed,
    is_loopback,
    secret_matches,
)

PORT = 8765


async def _echo(request: Request):
    body = await request.body()
    return JSONResponse({"ok": True, "bytes": len(body)})


def _app(policy: SecurityPolicy, rejected: list[str] | None = None) -> Starlette:
    from starlette.middleware import Middleware

    hook = (lambda r: rejected.append(r)) if rejected is not None else None
    return Starlette(
        routes=[Route("/echo", _echo, methods=["GET", "POST"])],
        middleware=[Middleware(SecurityMiddleware, policy=policy, on_reject=hook)],
    )


def _call(
    app,
    method: str,
    *,
    client=("127.0.0.1", 40000),
    host: str = f"127.0.0.1:{PORT}",
    headers=None,
    content: bytes | None = None,
):
    async def go():
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{PORT}") as c:
            h = {"host": host, **(headers or {})}
            return await c.request(method, "/echo", headers=h, content=content)

    return asyncio.run(go())


@pytest.fixture
def policy() -> SecurityPolicy:
    return SecurityPolicy(api_tokens=["tablet-secret-token"], max_body_bytes=2048)


def test_loopback_client_with_right_host_is_served(policy):
    r = _call(_app(policy), "GET")
    assert r.status_code == 200 and r.json()["ok"] is True
    assert _call(_app(policy), "GET", host="localhost").status_code == 200
    assert _call(_app(policy), "GET", host=f"LOCALHOST:{PORT}").status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example.com",
        f"evil.example.com:{PORT}",
        "127.0.0.1:9999",
        "attacker.127.0.0.1.nip.io",
        "127.0.0.1@evil.com",
        "",
        "localhost:abc",
    ],
)
def test_forged_host_is_refused_dns_rebinding(policy, host):
    rejected: list[str] = []
    r = _call(_app(policy, rejected), "GET", host=host)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "bad_host"
    assert rejected == ["bad_host"]


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example.com",
        "null",
        f"http://127.0.0.1:{PORT + 1}",
        "https://localhost.evil.com",
        "file://",
    ],
)
def test_cross_site_origin_is_refused(policy, origin):
    r = _call(_app(policy), "POST", headers={"origin": origin}, content=b"{}")
    assert r.status_code == 403 and r.json()["error"]["type"] == "bad_origin"


def test_same_origin_and_configured_cors_origin_pass(policy):
    assert (
        _call(
            _app(policy), "POST", headers={"origin": f"http://127.0.0.1:{PORT}"}, content=b"{}"
        ).status_code
        == 200
    )
    policy.cors_origins = ["http://branch-portal.internal"]
    assert (
        _call(_app(policy), "POST", headers={"origin": "http://branch-portal.internal"}).status_code
        == 200
    )


def test_remote_client_needs_the_right_bearer_token(policy):
    lan = ("192.168.10.23", 51000)
    missing = _call(_app(policy), "GET", client=lan)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    wrong = _call(_app(policy), "GET", client=lan, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "bad_token"
    ok = _call(
        _app(policy), "GET", client=lan, headers={"authorization": "Bearer tablet-secret-token"}
    )
    assert ok.status_code == 200


def test_remote_client_refused_when_no_tokens_configured():
    r = _call(
        _app(SecurityPolicy(api_tokens=[])),
        "GET",
        client=("10.0.0.5", 1234),
        headers={"authorization": "Bearer anything"},
    )
    assert r.status_code == 401 and "api_tokens" in r.json()["error"]["hint"]


def test_body_cap_by_content_length_and_by_bytes_received(policy):
    assert _call(_app(policy), "POST", content=b"x" * 2048).json()["bytes"] == 2048
    rejected: list[str] = []
    r = _call(_app(policy, rejected), "POST", content=b"x" * 5000)
    assert r.status_code == 413 and rejected == ["body_too_large"]

    async def chunks():  # chunked upload: no Content-Length, the cap applies to bytes received
        for _ in range(10):
            yield b"y" * 1000

    async def go():
        transport = httpx.ASGITransport(app=_app(policy), client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{PORT}") as c:
            return await c.post("/echo", content=chunks(), headers={"host": f"127.0.0.1:{PORT}"})

    assert asyncio.run(go()).status_code == 413


def test_helpers():
    assert (
        is_loopback(("127.0.0.1", 1))
        and is_loopback(("::1", 1))
        and is_loopback(("::ffff:127.0.0.1", 1))
    )
    assert not is_loopback(("192.168.1.2", 1)) and not is_loopback(("testclient", 1))
    assert host_allowed("[::1]:8765", ["[::1]"], 8765) and not host_allowed(
        "[::1]:1", ["[::1]"], 8765
    )
    assert (
        secret_matches("a", ["b", "a"])
        and not secret_matches("", ["a"])
        and not secret_matches(None, ["a"])
    )


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_admin_pin_lockout_per_client_and_after_it_expires():
    clock = _Clock()
    failures: list[str] = []
    g = AdminGuard(
        pin="4321",
        token=None,
        max_attempts=5,
        lockout_s=60,
        global_max_failures=1000,
        clock=clock,
        on_failure=failures.append,
    )
    g.check("10.0.0.1", {"x-admin-pin": "4321"})
    for _ in range(4):
        with pytest.raises(RequestRejectedError) as e:
            g.check("10.0.0.1", {"x-admin-pin": "0000"})
        assert e.value.status == 401
    with pytest.raises(RateLimitedError) as locked:
        g.check("10.0.0.1", {"x-admin-pin": "0000"})
    assert locked.value.retry_after_s == pytest.approx(60)
    with pytest.raises(RateLimitedError):  # even the right PIN is refused during lockout
        g.check("10.0.0.1", {"x-admin-pin": "4321"})
    g.check("10.0.0.2", {"x-admin-pin": "4321"})  # other clients are unaffected
    clock.t += 61
    g.check("10.0.0.1", {"x-admin-pin": "4321"})
    assert failures.count("admin_bad_pin") == 5 and failures.count("admin_locked") == 1


def test_thousand_wrong_pins_from_rotating_addresses_lock_admin_globally():
    clock = _Clock()
    g = AdminGuard(
        pin="4321",
        token="admintoken",
        max_attempts=5,
        lockout_s=300,
        global_max_failures=50,
        clock=clock,
    )
    outcomes = {"401": 0, "429": 0}
    for i in range(1000):
        try:
            g.check(f"10.1.{i // 250}.{i % 250}", {"x-admin-pin": f"{i:04d}" if i != 4321 else "0"})
        except RateLimitedError:
            outcomes["429"] += 1
        except RequestRejectedError:
            outcomes["401"] += 1
    assert outcomes["401"] == 49 and outcomes["429"] == 951
    with pytest.raises(RateLimitedError):
        g.check("10.9.9.9", {"authorization": "Bearer admintoken"})
    clock.t += 301
    g.check("10.9.9.9", {"authorization": "Bearer admintoken"})
    assert len(g._clients) <= AdminGuard.MAX_CLIENTS


def test_admin_disabled_without_pin_or_token():
    g = AdminGuard(pin=None, token=None)
    with pytest.raises(RequestRejectedError) as e:
        g.check("127.0.0.1", {"x-admin-pin": ""})
    assert e.value.status == 403


@pytest.mark.network_loopback
def test_slow_headers_are_cut_off_by_the_guarded_protocol():
    from server_helpers import running_server

    closed: list[int] = []
    proto = guarded_http_protocol(0.5, lambda: closed.append(1))
    if proto == "auto":
        pytest.skip("httptools not installed")
    with running_server(_app(SecurityPolicy()), http=proto) as url:
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        data = s.recv(
            100
        )  # b"" once the server closes; socket.timeout (a failure) if it never does
        assert data == b""
        s.close()
        ok = httpx.get(url + "/echo")  # the server still serves others
        assert ok.status_code == 200
    assert closed == [1]


def test_slow_body_is_cut_off_with_408_and_counted():
    rejected: list[str] = []
    app = _app(SecurityPolicy(body_timeout_s=0.2), rejected)
    sent: list[dict] = []

    async def receive():
        if not sent and not getattr(receive, "first", False):
            receive.first = True
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(30)  # the rest of the body never comes
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "headers": [(b"host", f"127.0.0.1:{PORT}".encode()), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5),
        "server": ("127.0.0.1", PORT),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
        "asgi": {"version": "3.0"},
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert sent[0]["status"] == 408 and rejected == ["body_timeout"]


def test_response_head_and_body_leave_in_one_write():
    from runtime.server.security import _CoalescingTransport

    class Transport:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data) -> None:
            self.writes.append(bytes(data))

        def is_closing(self) -> bool:
            return self.closed

        def get_write_buffer_size(self) -> int:
            return 0

        def close(self) -> None:
            self.closed = True

        def get_extra_info(self, name, default=None):
            return ("127.0.0.1", 1) if name == "peername" else default

    async def main():
        loop = asyncio.get_running_loop()
        raw = Transport()
        t = _CoalescingTransport(raw, loop)
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        t.write(head)
        assert raw.writes == [] and t.get_write_buffer_size() == len(head)
        t.write(b"ok")
        assert raw.writes == [head + b"ok"]  # one send for the whole response
        # A streamed response's head goes out on the next loop turn even if no body follows yet.
        t.write(head)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert raw.writes[-1] == head
        t.write(b"chunk")
        assert raw.writes[-1] == b"chunk"
        # Closing sends what is held first; other attributes are the real transport's.
        t.write(head)
        t.close()
        assert raw.writes[-1] == head and raw.closed
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)

    asyncio.run(main())

"""Admission control: bounded workers, deadlines, degraded fast answers, rate limits (429 +
Retry-After)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from server_helpers import make_config, make_pipeline

from runtime.errors import RateLimitedError
from runtime.server.admission import Admission, Deadline, DeadlineMissed, RateLimiter
from runtime.server.metrics import ServiceMetrics
from runtime.server.turns import TurnRunner


class _Clock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_burst_refill_and_retry_after():
    clock = _Clock()
    rl = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        rl.take("a")
    with pytest.raises(RateLimitedError) as e:
        rl.take("a")
    assert e.value.retry_after_s == pytest.approx(0.5)
    rl.take("b")  # other clients have their own bucket
    clock.t += 0.5
    rl.take("a")
    with pytest.raises(RateLimitedError):
        rl.take("a")


def test_rate_limiter_memory_is_bounded_and_zero_rate_is_off():
    rl = RateLimiter(rate=1.0, burst=1, max_clients=100)
    for i in range(1000):
        rl.take(f"c{i}")
    assert len(rl._buckets) == 100
    off = RateLimiter(rate=0, burst=1)
    for _ in range(100):
        off.take("x")


def test_deadline_header_may_only_shorten():
    assert Deadline.from_headers({"x-deadline-ms": "200"}, 8000).remaining_s() <= 0.2
    assert Deadline.from_headers({"x-deadline-ms": "999999"}, 1000).remaining_s() <= 1.0
    for junk in ("abc", "nan", "-5", "inf"):
        assert 0.5 < Deadline.from_headers({"x-deadline-ms": junk}, 1000).remaining_s() <= 1.0


def test_decide_sheds_on_full_queue_and_on_estimated_lateness():
    adm = Admission(workers=2, queue_limit=2, initial_turn_s=1.0)
    assert adm.decide(Deadline.after_ms(5000)) is None
    adm.in_flight = 3  # one wave ahead + its own turn: ~2 s
    assert adm.decide(Deadline.after_ms(1500)) == "deadline"
    assert adm.decide(Deadline.after_ms(5000)) is None
    adm.in_flight = 4
    assert adm.decide(Deadline.after_ms(60_000)) == "queue_full"
    adm.in_flight = 0
    adm.close()


def test_run_returns_results_and_raises_deadline_missed_without_leaking_slots():
    adm = Admission(workers=1, queue_limit=4, initial_turn_s=0.01, margin_s=0.0)
    release = threading.Event()
    started = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)

    async def main():
        assert await adm.run(Deadline.after_ms(5000), lambda x: x * 2, 21) == 42
        with pytest.raises(DeadlineMissed):
            await adm.run(Deadline.after_ms(1000), slow)
        assert started.is_set() and adm.in_flight == 1  # the late turn still holds its worker
        with pytest.raises(
            DeadlineMissed
        ):  # queued behind it, never started: cancelled, slot given back
            await adm.run(Deadline.after_ms(100), lambda: None)
        assert adm.in_flight == 1
        release.set()
        for _ in range(500):
            if adm.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert adm.in_flight == 0

    asyncio.run(main())
    assert adm.stats.late == 2
    adm.close()


class _BlockingPipeline:
    """The real pipeline, except that answers needing a worker wait until ``release`` is set."""

    def __init__(self, real) -> None:
        self._real = real
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def answer(self, question, history=()):
        self.started.release()
        self.release.wait(10)
        return self._real.answer(question, history)

    def stream(self, question, history=()):
        self.started.release()
        self.release.wait(10)
        yield from self._real.stream(question, history)


@pytest.fixture
def blocking(tmp_path):
    p = _BlockingPipeline(make_pipeline(tmp_path))
    yield p
    p.release.set()


def _runner(p, workers=1, queue_limit=0, turn_s=0.5):
    return TurnRunner(
        lambda: p,
        admission=Admission(workers=workers, queue_limit=queue_limit, initial_turn_s=turn_s),
        metrics=ServiceMetrics(),
    )


def test_faq_answers_do_not_wait_behind_busy_workers_and_overflow_is_degraded(blocking):
    runner = _runner(blocking, workers=1, queue_limit=0)

    async def main():
        busy = asyncio.create_task(
            runner.answer(
                "Is the hall closed on Monday mornings?",
                [],
                Deadline.after_ms(10_000),
                channel="test",
                client="loopback",
            )
        )
        assert await asyncio.to_thread(
            blocking.started.acquire, True, 5
        )  # the only worker is now taken
        faq = await runner.answer(
            "Are you open on Saturday?",
            [],
            Deadline.after_ms(10_000),
            channel="test",
            client="loopback",
        )
        assert (
            faq.answer.path == "faq" and not faq.degraded
        )  # exact static FAQ: fast path, no worker
        shed = await runner.answer(
            "Is there wifi in the hall?",
            [],
            Deadline.after_ms(10_000),
            channel="test",
            client="loopback",
        )
        assert shed.degraded and any("queue_full" in n for n in shed.answer.notes)
        assert shed.answer.path in ("faq", "fallback") and shed.answer.text
        blocking.release.set()
        done = await busy
        assert not done.degraded and not any("degraded" in n for n in done.answer.notes)

    asyncio.run(main())
    assert runner.metrics.shed.labels(reason="queue_full")._value.get() == 1


def test_turn_that_would_miss_its_deadline_is_answered_at_once_degraded(blocking):
    runner = _runner(blocking, workers=1, queue_limit=10, turn_s=2.0)

    async def main():
        busy = asyncio.create_task(
            runner.answer(
                "Is the hall closed on Monday mornings?",
                [],
                Deadline.after_ms(10_000),
                channel="t",
                client="loopback",
            )
        )
        assert await asyncio.to_thread(blocking.started.acquire, True, 5)
        res = await runner.answer(
            "When is the hall open on Saturday?",
            [],
            Deadline.after_ms(500),
            channel="t",
            client="loopback",
        )
        assert res.degraded and any("deadline" in n for n in res.answer.notes)
        assert runner.admission.in_flight == 1  # never queued: only the busy turn holds a slot
        # With the worker idle, a turn is admitted even though the estimate is long
        # (that is how it learns).
        blocking.release.set()
        await busy
        ok = await runner.answer(
            "When is the hall open on Saturday?",
            [],
            Deadline.after_ms(5000),
            channel="t",
            client="loopback",
        )
        assert not ok.degraded

    asyncio.run(main())
    assert runner.metrics.shed.labels(reason="deadline")._value.get() == 1


def test_admitted_turn_past_its_deadline_gets_a_degraded_answer(blocking):
    runner = _runner(blocking, workers=1, queue_limit=10, turn_s=0.01)

    async def main():
        res = await runner.answer(
            "When is the hall open on Saturday?",
            [],
            Deadline.after_ms(300),
            channel="t",
            client="loopback",
        )
        assert res.degraded and any("deadline passed" in n for n in res.answer.notes)
        events = [
            e
            async for e in runner.stream(
                "How much is a passport fee?",
                [],
                Deadline.after_ms(300),
                channel="t",
                client="loopback",
            )
        ]
        assert events[-1][0] == "done" and events[-1][2] is True

    asyncio.run(main())


def test_http_rate_limit_returns_429_with_retry_after(tmp_path):
    from runtime.server.service_app import build_service_app

    p = make_pipeline(tmp_path)
    cfg = make_config(tmp_path, rate_limit_per_s=1.0, rate_limit_burst=3, api_tokens=["tok"])
    cfg.audit.enabled = False
    app = build_service_app(cfg, get_pipeline=lambda: p)

    async def main():
        transport = httpx.ASGITransport(app=app, client=("192.168.5.5", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            h = {"authorization": "Bearer tok"}
            codes = [
                (
                    await c.post("/v1/kiosk/ask", json={"question": "Where can I park?"}, headers=h)
                ).status_code
                for _ in range(5)
            ]
            last = await c.post("/v1/kiosk/ask", json={"question": "Where can I park?"}, headers=h)
            metrics = (await c.get("/metrics", headers=h)).text
        transport2 = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport2, base_url="http://127.0.0.1") as c:
            local = [
                (await c.post("/v1/kiosk/ask", json={"question": "Where can I park?"})).status_code
                for _ in range(10)
            ]
        return codes, last, metrics, local

    codes, last, metrics, local = asyncio.run(main())
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    assert last.status_code == 429 and 1 <= int(last.headers["retry-after"]) <= 2
    assert 'kiosk_shed_requests_total{reason="rate_limited"} 3.0' in metrics
    assert local == [200] * 10  # the kiosk's own screen (loopback) is not rate-limited by default


def test_queue_depth_gauge_and_breakers_in_metrics(tmp_path):
    p = make_pipeline(tmp_path)
    runner = _runner(p)
    runner.admission.in_flight = 3
    text = runner.metrics.render().decode()
    runner.admission.in_flight = 0
    assert "kiosk_queue_depth 3.0" in text
    assert 'kiosk_breaker_state{breaker="generator"} 0.0' in text


def test_generator_worker_state_in_metrics(tmp_path):
    p = make_pipeline(tmp_path)

    class _Worker:  # what ProcessGenerator.status() reports (runtime/workers/supervisor.py)
        def status(self):
            return {"state": "restarting", "restarts": 2, "rss_mb": 10.0}

    p.generator = _Worker()
    text = _runner(p).metrics.render().decode()
    assert 'kiosk_generator_worker_state{state="restarting"} 1.0' in text
    assert 'kiosk_generator_worker_state{state="ready"} 0.0' in text
    assert "kiosk_generator_worker_restarts 2.0" in text
    assert "kiosk_generator_worker_rss_bytes 1.048576e+07" in text


class _BrokenPipeline:
    """A pipeline whose slow path crashes (a bug, a dead backend): visitors still get an answer."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def answer(self, question, history=()):
        raise RuntimeError("backend died")

    def stream(self, question, history=()):
        yield from ()
        raise RuntimeError("backend died")


def test_a_crashing_pipeline_gives_degraded_answers_not_errors(tmp_path):
    runner = _runner(
        _BrokenPipeline(make_pipeline(tmp_path)), workers=1, queue_limit=4, turn_s=0.01
    )

    async def main():
        whole = await runner.answer(
            "Are you open on Saturdays at noon?",
            [],
            Deadline.after_ms(3000),
            channel="t",
            client="loopback",
        )
        streamed = [
            e
            async for e in runner.stream(
                "Are you open on Saturdays at noon?",
                [],
                Deadline.after_ms(3000),
                channel="t",
                client="loopback",
            )
        ]
        return whole, streamed

    whole, streamed = asyncio.run(main())
    assert (
        whole.degraded
        and whole.answer.text
        and "pipeline error: RuntimeError" in whole.answer.notes[-1]
    )
    assert streamed[-1][0] == "done" and streamed[-1][2] is True and streamed[-1][1].text
    assert runner.metrics.shed.labels(reason="error")._value.get() == 2


# --- the active pack's FAQ on the fast path ---------------------------------------------------


def _ask(runner, question, deadline_ms=10_000):
    return runner.answer(
        question, [], Deadline.after_ms(deadline_ms), channel="t", client="loopback"
    )


def test_pack_faq_answers_do_not_wait_behind_busy_workers(tmp_path, blocking):
    # What the pipeline itself answers, from a second pipeline over its own copy of the store.
    reference = make_pipeline(tmp_path / "ref")
    expected = {q: reference.answer(q) for q in ("Where can I park?", "有停车场吗？")}
    assert all(a.path == "faq" for a in expected.values())
    runner = _runner(blocking, workers=1, queue_limit=0)
    runner.pipeline()
    runner._fast.pack_faq.refresh()  # built off the loop; here at once, for a deterministic test

    async def main():
        busy = asyncio.create_task(_ask(runner, "Is the hall closed on Monday mornings?"))
        assert await asyncio.to_thread(
            blocking.started.acquire, True, 5
        )  # the only worker is taken
        got = {q: await _ask(runner, q) for q in expected}
        shed = await _ask(runner, "Is there wifi in the hall?")
        blocking.release.set()
        await busy
        return got, shed

    got, shed = asyncio.run(main())
    for q, want in expected.items():
        res = got[q]
        assert res.answer.path == "faq" and not res.degraded, q
        assert res.answer.text == want.text
        s, w = res.answer.sources[0], want.sources[0]
        assert (s.faq_id, s.section, s.quote, s.source_path) == (
            w.faq_id,
            w.section,
            w.quote,
            w.source_path,
        )
        assert any("pack FAQ" in n for n in res.answer.notes)
    assert shed.degraded  # a question that needs the worker still cannot get it
    assert blocking.started.acquire(False) is False  # no FAQ question ever reached a worker


def test_pack_faq_fast_path_with_a_slow_generator_over_http(tmp_path):
    from fakes import FakeGenerator

    from runtime.server.service_app import build_service_app

    gen = FakeGenerator(lambda r: "Open 09:00-12:30 on Saturdays [1].", mode="hang")
    p = make_pipeline(tmp_path, generator=gen)
    cfg = make_config(tmp_path, workers=1, queue_limit=0)
    cfg.audit.enabled = False
    app = build_service_app(cfg, get_pipeline=lambda: p)

    async def main():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", timeout=30
        ) as c:
            assert (await c.get("/v1/kiosk/faq")).status_code == 200  # starts the index build
            handles = app.state.kiosk
            await asyncio.to_thread(handles.turns._fast.pack_faq.ready.wait, 5)
            slow = asyncio.create_task(
                c.post("/v1/kiosk/ask", json={"question": "When is the hall open on Saturday?"})
            )
            while not gen.requests:  # the generator now holds the only worker
                await asyncio.sleep(0.01)
            fast = await c.post("/v1/kiosk/ask", json={"question": "Where can I park?"})
            streamed = await c.post(
                "/v1/kiosk/ask", json={"question": "有停车场吗？", "stream": True}
            )
            gen.release.set()
            await slow
            return fast, streamed

    fast, streamed = asyncio.run(main())
    p.close()
    body = fast.json()
    assert fast.status_code == 200 and body["path"] == "faq" and body["degraded"] is False
    assert body["sources"][0]["faq_id"] == "en-parking-01"
    assert streamed.status_code == 200 and "zh-parking-01" in streamed.text
    assert '"degraded":false' in streamed.text


def test_pack_faq_index_follows_the_knowledge_version(tmp_path):
    from fakes import FakeEmbedder

    from runtime.knowledge.records import FaqRecord
    from runtime.server.admission import FastPath

    p = make_pipeline(tmp_path)
    fast = FastPath(p)
    fast.pack_faq.refresh()
    assert fast.lookup("Is there wifi in the hall?", []) is None
    builds = fast.pack_faq.builds
    p.answer("Where can I park?")  # now in the answer cache, under the old knowledge version
    assert fast.lookup("Where can I park?", []).path == "cache"
    entry = FaqRecord(
        faq_id="en-wifi-01",
        questions=("Is there wifi in the hall?",),
        answer="Yes: the network 'Hall-Guest' is free, no password.",
        language="en",
        source="faq.csv",
    )
    p.store.add_faq([entry], [FakeEmbedder().embed_batch(list(entry.questions))])
    # What the pack installer does after a switch: the cache moves to the new version at once.
    # The table is now older than the cache, so the fast path leaves FAQ questions to the
    # pipeline until the table is rebuilt (no answer from the old knowledge).
    p.cache.set_version(str(p._knowledge_version()))
    assert fast.pack_faq.lookup("where can i park?", "en") is None
    assert fast.lookup("Where can I park?", []) is None
    fast.pack_faq.refresh()
    assert fast.pack_faq.builds == builds + 1
    hit = fast.lookup("Is there wifi in the hall?", [])
    assert hit is not None and hit.path == "faq" and hit.sources[0].faq_id == "en-wifi-01"
    # The cache moved to the new knowledge version with the index: no stale cache hit.
    assert fast.lookup("Where can I park?", []).path == "faq"
    fast.pack_faq.refresh()
    assert fast.pack_faq.builds == builds + 1  # unchanged knowledge: no rebuild


def test_questions_the_pipeline_rewrites_are_left_to_the_pipeline():
    from runtime.server.admission import new_trace_id, prepare_question

    langs = ("zh", "en")
    assert prepare_question("Where can I park?", langs).faq_norm == "where can i park?"
    assert prepare_question("在哪里停车？", langs).faq_norm == "在哪里停车?"
    assert prepare_question("礼拜六开门吗？", langs).faq_norm is None  # weekday words rewritten
    assert prepare_question("Où est le parking ?", langs).faq_norm is None  # not a served language
    ids = {new_trace_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_fast_lane_sends_what_the_routed_endpoint_sends(tmp_path):
    """The raw ASGI lane (fast_lane.py) and the Starlette route give the same answers and
    headers; misses fall through to the route; a rate-limit token is spent once per request."""
    import json

    from runtime.server.service_app import build_service_app

    p = make_pipeline(tmp_path)
    p.answer("What are your opening hours?")  # now a cache hit
    cfg = make_config(tmp_path, rate_limit_per_s=0.01, rate_limit_burst=3, api_tokens=["tok"])
    cfg.audit.enabled = False
    apps = {
        lane: build_service_app(cfg, get_pipeline=lambda: p, fast_lane=lane)
        for lane in (True, False)
    }
    asks = [
        {"question": "What are your opening hours?"},
        {"question": "What are your opening hours?", "stream": True},
        {"question": "Where can I park?", "stream": True, "session": "s1"},
        {"question": "Are you open on Saturday?", "history": []},
    ]

    def strip(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in ("trace_id", "timings_ms")}

    def parsed(r) -> object:
        if r.headers["content-type"].startswith("text/event-stream"):
            return [
                strip(json.loads(line[6:]))
                for line in r.text.splitlines()
                if line.startswith("data: ")
            ]
        return strip(r.json())

    async def run(app, client=("127.0.0.1", 4000)):
        for lane in (True, False):
            apps[lane].state.kiosk.turns.pipeline()
            apps[lane].state.kiosk.turns._fast.pack_faq.refresh()
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [await c.post("/v1/kiosk/ask", json=a) for a in asks]

    fast = asyncio.run(run(apps[True]))
    routed = asyncio.run(run(apps[False]))
    for a, f, r in zip(asks, fast, routed, strict=True):
        assert f.status_code == r.status_code == 200, a
        for h in ("content-type", "cache-control", "x-accel-buffering"):
            assert f.headers.get(h) == r.headers.get(h), (a, h)
        assert parsed(f) == parsed(r), a
    assert apps[True].state.kiosk.kiosk.sessions.get("s1")  # the session remembered the turn

    async def remote(app):
        transport = httpx.ASGITransport(app=app, client=("192.168.5.5", 4000))
        h = {"authorization": "Bearer tok"}
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            miss = await c.post("/v1/kiosk/ask", json={"question": "Is there wifi?"}, headers=h)
            hits = [
                await c.post("/v1/kiosk/ask", json={"question": "Where can I park?"}, headers=h)
                for _ in range(3)
            ]
            return miss, hits, (await c.get("/metrics", headers=h)).text

    miss, hits, metrics = asyncio.run(remote(apps[True]))
    assert miss.status_code == 200 and miss.json()["path"] not in ("cache", "faq")
    assert [h.status_code for h in hits] == [200, 200, 429]  # the miss spent one token, not two
    assert hits[2].headers["retry-after"]
    assert 'kiosk_shed_requests_total{reason="rate_limited"} 1.0' in metrics


def test_fast_lane_answers_carry_cors_headers_when_cors_is_on(tmp_path):
    from runtime.server.service_app import build_service_app

    p = make_pipeline(tmp_path)
    p.answer("What are your opening hours?")
    cfg = make_config(tmp_path, cors_origins=["http://tablet.branch.example"])
    cfg.audit.enabled = False
    app = build_service_app(cfg, get_pipeline=lambda: p)

    async def main():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            ok = await c.post(
                "/v1/kiosk/ask",
                json={"question": "What are your opening hours?"},
                headers={"origin": "http://tablet.branch.example"},
            )
            other = await c.post(
                "/v1/kiosk/ask",
                json={"question": "What are your opening hours?"},
                headers={"origin": "http://evil.example"},
            )
            return ok, other

    ok, other = asyncio.run(main())
    assert ok.status_code == 200 and ok.json()["path"] == "cache"
    assert ok.headers["access-control-allow-origin"] == "http://tablet.branch.example"
    assert other.status_code == 403  # the security middleware still runs first

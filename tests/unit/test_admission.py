"""Admission control: bounded workers, deadlines, degraded fast answers, rate limits (429 + Retry-After)."""

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
        # With the worker idle, a turn is admitted even though the estimate is long (that is how it learns).
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

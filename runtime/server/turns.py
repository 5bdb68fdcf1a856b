"""One visitor turn through the service: rate limit → fast path → admission → pipeline → audit.

Every HTTP entry point that answers a question (kiosk ask, OpenAI chat completions,
voice) goes through :class:`TurnRunner`, so the rules of admission control, the
metrics and the audit log are the same whichever door a question comes in by.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.errors import RequestRejectedError

from .admission import Admission, Deadline, DeadlineMissed, FastPath, RateLimiter, client_key
from .metrics import ServiceMetrics
from .security import is_loopback

log = logging.getLogger(__name__)


class NotReady(RequestRejectedError):
    status = 503


@dataclass
class TurnResult:
    answer: Any
    degraded: bool


class TurnRunner:
    """Shared by every API module. ``get_pipeline()`` returns None while the kiosk is loading."""

    def __init__(
        self,
        get_pipeline: Callable[[], Any],
        *,
        admission: Admission,
        metrics: ServiceMetrics,
        limiter: RateLimiter | None = None,
        audit=None,
        default_deadline_ms: int = 8000,
        rate_limit_loopback: bool = False,
    ) -> None:
        self.get_pipeline = get_pipeline
        self.admission = admission
        self.metrics = metrics
        self.limiter = limiter
        self.audit = audit
        self.default_deadline_ms = default_deadline_ms
        self.rate_limit_loopback = rate_limit_loopback
        self._fast: FastPath | None = None
        metrics.add_refresher(self._refresh)

    def _refresh(self) -> None:
        self.metrics.queue_depth.set(self.admission.in_flight)
        p = self.get_pipeline()
        if p is not None and hasattr(p, "breakers"):
            self.metrics.set_breakers({n: b.snapshot() for n, b in p.breakers.items()})
        status = getattr(getattr(p, "generator", None), "status", None)
        if callable(status):  # the generator runs in a worker process
            self.metrics.set_worker(status())

    def pipeline(self) -> Any:
        p = self.get_pipeline()
        if p is None:
            raise NotReady(
                "the kiosk is still loading its models", hint="try again in a few seconds"
            )
        if self._fast is None or self._fast.pipeline is not p:
            self._fast = FastPath(p)
        return p

    def check_rate(self, scope_client, headers) -> None:
        """Raise RateLimitedError (429) when this client is over its budget."""
        if self.limiter is None or (is_loopback(scope_client) and not self.rate_limit_loopback):
            return
        try:
            self.limiter.take(client_key(scope_client, headers))
        except Exception:
            self.metrics.shed.labels(reason="rate_limited").inc()
            raise

    def deadline(self, headers) -> Deadline:
        return Deadline.from_headers(headers, self.default_deadline_ms)

    # -- whole answers --------------------------------------------------------------------
    async def answer(
        self,
        question: str,
        history: Sequence[Any],
        deadline: Deadline,
        *,
        channel: str,
        client: str,
    ) -> TurnResult:
        p = self.pipeline()
        fast = self._fast
        t0 = time.perf_counter()
        hit = fast.lookup(question, history)
        if hit is not None:
            return self._done(hit, False, channel, client, t0)
        reason = self.admission.decide(deadline)
        if reason is not None:
            self.metrics.shed.labels(reason=reason).inc()
            return self._done(fast.degraded(question, history, reason), True, channel, client, t0)
        try:
            ans = await self.admission.run(deadline, p.answer, question, list(history))
        except DeadlineMissed:
            self.metrics.shed.labels(reason="late").inc()
            return self._done(
                fast.degraded(question, history, "deadline passed while answering"),
                True,
                channel,
                client,
                t0,
            )
        except Exception as exc:  # noqa: BLE001 - never fail a visitor: the fast paths answer instead
            log.exception("pipeline turn failed")
            self.metrics.shed.labels(reason="error").inc()
            ans = fast.degraded(question, history, f"pipeline error: {type(exc).__name__}")
            return self._done(ans, True, channel, client, t0)
        return self._done(ans, False, channel, client, t0)

    # -- streamed answers ----------------------------------------------------------------
    def fast(
        self, question: str, history: Sequence[Any], *, channel: str, client: str
    ) -> Any | None:
        """The cache/FAQ answer when there is one (recorded like any turn), else None.

        Lets streaming endpoints send an already-complete answer as one plain response,
        without the machinery of a streamed one (the largest cost on the fast path).
        """
        self.pipeline()
        t0 = time.perf_counter()
        hit = self._fast.lookup(question, history)
        if hit is not None:
            self._done(hit, False, channel, client, t0)
        return hit

    async def stream(
        self,
        question: str,
        history: Sequence[Any],
        deadline: Deadline,
        *,
        channel: str,
        client: str,
    ) -> AsyncIterator[tuple[str, Any, bool]]:
        """Yields ("sources"|"partial"|"replace", event, degraded) and finally ("done", Answer,
        degraded)."""
        p = self.pipeline()
        fast = self._fast
        t0 = time.perf_counter()
        hit = fast.lookup(question, history)
        degraded_reason = None
        if hit is None:
            degraded_reason = self.admission.decide(deadline)
            if degraded_reason is not None:
                self.metrics.shed.labels(reason=degraded_reason).inc()
                hit = fast.degraded(question, history, degraded_reason)
        if hit is not None:
            degraded = degraded_reason is not None
            self._done(hit, degraded, channel, client, t0)
            yield "done", hit, degraded
            return
        final = None
        try:
            async for ev in self.admission.stream(
                deadline, lambda: p.stream(question, list(history))
            ):
                if ev.kind == "done":
                    final = ev.answer
                    break
                yield ev.kind, ev, False
        except DeadlineMissed:
            self.metrics.shed.labels(reason="late").inc()
            ans = fast.degraded(question, history, "deadline passed before the first words")
            self._done(ans, True, channel, client, t0)
            yield "done", ans, True
            return
        except Exception as exc:  # noqa: BLE001 - never a broken stream: the fast paths answer instead
            log.exception("streamed pipeline turn failed")
            self.metrics.shed.labels(reason="error").inc()
            ans = fast.degraded(question, history, f"pipeline error: {type(exc).__name__}")
            self._done(ans, True, channel, client, t0)
            yield "done", ans, True
            return
        if final is None:  # the pipeline always ends with done; be safe if a fake does not
            final = fast.degraded(question, history, "pipeline ended without an answer")
            self._done(final, True, channel, client, t0)
            yield "done", final, True
            return
        self._done(final, False, channel, client, t0)
        yield "done", final, False

    def _done(self, ans: Any, degraded: bool, channel: str, client: str, t0: float) -> TurnResult:
        self.metrics.observe_answer(ans, degraded=degraded)
        self.metrics.observe_request(channel, time.perf_counter() - t0)
        audit = self.audit
        if audit is not None:
            # The audit record (and its redaction) is built on the audit writer thread, not here
            # on the event loop; audit logs without record_answer get a finished TurnRecord.
            by_answer = getattr(audit, "record_answer", None)
            if by_answer is not None:
                ok = by_answer(ans, degraded=degraded, channel=channel, client=client)
            else:
                from runtime.audit import TurnRecord

                ok = audit.record(
                    TurnRecord.from_answer(ans, degraded=degraded, channel=channel, client=client)
                )
            if not ok:
                self.metrics.audit_dropped.inc()
        if log.isEnabledFor(logging.INFO):
            trace = getattr(ans, "trace_id", "")
            log.info(
                "turn trace=%s channel=%s path=%s degraded=%s",
                trace,
                channel,
                getattr(ans, "path", ""),
                degraded,
                extra={"trace_id": trace},
            )
        return TurnResult(ans, degraded)

"""Prometheus metrics of the kiosk service, in a registry of their own.

One :class:`ServiceMetrics` per app (not the process-global default registry), so
two apps in one process (tests, benchmarks) never collide and ``/metrics`` shows
only the kiosk's own series. Gauges that mirror state owned elsewhere (breaker
state, queue depth, pack version) are read at scrape time through callbacks, so
they can never go stale.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency buckets (seconds) from cache hits (sub-ms) to slow generations.
_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


WORKER_STATES = ("starting", "ready", "restarting", "failed", "stopped")


class ServiceMetrics:
    CONTENT_TYPE = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.stage_seconds = Histogram(
            "kiosk_stage_seconds", "Time per answer stage", ["stage"], registry=r, buckets=_BUCKETS
        )
        self.request_seconds = Histogram(
            "kiosk_request_seconds",
            "Whole request time by endpoint",
            ["endpoint"],
            registry=r,
            buckets=_BUCKETS,
        )
        self.answers = Counter("kiosk_answers", "Answers by path", ["path", "degraded"], registry=r)
        self.cache_hits = Counter(
            "kiosk_cache_hits",
            "Answers served from the cache or FAQ fast path",
            ["kind"],
            registry=r,
        )
        self.shed = Counter(
            "kiosk_shed_requests",
            "Requests answered degraded or refused by admission control",
            ["reason"],
            registry=r,
        )
        self.rejected = Counter(
            "kiosk_rejected_requests",
            "Requests refused by security checks and input validation",
            ["reason"],
            registry=r,
        )
        self.audit_dropped = Counter(
            "kiosk_audit_dropped", "Turns not written to the audit log", registry=r
        )
        self.queue_depth = Gauge(
            "kiosk_queue_depth", "Turns running or waiting for a pipeline worker", registry=r
        )
        self.sse_sessions = Gauge(
            "kiosk_sse_sessions", "Open server-sent-event streams", registry=r
        )
        self.breaker_state = Gauge(
            "kiosk_breaker_state",
            "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            ["breaker"],
            registry=r,
        )
        self.pack_version = Gauge(
            "kiosk_pack_version",
            "Version of the active knowledge pack (0: none)",
            ["pack"],
            registry=r,
        )
        self.worker_state = Gauge(
            "kiosk_generator_worker_state",
            "Generator worker process state (1 for the current one)",
            ["state"],
            registry=r,
        )
        self.worker_restarts = Gauge(
            "kiosk_generator_worker_restarts",
            "Restarts of the generator worker process since the server started",
            registry=r,
        )
        self.worker_rss = Gauge(
            "kiosk_generator_worker_rss_bytes",
            "Resident memory of the generator worker process",
            registry=r,
        )
        self._refreshers: list[Callable[[], None]] = []
        self._children: dict[tuple, object] = {}

    def add_refresher(self, fn: Callable[[], None]) -> None:
        """``fn`` runs before every scrape (to copy state owned elsewhere into gauges)."""
        self._refreshers.append(fn)

    def _child(self, metric, **labels):
        """``metric.labels(...)`` cached: label lookup is most of a counter's cost on the fast
        path."""
        key = (id(metric), *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child

    def observe_answer(self, answer, *, degraded: bool = False) -> None:
        path = getattr(answer, "path", "unknown") or "unknown"
        self._child(self.answers, path=path, degraded="true" if degraded else "false").inc()
        if path in ("cache", "faq"):
            self._child(self.cache_hits, kind=path).inc()
        for stage, ms in (getattr(answer, "timings_ms", None) or {}).items():
            try:
                self._child(self.stage_seconds, stage=str(stage)[:32]).observe(
                    max(float(ms), 0.0) / 1000.0
                )
            except (TypeError, ValueError):
                continue

    def observe_request(self, endpoint: str, seconds: float) -> None:
        self._child(self.request_seconds, endpoint=endpoint).observe(seconds)

    def set_breakers(self, snapshot: dict) -> None:
        for name, snap in (snapshot or {}).items():
            state = snap.get("state") if isinstance(snap, dict) else snap
            self.breaker_state.labels(breaker=str(name)).set(BREAKER_STATES.get(str(state), -1))

    def set_worker(self, status: dict) -> None:
        """Mirror ``ProcessGenerator.status()`` (runtime/workers/supervisor.py)."""
        current = str(status.get("state", "unknown"))
        for state in WORKER_STATES:
            self.worker_state.labels(state=state).set(1 if state == current else 0)
        self.worker_restarts.set(float(status.get("restarts") or 0))
        self.worker_rss.set(float(status.get("rss_mb") or 0) * 1024 * 1024)

    def render(self) -> bytes:
        for fn in self._refreshers:
            try:
                fn()
            except Exception:  # noqa: BLE001 - a broken refresher must not break the scrape
                continue
        return generate_latest(self.registry)

"""Assembles the full kiosk HTTP service: security middleware, admission control, the
OpenAI-compatible, kiosk and admin APIs, ``/metrics``, ``/openapi.json`` and the audit log.

``build_service_app`` takes everything it serves as callables (pipeline, embedder, voices,
pack installer), so tests run it with a fast fake pipeline and `kiosk serve` with the real
one; ``from_app_state`` adapts the loader of :mod:`runtime.server.app`. ``uvicorn_options``
gives the matching uvicorn settings (slow-header guard, WebSocket message cap, connection cap).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .admin_api import UPLOAD_PATH, AdminRoutes
from .admission import Admission, RateLimiter
from .fast_lane import KioskFastLane
from .kiosk_api import KioskRoutes
from .metrics import ServiceMetrics
from .openai_api import OpenAIRoutes
from .openapi import build_spec
from .security import (
    AdminGuard,
    SecurityMiddleware,
    SecurityPolicy,
    cors_middleware,
    guarded_http_protocol,
)
from .turns import TurnRunner

log = logging.getLogger(__name__)


@dataclass
class ServiceHandles:
    """What tests and the serve command may need to reach after building the app."""

    turns: TurnRunner
    metrics: ServiceMetrics
    admission: Admission
    admin_guard: AdminGuard
    audit: Any
    kiosk: KioskRoutes


def open_audit(cfg) -> Any:
    if not cfg.audit.enabled:
        return None
    from runtime.audit import AuditLog

    path = cfg.audit.path or cfg.paths.data_dir / "audit" / "audit.sqlite"
    return AuditLog(
        path, retention_days=cfg.audit.retention_days, max_pending=cfg.audit.max_pending
    )


def build_service_app(
    cfg,
    *,
    get_pipeline: Callable[[], Any],
    get_embedder: Callable[[], Any] | None = None,
    health: Callable[[], tuple[int, dict]] | None = None,
    base_routes: Sequence[BaseRoute] = (),
    audit: Any = "config",
    get_synthesizer: Callable[[str], Any] = lambda lang: None,
    make_voice_session: Callable[[], Any] | None = None,
    get_installer: Callable[[], Any] = lambda: None,
    get_sync: Callable[[], Any] = lambda: None,
    pack_version: Callable[[], tuple[str, int]] | None = None,
    fast_lane: bool = True,
) -> Starlette:
    s = cfg.server
    metrics = ServiceMetrics()
    admission = Admission(
        workers=s.workers,
        queue_limit=s.queue_limit,
        initial_turn_s=min(cfg.answer.total_ms, s.deadline_ms) / 4000.0,
    )
    if audit == "config":
        audit = open_audit(cfg)
    limiter = (
        RateLimiter(s.rate_limit_per_s, s.rate_limit_burst) if s.rate_limit_per_s > 0 else None
    )
    turns = TurnRunner(
        get_pipeline,
        admission=admission,
        metrics=metrics,
        limiter=limiter,
        audit=audit,
        default_deadline_ms=s.deadline_ms,
        rate_limit_loopback=s.rate_limit_loopback,
    )
    if get_embedder is None:

        def get_embedder():
            p = get_pipeline()
            return getattr(p, "embedder", None) if p is not None else None

    guard = AdminGuard.from_config(
        s, on_failure=lambda reason: metrics.rejected.labels(reason=reason).inc()
    )
    openai = OpenAIRoutes(turns, get_embedder=get_embedder, max_body_bytes=s.max_body_bytes)
    kiosk = KioskRoutes(
        turns,
        max_body_bytes=s.max_body_bytes,
        max_ws_message_bytes=s.max_ws_message_bytes,
        get_synthesizer=get_synthesizer,
        make_voice_session=make_voice_session,
    )
    admin = AdminRoutes(
        guard,
        cfg=cfg,
        get_installer=get_installer,
        get_sync=get_sync,
        audit=audit,
        max_pack_bytes=cfg.packs.max_pack_bytes,
        metrics=metrics,
    )
    if pack_version is not None:

        def _pack() -> None:
            pid, ver = pack_version()
            metrics.pack_version.clear()
            metrics.pack_version.labels(pack=pid or "none").set(ver or 0)

        metrics.add_refresher(_pack)
    spec = build_spec(_version())

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=ServiceMetrics.CONTENT_TYPE)

    async def openapi_endpoint(request: Request) -> JSONResponse:
        return JSONResponse(spec)

    async def healthz(request: Request) -> JSONResponse:
        if health is not None:
            status, payload = health()
            return JSONResponse(payload, status_code=status)
        p = get_pipeline()
        if p is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse(
            {"status": "ok", "pipeline": p.health() if hasattr(p, "health") else {}}
        )

    base = [r for r in base_routes if getattr(r, "path", None) not in _OWN_PATHS]
    routes: list[BaseRoute] = [
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        *openai.routes(),
        *kiosk.routes(),
        *admin.routes(),
    ]
    if not any(getattr(r, "path", None) == "/healthz" for r in base):
        routes.append(Route("/healthz", healthz, methods=["GET"]))
    routes.extend(base)

    policy = SecurityPolicy.from_config(s)
    policy.body_limits[UPLOAD_PATH] = cfg.packs.max_pack_bytes
    policy.body_timeouts[UPLOAD_PATH] = cfg.packs.download_deadline_s
    middleware = [
        Middleware(
            SecurityMiddleware,
            policy=policy,
            on_reject=lambda reason: metrics.rejected.labels(reason=reason).inc(),
        )
    ]
    cors = cors_middleware(s.cors_origins)
    if cors is not None:
        middleware.append(cors)
    if fast_lane:  # after every check: cache/FAQ questions skip the framework (fast_lane.py)
        middleware.append(Middleware(KioskFastLane, kiosk=kiosk))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            admission.close()
            if audit is not None:
                audit.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.kiosk = ServiceHandles(turns, metrics, admission, guard, audit, kiosk)
    return app


_OWN_PATHS = {"/v1/kiosk/ask", "/metrics", "/openapi.json"}


def _version() -> str:
    try:
        from runtime import __version__

        return str(__version__)
    except ImportError:
        return "0"


def from_app_state(state, cfg, base_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The full service around :class:`runtime.server.app.AppState` (the background loader)."""

    def get_pipeline():
        svc = state.service
        return None if svc is None else svc.pipeline

    def pack_version() -> tuple[str, int]:
        p = get_pipeline()
        store = getattr(p, "store", None)
        if store is not None and hasattr(store, "describe"):
            d = store.describe()
            return str(d.get("pack_id") or "none"), int(d.get("version") or 0)
        return "none", 0

    voices: dict[str, Any] = {}
    lock = threading.Lock()

    def get_synthesizer(lang: str):
        if not cfg.speech.enabled or cfg.speech.muted:
            return None
        with lock:
            if not voices:
                try:
                    from runtime.speech.speaker import voices_from_config

                    voices.update(voices_from_config(cfg, prefer="auto", note=log.warning))
                except Exception as exc:  # noqa: BLE001 - no voice: speak answers 503 with the reason logged
                    log.warning("no voice for /v1/kiosk/speak: %s", exc)
                    voices["_none"] = None
        return voices.get(lang)

    transcriber: list[Any] = []
    vocabulary_for: list[str] = [""]  # the knowledge version the recogniser's prompt came from

    def make_voice_session():
        from runtime.inference.transcribe_whisper import WhisperTranscriber
        from runtime.speech.streaming import StreamingSession, StreamSettings

        with lock:
            if not transcriber:
                transcriber.append(WhisperTranscriber.from_config(cfg))
            _refresh_vocabulary(transcriber[0])
        return StreamingSession(transcriber[0], StreamSettings.from_config(cfg.speech))

    def _refresh_vocabulary(t) -> None:
        """Bias recognition toward the active knowledge's names; again after a pack switch."""
        pipeline = state.service.pipeline if state.service is not None else None
        if pipeline is None:
            return
        try:
            version = pipeline.knowledge_version()
            if version == vocabulary_for[0]:
                return
            store = pipeline.store
            with store.acquire() if hasattr(store, "acquire") else contextlib.nullcontext(
                store
            ) as s, pipeline.store_lock:
                terms = s.vocabulary() if s is not None and hasattr(s, "vocabulary") else []
            t.set_vocabulary(terms)
            vocabulary_for[0] = version
        except Exception as exc:  # noqa: BLE001 - recognition works without the prompt
            log.warning("speech vocabulary not set: %s", exc)

    def get_installer():
        packs = getattr(state.service, "packs", None)
        if packs is not None:  # `kiosk serve`: the one installer, with the live embedder
            return packs.installer
        try:
            from runtime.packs.binding import binding_for_config
            from runtime.packs.install import PackInstaller, packs_dir_for, settings_from_config

            return PackInstaller(
                packs_dir_for(cfg), settings_from_config(cfg, binding_for_config(cfg))
            )
        except Exception as exc:  # noqa: BLE001 - reported as 503 by the admin endpoint
            log.warning("pack installer unavailable: %s", exc)
            return None

    return build_service_app(
        cfg,
        get_pipeline=get_pipeline,
        base_routes=base_routes,
        get_synthesizer=get_synthesizer,
        make_voice_session=make_voice_session if cfg.speech.enabled else None,
        get_installer=get_installer,
        get_sync=lambda: getattr(getattr(state.service, "packs", None), "sync", None),
        pack_version=pack_version,
    )


def uvicorn_options(cfg, on_slow_header: Callable[[], None] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that match the service's limits."""
    s = cfg.server
    try:
        import uvloop  # noqa: F401 - uvicorn[standard] installs it; the faster event loop

        loop = "uvloop"
    except ImportError:
        loop = "auto"
    return {
        "loop": loop,
        "http": guarded_http_protocol(s.header_timeout_s, on_slow_header),
        "ws_max_size": s.max_ws_message_bytes,
        "limit_concurrency": s.max_connections,
        "timeout_keep_alive": 5,
        "h11_max_incomplete_event_size": 16 * 1024,
        # The kiosk is not behind a proxy: the address a request comes from is the peer's,
        # never an X-Forwarded-For header (which a loopback client could otherwise set).
        "proxy_headers": False,
    }

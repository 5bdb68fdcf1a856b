"""Admin endpoints under ``/v1/admin``, every one behind
:class:`~runtime.server.security.AdminGuard`.

- ``GET  /v1/admin/packs``            active/previous pack, trust state, sync progress
- ``POST /v1/admin/packs/upload``     body: a ``.kpack`` file (≤ ``[packs] max_pack_bytes``);
                                      verified and installed
- ``POST /v1/admin/packs/rollback``   make the previous pack active again
- ``POST /v1/admin/packs/sync``       start one sync from the configured sources
                                      (runs in the background)
- ``GET  /v1/admin/unanswered``       recent turns answered by the staff hand-off / refusal
                                      (from the audit log)
- ``GET  /v1/admin/config``           the running configuration with secrets masked

Pack work (verification, building the store) takes seconds to minutes: it runs in a
thread, never on the event loop; one installer runs at a time (its own file lock).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from runtime.errors import KioskError

from .common import error_response, reject
from .security import AdminGuard

log = logging.getLogger(__name__)

UPLOAD_PATH = "/v1/admin/packs/upload"
_SECRET_KEY = re.compile(r"(pin|token|secret|password|private)", re.I)


def mask_secrets(obj: Any, key: str = "") -> Any:
    """Replace the values of secret-looking keys by "***" (lists of tokens included)."""
    if isinstance(obj, dict):
        return {k: mask_secrets(v, k) for k, v in obj.items()}
    if _SECRET_KEY.search(key) and obj not in (None, [], ""):
        return [("***" if v else v) for v in obj] if isinstance(obj, list) else "***"
    if isinstance(obj, list):
        return [mask_secrets(v, key) for v in obj]
    return obj


class AdminRoutes:
    def __init__(
        self,
        guard: AdminGuard,
        *,
        cfg=None,
        get_installer: Callable[[], Any] = lambda: None,
        get_sync: Callable[[], Any] = lambda: None,
        audit=None,
        max_pack_bytes: int = 512 * 1024 * 1024,
        metrics=None,
    ) -> None:
        self.guard = guard
        self.cfg = cfg
        self.get_installer = get_installer
        self.get_sync = get_sync
        self.audit = audit
        self.max_pack_bytes = max_pack_bytes
        self.metrics = metrics

    def routes(self) -> list[Route]:
        return [
            Route("/v1/admin/packs", self._guarded(self.packs), methods=["GET"]),
            Route(UPLOAD_PATH, self._guarded(self.upload), methods=["POST"]),
            Route("/v1/admin/packs/rollback", self._guarded(self.rollback), methods=["POST"]),
            Route("/v1/admin/packs/sync", self._guarded(self.sync), methods=["POST"]),
            Route("/v1/admin/unanswered", self._guarded(self.unanswered), methods=["GET"]),
            Route("/v1/admin/config", self._guarded(self.config), methods=["GET"]),
        ]

    def _guarded(self, handler):
        async def endpoint(request: Request):
            client = str(request.client[0]) if request.client else "local"
            try:
                self.guard.check(client, request.headers)
                if handler.__name__ != "upload":
                    await (
                        request.body()
                    )  # read (capped) before slow work: the body timer stops here
                return await handler(request)
            except KioskError as exc:
                if self.metrics is not None and getattr(exc, "status", 500) < 500:
                    self.metrics.rejected.labels(reason="admin_" + type(exc).__name__).inc()
                return error_response(exc)

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    def _installer(self):
        inst = self.get_installer()
        if inst is None:
            raise reject(
                "pack management is not available on this kiosk",
                "check [packs] and `kiosk doctor`",
                503,
            )
        return inst

    async def packs(self, request: Request):
        """Active and previous pack, trust state and sync progress."""
        inst = self._installer()
        status = await asyncio.to_thread(inst.status)
        sync = self.get_sync()
        if sync is not None:
            status["sync"] = sync.status()
        return JSONResponse(status, headers={"Cache-Control": "no-store"})

    async def upload(self, request: Request):
        """Install the uploaded pack file (raw body)."""
        inst = self._installer()
        cap = self.max_pack_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise reject(
                f"pack over {cap} bytes",
                "raise [packs] max_pack_bytes or build a smaller pack",
                413,
            )
        # staging/downloads is the one staging folder an install keeps (sources stage packs there);
        # install_staged() then moves the file in, no second copy.
        downloads = inst.dir / "staging" / "downloads"
        downloads.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".kpack", dir=downloads)
        path = Path(name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cap:
                        raise reject(f"pack over {cap} bytes", "raise [packs] max_pack_bytes", 413)
                    f.write(chunk)
            if size == 0:
                raise reject("empty upload", "send the .kpack file as the request body", 422)
            result = await asyncio.to_thread(inst.install_staged, path)
        finally:
            path.unlink(missing_ok=True)
        return JSONResponse(
            {
                "installed": {
                    "pack_id": result.pack_id,
                    "version": result.version,
                    "chunks": result.chunks,
                    "documents": result.documents,
                    "faq_entries": result.faq_entries,
                    "smoke_passed": result.smoke_passed,
                }
            }
        )

    async def rollback(self, request: Request):
        """Make the previous pack active again."""
        inst = self._installer()
        active = await asyncio.to_thread(inst.rollback)
        return JSONResponse({"active": active})

    async def sync(self, request: Request):
        """Start one sync from the configured sources (background); poll GET /v1/admin/packs."""
        svc = self.get_sync()
        if svc is None:
            raise reject(
                "no pack source is configured", "set [packs] channel_url or usb_mount", 503
            )
        if hasattr(svc, "trigger") and getattr(svc, "_thread", None) is not None:
            svc.trigger()
        else:
            asyncio.get_running_loop().run_in_executor(None, svc.run_once, "admin request")
        return JSONResponse({"started": True}, status_code=202)

    async def unanswered(self, request: Request):
        """Recent questions the kiosk could not answer (staff hand-off / refusal), newest first."""
        if self.audit is None:
            raise reject("the audit log is off", "set [audit] enabled = true", 503)
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise reject('"limit" must be an integer from 1 to 1000', None, 422)
        self.audit.flush(timeout=2.0)
        rows = await asyncio.to_thread(
            self.audit.recent, limit=int(raw), paths=("fallback", "refusal")
        )
        return JSONResponse(
            {
                "turns": [
                    {
                        k: r[k]
                        for k in (
                            "ts",
                            "trace_id",
                            "question",
                            "answer",
                            "path",
                            "language",
                            "degraded",
                            "channel",
                        )
                    }
                    for r in rows
                ]
            }
        )

    async def config(self, request: Request):
        """The running configuration, secrets masked."""
        if self.cfg is None:
            return JSONResponse({})
        return JSONResponse(mask_secrets(self.cfg.model_dump(mode="json")))

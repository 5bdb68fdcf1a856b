"""Sync: ask each source for something newer, fetch it, install it; report progress and results.

``SyncService.run_once()`` is the on-demand path (``kiosk sync``, the admin API's "sync
now"); ``start()`` runs it in a background thread every ``sync_interval_s`` and whenever
the USB folder changes (polled every ``usb_poll_s``). ``status()`` is the object the
admin API reads: what it is doing now (stage, bytes done/total), the last result, the
active pack and whether its content may be stale. A failed sync never touches the
active pack: the kiosk keeps answering from it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.errors import KioskError

from ._fsutil import private_dir
from .install import PackInstaller
from .sources.base import PackSource
from .trust import TrustState

log = logging.getLogger(__name__)


class SyncService:
    def __init__(
        self,
        installer: PackInstaller,
        sources: list[PackSource],
        *,
        interval_s: float = 3600.0,
        usb_poll_s: float = 5.0,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.installer = installer
        self.sources = sources
        self.interval_s = interval_s
        self.usb_poll_s = usb_poll_s
        self.on_change = on_change
        self.progress = progress  # extra listener (the CLI's progress bar)
        self._lock = threading.Lock()  # one sync at a time
        self._state_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: dict[str, Any] = {
            "state": "idle",
            "source": None,
            "stage": None,
            "done": 0,
            "total": 0,
        }
        self.last_result: dict[str, Any] | None = None
        self.last_success_at: float | None = None
        self.history: list[dict[str, Any]] = []

    @property
    def downloads(self) -> Path:
        return private_dir(self.installer.dir / "staging" / "downloads")

    # -- reporting --
    def _set(self, **kw: Any) -> None:
        with self._state_lock:
            self._progress.update(kw)

    def _report(self, source: str) -> Callable[[str, int, int], None]:
        def progress(stage: str, done: int, total: int) -> None:
            self._set(state="running", source=source, stage=stage, done=done, total=total)
            if self.progress:
                self.progress(stage, done, total)

        return progress

    def status(self) -> dict[str, Any]:
        with self._state_lock:
            progress = dict(self._progress)
        try:
            pack = self.installer.status()
        except KioskError as exc:
            pack = {"current": None, "stale": False, "problem": exc.message}
        cur = pack.get("current")
        return {
            "progress": progress,
            "last_result": self.last_result,
            "last_success_at": self.last_success_at,
            "active": None
            if not cur
            else {
                "pack_id": cur["pack_id"],
                "version": cur["version"],
                "expires": cur["expires"],
                "installed_at": cur["installed_at"],
            },
            "stale": pack.get("stale", False),
            "background": bool(self._thread and self._thread.is_alive()),
        }

    # -- one sync --
    def run_once(
        self, reason: str = "on demand", sources: list[PackSource] | None = None
    ) -> dict[str, Any]:
        """Try each source in turn until one installs something; returns the result record."""
        if not self._lock.acquire(blocking=False):
            return {
                "ok": False,
                "outcome": "busy",
                "error": "a sync is already running",
                "at": time.time(),
            }
        try:
            results = [self._sync_source(s, reason) for s in (sources or self.sources)]
        finally:
            self._lock.release()
            self._set(state="idle", stage=None)
        installed = [r for r in results if r["outcome"] == "installed"]
        failed = [r for r in results if not r["ok"]]
        result = (
            installed[0]
            if installed
            else failed[0]
            if failed
            else (
                results[0] if results else {"ok": True, "outcome": "no sources", "at": time.time()}
            )
        )
        result = dict(result, sources=results, reason=reason)
        self.last_result = result
        if result["ok"]:
            self.last_success_at = result["at"]
        self.history = (self.history + [result])[-20:]
        if installed and self.on_change:
            self.on_change(result)
        return result

    def _sync_source(self, source: PackSource, reason: str) -> dict[str, Any]:
        base = {"source": source.name, "at": time.time()}
        self._set(state="running", source=source.name, stage="check", done=0, total=0)
        try:
            trust = TrustState.load(self.installer.dir)
            configured = self.installer.settings.configured_keys
            keys_changed = self._apply_key_lists(
                source, trust
            )  # lists beside the packs (USB, memory)
            offer = source.offer(trust, trust.trusted_keys(configured))
            if self._apply_key_lists(source, trust):  # lists a signed index names (HTTP)
                keys_changed = True
                offer = source.offer(trust, trust.trusted_keys(configured))
            index_created = getattr(source, "last_index", None) and source.last_index["created"]
            if index_created and index_created > trust.index.get(source.channel, 0):
                trust.accept_index(source.channel, index_created)
                keys_changed = True
            if keys_changed:
                trust.save(self.installer.dir)
            if offer is None:
                return dict(
                    base,
                    ok=True,
                    outcome="up-to-date",
                    not_modified=bool(getattr(source, "not_modified", False)),
                )
            staged = source.fetch(offer, self.downloads, self._report(source.name))
            result = self.installer.install_staged(staged, self._report(source.name))
            return dict(
                base,
                ok=True,
                outcome="installed",
                pack_id=result.pack_id,
                version=result.version,
                smoke_passed=result.smoke_passed,
                timings=result.timings,
            )
        except KioskError as exc:
            log.warning("sync from %s failed: %s", source.name, exc)
            return dict(
                base,
                ok=False,
                outcome="failed",
                error=exc.message,
                hint=exc.hint,
                error_type=type(exc).__name__,
            )
        except Exception as exc:  # noqa: BLE001 - a bug must not end the background sync
            log.exception("sync from %s failed unexpectedly", source.name)
            return dict(
                base,
                ok=False,
                outcome="failed",
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                hint="see the kiosk log; the active pack is unchanged",
                error_type=type(exc).__name__,
            )

    def _apply_key_lists(self, source: PackSource, trust: TrustState) -> bool:
        configured = self.installer.settings.configured_keys
        changed = False
        for data in source.key_lists(trust, trust.trusted_keys(configured)):
            changed |= trust.apply_key_list(data, configured)
        return changed

    # -- background --
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pack-sync", daemon=True)
        self._thread.start()

    def trigger(self) -> None:
        """Ask the background loop to sync now (the admin API's "sync now")."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        from .sources.usb import UsbSource

        usb = [s for s in self.sources if isinstance(s, UsbSource)]
        seen = {id(s): s.snapshot() for s in usb}
        next_run = time.monotonic() + (self.interval_s or float("inf"))
        while not self._stop.is_set():
            self._wake.wait(timeout=min(self.usb_poll_s, max(0.0, next_run - time.monotonic())))
            if self._stop.is_set():
                break
            if self._wake.is_set():
                self._wake.clear()
                self.run_once("on demand")
                continue
            for s in usb:
                snap = s.snapshot()
                if snap != seen[id(s)]:
                    seen[id(s)] = snap
                    if snap:
                        self.run_once("usb inserted", sources=[s])
            if time.monotonic() >= next_run:
                self.run_once("scheduled")
                next_run = time.monotonic() + (self.interval_s or float("inf"))


def sources_from_config(cfg: Any, downloads: Path) -> list[PackSource]:
    """The sources [packs] configures: the HTTP channel and/or the USB folder."""
    out: list[PackSource] = []
    p = cfg.packs
    if p.channel_url:
        from .sources.http import HttpChannelSource

        out.append(
            HttpChannelSource(
                p.channel_url,
                p.channel,
                downloads,
                deadline_s=p.download_deadline_s,
                retries=p.http_retries,
                clock_skew_s=p.clock_skew_s,
            )
        )
    if p.usb_mount:
        from .sources.usb import UsbSource

        out.append(UsbSource(p.usb_mount, p.max_pack_bytes))
    return out

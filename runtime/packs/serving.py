"""Packs inside the serving process (`kiosk serve`): one installer, the background sync, the switch.

- The installer is built with the *live* embedder: its binding is that embedder's (model id,
  dim, manifest file hashes), and every pack's smoke questions are re-embedded with it and
  must match the pack's vectors, so a signed pack carrying another model's vectors is
  refused here too, not only at the central side.
- :class:`SyncService` runs in the background on ``[packs] sync_interval_s`` and watches the
  USB folder every ``usb_poll_s``; with no source configured there is no sync at all. Its
  ``status()`` is what ``GET /v1/admin/packs`` shows, and uploads through the admin API use
  the same installer.
- After an install, a pipeline that started on the bundled demo knowledge (no pack yet) is
  pointed at :class:`ActiveKnowledge`, so the next question is answered from the new pack.
  Queries already running finish on the store they hold. A pipeline serving an explicit
  ``--db`` store is left alone.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class PackServing:
    """The serving process's pack machinery; :meth:`stop` on shutdown."""

    def __init__(self, cfg: Any, pipeline: Any, *, follow_active: bool = True) -> None:
        from .install import PackInstaller, packs_dir_for, settings_from_config
        from .sync import SyncService, sources_from_config

        self.cfg = cfg
        self.pipeline = pipeline
        self.follow_active = follow_active
        self.packs_dir = packs_dir_for(cfg)
        embedder = getattr(pipeline, "embedder", None)
        settings = settings_from_config(cfg, kiosk_binding(cfg, embedder))
        settings.embedder = embedder
        self.installer = PackInstaller(self.packs_dir, settings)
        self.installer.on_installed = self._installed
        self._switch_lock = threading.Lock()
        self.retired: list[Any] = []  # stores replaced by the switch, closed at stop()
        p = cfg.packs
        sync = SyncService(
            self.installer, [], interval_s=p.sync_interval_s, usb_poll_s=p.usb_poll_s
        )
        sync.sources = sources_from_config(cfg, sync.downloads)
        self.sync: SyncService | None = sync if sync.sources else None

    def start(self) -> PackServing:
        if self.sync is not None:
            self.sync.start()
            self.sync.trigger()  # once at start: a stick inserted before boot, a missed schedule
            log.info(
                "pack sync running in the background from %s",
                ", ".join(s.name for s in self.sync.sources),
            )
        return self

    def stop(self) -> None:
        if self.sync is not None:
            self.sync.stop()
        for store in self.retired:
            try:
                store.close()
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                log.debug("closing a retired store: %s", exc)
        self.retired.clear()

    def _installed(self, result: Any) -> None:
        """Called by the installer after ACTIVE names a new pack (sync or admin upload)."""
        if not self.follow_active:
            return
        with self._switch_lock:
            store = self.pipeline.store
            if not hasattr(store, "acquire"):  # an ActiveKnowledge switches by itself
                from .active import ActiveKnowledge

                self.pipeline.store = ActiveKnowledge(self.packs_dir)
                self.retired.append(store)  # in-flight queries may still hold it
                log.info("answering from pack %s v%d from now on", result.pack_id, result.version)
            # Answers cached from the old knowledge must not be served again, not even by a
            # fast path that re-checks the version only now and then.
            cache = getattr(self.pipeline, "cache", None)
            version_of = getattr(self.pipeline, "_knowledge_version", None)
            if cache is not None and hasattr(cache, "set_version") and version_of is not None:
                cache.set_version(str(version_of()))


def kiosk_binding(cfg: Any, embedder: Any) -> Any:
    """The binding of the embedder this kiosk actually runs (the configured one when none)."""
    from .binding import binding_for, binding_for_config

    if embedder is None:
        return binding_for_config(cfg)
    return binding_for(embedder.model_id, embedder.dim, cfg.manifest_dir)


def start_pack_serving(cfg: Any, service: Any) -> PackServing | None:
    """Build and start the pack machinery for a built answer Service; None if it cannot run.

    A broken packs configuration must not stop the kiosk from answering: it is logged, and
    the admin API then reports pack management as unavailable.
    """
    from runtime.errors import KioskError

    try:
        follow = str(getattr(service, "knowledge", "")).startswith(("demo knowledge", "pack "))
        return PackServing(cfg, service.pipeline, follow_active=follow).start()
    except (KioskError, OSError) as exc:
        log.warning("pack installer/sync unavailable: %s", exc)
        return None

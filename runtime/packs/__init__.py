"""Signed knowledge packs: format, signing, verification, install/rollback, sources, sync.

See docs/packs.md. The public entry points::

    PackInstaller(packs_dir, settings)     kiosk side: install_file, install_staged, rollback
    ActiveKnowledge(packs_dir)             serving side: acquire() the active store
    SyncService(installer, sources)        background + on-demand sync, status() for the admin API
    build_pack / export_pack / publish     central side
"""

from __future__ import annotations

from .active import ActiveKnowledge
from .install import PackInstaller, PackSettings, packs_dir_for, read_pointer, settings_from_config
from .sync import SyncService, sources_from_config

__all__ = [
    "ActiveKnowledge",
    "PackInstaller",
    "PackSettings",
    "SyncService",
    "packs_dir_for",
    "read_pointer",
    "settings_from_config",
    "sources_from_config",
]

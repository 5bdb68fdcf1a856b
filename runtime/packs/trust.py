"""The trust state: what this kiosk has accepted, so nothing older is ever accepted again.

One small JSON file (``<packs dir>/trust.json``), replaced atomically (rule 2)::

    {"format": 1,
     "packs": {"<pack id>": {"version": 7, "manifest_sha256": "..."}},  # highest ever accepted
     "newest_time": 1763700000,     # newest signed time seen (pack created / index created)
     "index": {"<channel>": 1763700000},  # created time of the newest channel index accepted
     "keyring": null | {"version": 2, "keys": ["ed25519:..."]}}   # accepted rotated key list

Clock policy (rule 7): ``now = max(system clock, newest_time)``, so setting the clock
back never makes an expired pack acceptable again. A missing file is an empty state;
an unreadable one stops installs with a clear error instead of silently trusting anything.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import PackInstallError

from ._fsutil import atomic_write_bytes
from .signing import parse_public_key, read_key_list

TRUST_FILE = "trust.json"


@dataclass
class TrustState:
    packs: dict[str, dict[str, Any]] = field(default_factory=dict)
    newest_time: int = 0
    index: dict[str, int] = field(default_factory=dict)
    keyring: dict[str, Any] | None = None

    # --- persistence ---
    @classmethod
    def load(cls, packs_dir: Path) -> TrustState:
        path = Path(packs_dir) / TRUST_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        try:
            obj = json.loads(raw)
            return cls(
                packs=dict(obj["packs"]),
                newest_time=int(obj["newest_time"]),
                index={str(k): int(v) for k, v in obj.get("index", {}).items()},
                keyring=obj.get("keyring"),
            )
        except (ValueError, KeyError, TypeError):
            raise PackInstallError(
                f"trust state {path} is unreadable",
                hint="restore it from backup; deleting it makes the kiosk accept older packs",
            ) from None

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "format": 1,
                "packs": self.packs,
                "newest_time": self.newest_time,
                "index": self.index,
                "keyring": self.keyring,
            },
            sort_keys=True,
            indent=1,
        ).encode()

    def save(self, packs_dir: Path) -> None:
        atomic_write_bytes(Path(packs_dir) / TRUST_FILE, self.to_bytes())

    # --- queries ---
    def highest(self, pack_id: str) -> tuple[int, str]:
        rec = self.packs.get(pack_id)
        return (int(rec["version"]), str(rec["manifest_sha256"])) if rec else (0, "")

    def now(self, clock: float | None = None) -> int:
        """The clock policy: never earlier than the newest signed time already trusted."""
        return max(int(time.time() if clock is None else clock), self.newest_time)

    def trusted_keys(self, configured: list[str]) -> set[bytes]:
        """The accepted rotated key list when there is one, else the configured keys."""
        keys = self.keyring["keys"] if self.keyring else configured
        return {parse_public_key(k) for k in keys}

    # --- updates (callers save) ---
    def accept_pack(self, pack_id: str, version: int, manifest_sha256: str, created: int) -> None:
        self.packs[pack_id] = {"version": version, "manifest_sha256": manifest_sha256}
        self.newest_time = max(self.newest_time, created)

    def accept_index(self, channel: str, created: int) -> None:
        self.index[channel] = max(self.index.get(channel, 0), created)
        self.newest_time = max(self.newest_time, created)

    def apply_key_list(self, data: bytes, configured: list[str]) -> bool:
        """Adopt a rotated key list when it is newer than the accepted one and signed by a key
        trusted now; True when adopted. A list that is not newer changes nothing (no error:
        old lists linger on sticks and servers after a rotation)."""
        current = self.keyring["version"] if self.keyring else 0
        if read_key_list(data, None)["version"] <= current:
            return False
        parsed = read_key_list(data, self.trusted_keys(configured))
        self.keyring = {"version": parsed["version"], "keys": parsed["keys"]}
        return True

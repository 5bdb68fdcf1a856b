"""An in-memory source: packs as bytes in a dict. For tests of sync and the verifier."""

from __future__ import annotations

import hashlib
import io
import secrets
from pathlib import Path

from runtime.errors import KioskError

from ..format import PACK_MAGIC, manifest_from_bytes, read_envelope
from ..signing import verify_envelope
from ..trust import TrustState
from .base import Offer, PackSource, SourceProgress


class MemorySource(PackSource):
    name = "memory"

    def __init__(
        self, packs: dict[str, bytes] | None = None, key_lists: list[bytes] | None = None
    ) -> None:
        self.packs = dict(packs or {})
        self._key_lists = list(key_lists or [])
        self.rejected: list[str] = []

    def key_lists(self, trust: TrustState, trusted: set[bytes]) -> list[bytes]:
        return list(self._key_lists)

    def offer(self, trust: TrustState, trusted: set[bytes]) -> Offer | None:
        best: Offer | None = None
        self.rejected = []
        for name, data in sorted(self.packs.items()):
            try:
                env = read_envelope(io.BytesIO(data), PACK_MAGIC, what=f"pack {name}")
                verify_envelope(env, trusted, what=f"pack {name}")
                m = manifest_from_bytes(env.body)
            except KioskError as exc:
                self.rejected.append(f"{name}: {exc.message}")
                continue
            if m.version > trust.highest(m.pack_id)[0] and (
                best is None or m.version > best.version
            ):
                best = Offer(
                    self.name,
                    m.pack_id,
                    m.version,
                    len(data),
                    name,
                    manifest_sha256=hashlib.sha256(env.body).hexdigest(),
                )
        return best

    def fetch(self, offer: Offer, downloads: Path, progress: SourceProgress | None = None) -> Path:
        dest = Path(downloads) / f"mem-{secrets.token_hex(4)}.kpack"
        dest.write_bytes(self.packs[offer.ref])
        return dest

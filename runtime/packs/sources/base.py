"""The one interface every pack source implements.

A source answers two questions: "what newer pack do you have?" (:meth:`offer`, cheap,
may read a signed index or a pack header) and "copy it into my staging" (:meth:`fetch`).
The copy is then verified and installed by the same code whatever its source, so a
source only has to be careful about *transport*: caps, deadlines, odd files.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..trust import TrustState

SourceProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Offer:
    source: str
    pack_id: str
    version: int
    length: int  # byte cap for the download (signed index length, or the file size)
    ref: Any  # source-specific: URL path, file name, key
    sha256: str | None = None  # of the whole file, when a signed index says so
    manifest_sha256: str | None = None
    index_created: int | None = None  # created time of the signed index it came from


class PackSource(abc.ABC):
    name: str = "source"

    def key_lists(self, trust: TrustState, trusted: set[bytes]) -> list[bytes]:
        """Rotated key lists this source carries (verified by the caller). Default: none."""
        return []

    @abc.abstractmethod
    def offer(self, trust: TrustState, trusted: set[bytes]) -> Offer | None:
        """The newest pack above what ``trust`` has accepted, or None when there is nothing new."""

    @abc.abstractmethod
    def fetch(self, offer: Offer, downloads: Path, progress: SourceProgress | None = None) -> Path:
        """Copy the offered pack into ``downloads`` (private staging); return the copy's path."""

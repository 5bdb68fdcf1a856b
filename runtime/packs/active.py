"""How the runtime finds and opens the active knowledge base, and switches without dropping queries.

``ActiveKnowledge.acquire()`` is a context manager that yields the store ACTIVE names
now. Each acquire compares ACTIVE's stat (inode, size, mtime) with the last one seen;
when it changed (an install or rollback replaced it), the new store is opened and the
old one is *retired*: queries already holding it finish on it, and it is closed when the
last of them releases it. The file itself is never deleted while open here (the
installer deletes only stores two generations old).

Boot fallback (RELIABILITY.md "Boot"): when the current store is missing or fails to
open, the previous one is used; when both fail, ``acquire()`` yields None and the
answer pipeline falls back to the static FAQ. ``describe()`` says which and why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import KioskError

from .install import ACTIVE_FILE, open_checked, read_pointer

log = logging.getLogger(__name__)


@dataclass
class _Handle:
    store: Any
    entry: dict[str, Any]
    refs: int = 0
    retired: bool = False


class ActiveKnowledge:
    """Thread-safe access to the active pack's store for the serving process."""

    def __init__(
        self,
        packs_dir: Path,
        *,
        opener: Callable[[Path, dict], Any] | None = None,
        check_integrity: bool = True,
    ) -> None:
        self.dir = Path(packs_dir)
        self._opener = opener or (open_checked if check_integrity else _open_plain)
        self._lock = threading.Lock()
        self._handle: _Handle | None = None
        self._stamp: tuple | None = None
        self.using: str = "none"  # "current" | "previous" | "none"
        self.problem: str = ""

    def _pointer_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.dir / ACTIVE_FILE)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _refresh_locked(self) -> None:
        stamp = self._pointer_stamp()
        if stamp == self._stamp and (self._handle is not None or stamp is None):
            return
        self._stamp = stamp
        old = self._handle
        self._handle = None
        self.using, self.problem = "none", ""
        try:
            pointer = read_pointer(self.dir)
        except KioskError as exc:
            pointer, self.problem = {"current": None, "previous": None}, exc.message
        problems = []
        for which in ("current", "previous"):
            entry = pointer[which]
            if not entry:
                continue
            if old is not None and old.entry.get("db") == entry["db"]:
                self._handle, old = old, None  # same file (e.g. pointer rewritten): keep it open
                self.using = which
                break
            try:
                store = self._opener(self.dir / entry["db"], entry)
            except (KioskError, OSError) as exc:
                problems.append(f"{which} pack {entry['pack_id']} v{entry['version']}: {exc}")
                log.error("active knowledge: %s", problems[-1])
                continue
            self._handle = _Handle(store, entry)
            self.using = which
            break
        if problems:
            self.problem = "; ".join(problems)
        if old is not None:
            old.retired = True
            if old.refs == 0:
                old.store.close()

    @contextlib.contextmanager
    def acquire(self) -> Iterator[Any]:
        """Yield the active store (or None when no pack works); it stays open until the block ends."""  # noqa: E501
        with self._lock:
            self._refresh_locked()
            handle = self._handle
            if handle is not None:
                handle.refs += 1
        try:
            yield None if handle is None else handle.store
        finally:
            if handle is not None:
                with self._lock:
                    handle.refs -= 1
                    if handle.retired and handle.refs == 0:
                        handle.store.close()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            self._refresh_locked()
            entry = self._handle.entry if self._handle else None
            return {
                "using": self.using,
                "pack_id": entry and entry["pack_id"],
                "version": entry and entry["version"],
                "problem": self.problem,
            }

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.retired = True
                if self._handle.refs == 0:
                    self._handle.store.close()
                self._handle = None
            self._stamp = None


def _open_plain(db: Path, entry: dict[str, Any]) -> Any:
    from runtime.knowledge.store import KnowledgeStore

    emb = entry["embedding"]
    return KnowledgeStore.open(
        db, embedding_model=emb["model_id"], dim=emb["dim"], create=False, readonly=True
    )

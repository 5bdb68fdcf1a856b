"""The one place that opens SQLite for the knowledge store.

It picks a driver that can load extensions, loads sqlite-vec and sets the
pragmas every connection needs. Python's own ``sqlite3`` is used when it was
built with extension loading; many interpreters (this project's build box
included) lack it, so ``apsw`` — which bundles a current SQLite with FTS5 and
extension loading — is the fallback. Both are wrapped in :class:`Connection`,
a deliberately small API (execute / executemany / transaction), so the rest of
the store never sees which driver runs.

Pragmas: WAL (readers never block the writer), ``synchronous=NORMAL`` (durable
at checkpoints, safe with WAL against application crashes), foreign keys on, a
busy timeout so a second process waits instead of failing, and a memory map so
reads come straight from the page cache.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from runtime.errors import StoreCorruptError, StoreOpenError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
MMAP_BYTES = 256 * 1024 * 1024
CACHE_KIB = 32 * 1024


def _stdlib_can_load_extensions() -> bool:
    import sqlite3

    return hasattr(sqlite3.Connection, "enable_load_extension")


def available_driver() -> str:
    """``"sqlite3"`` when the stdlib can load extensions, else ``"apsw"``; raises if neither."""
    if _stdlib_can_load_extensions():
        return "sqlite3"
    if importlib.util.find_spec("apsw") is not None:
        return "apsw"
    raise StoreOpenError(
        "this Python's sqlite3 cannot load extensions (sqlite-vec) and apsw is not installed",
        hint="pip install apsw (or use a Python built with SQLite extension loading)",
    )


class Connection:
    """A driver-neutral SQLite connection: autocommit, explicit transactions, tuple rows.

    Thread-safe for the store's use: every statement runs under one re-entrant
    lock, and :meth:`transaction` holds it for the whole transaction.
    """

    def __init__(self, raw: Any, driver: str, path: Path, readonly: bool) -> None:
        self.raw = raw
        self.driver = driver
        self.path = path
        self.readonly = readonly
        self.lock = threading.RLock()
        self._depth = 0
        if driver == "apsw":
            import apsw

            self.Error: type[Exception] = apsw.Error
        else:
            import sqlite3

            self.Error = sqlite3.Error

    # -- statements ------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement and return all rows (lists are fine: the store pages with LIMIT)."""
        with self.lock:
            return list(self.raw.execute(sql, tuple(params)))

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple]:
        """Stream rows of a long query (iter_chunks over 100k rows). No writes while iterating."""
        with self.lock:
            cursor = self.raw.cursor()
            rows_iter = iter(cursor.execute(sql, tuple(params)))
        while True:
            with self.lock:
                rows = list(itertools.islice(rows_iter, 512))
            if not rows:
                return
            yield from rows

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.lock:
            self.raw.executemany(sql, rows)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    @contextlib.contextmanager
    def transaction(self, immediate: bool = True) -> Iterator[Connection]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception; nested calls join the outer."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self.raw.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                with contextlib.suppress(Exception):
                    self.raw.execute("ROLLBACK")
                raise
            self._depth = 0
            self.raw.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            if self.raw is not None:
                self.raw.close()
                self.raw = None


def is_corruption(exc: BaseException) -> bool:
    """True when a driver error means "this file is not a (healthy) SQLite database"."""
    name = type(exc).__name__
    text = str(exc).lower()
    return (
        name in {"NotADBError", "CorruptError"} or "not a database" in text or "malformed" in text
    )


def _open_raw(path: Path, driver: str, *, create: bool, readonly: bool) -> Any:
    if driver == "apsw":
        import apsw

        flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
        if create and not readonly:
            flags |= apsw.SQLITE_OPEN_CREATE
        raw = apsw.Connection(str(path), flags=flags)
        raw.enable_load_extension(True)
        return raw
    import sqlite3

    mode = "ro" if readonly else ("rwc" if create else "rw")
    raw = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode={mode}",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    raw.enable_load_extension(True)
    return raw


def open_connection(
    path: Path, *, create: bool = True, readonly: bool = False, driver: str | None = None
) -> Connection:
    """Open ``path`` with sqlite-vec loaded and the store's pragmas set.

    Raises :class:`StoreOpenError` when the file is missing (and ``create`` is
    false) or cannot be opened, :class:`StoreCorruptError` when it is not an
    SQLite database.
    """
    import sqlite_vec

    driver = driver or available_driver()
    path = Path(path)
    if not path.exists() and (readonly or not create):
        raise StoreOpenError(
            f"knowledge store {path} does not exist",
            hint="run `kiosk ingest` or install a knowledge pack first, or check [knowledge] "
            "database",
        )
    if not readonly and create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        raw = _open_raw(path, driver, create=create, readonly=readonly)
    except Exception as exc:  # driver-specific exception classes
        raise StoreOpenError(
            f"cannot open knowledge store {path}: {exc}", hint="check the path and its permissions"
        ) from exc
    conn = Connection(raw, driver, path, readonly)
    try:
        raw.load_extension(sqlite_vec.loadable_path())
        raw.enable_load_extension(False)
        # The first real read: a non-database file fails here.
        conn.execute("SELECT count(*) FROM sqlite_master")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute("PRAGMA temp_store = MEMORY")
    except Exception as exc:
        conn.close()
        if is_corruption(exc):
            raise StoreCorruptError(
                f"knowledge store {path} is not a valid SQLite database ({exc})",
                hint="delete the file and ingest again, or reinstall the knowledge pack",
            ) from exc
        raise StoreOpenError(
            f"cannot prepare knowledge store {path}: {exc}", hint="check the file and its folder"
        ) from exc
    log.debug("opened %s with %s (sqlite-vec loaded, readonly=%s)", path, driver, readonly)
    return conn

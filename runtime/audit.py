"""The audit log: every answered turn, redacted, in SQLite that survives a power cut.

Why SQLite with WAL and ``synchronous=FULL``: a kiosk is switched off at the wall.
A committed turn must be on disk (FULL syncs the WAL on every commit) and a
kill -9 or power loss in the middle of a write must leave a readable database
that lost at most the turns not yet committed. One writer thread owns the
connection; turns queued while it commits are written together in the next
transaction (group commit), so a crowd costs one fsync per batch, not per turn.

Privacy: phone numbers, Chinese ID card numbers, bank card numbers (Luhn-valid)
and e-mail addresses are replaced by placeholders in *every* text field before
anything reaches the database or a log line (:func:`redact`). Retention is in
days (``[audit] retention_days``); :meth:`AuditLog.purge` drops older turns and
:meth:`AuditLog.export_jsonl` writes turns as JSON lines for a central system.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import AuditError

log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 8000  # a turn's text fields are cut to this before redaction and storage
SCHEMA_VERSION = 1

# --- redaction ------------------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})+")
# 18-digit mainland ID card number (last char a digit or the X checksum),
# not part of a longer number.
_CN_ID = re.compile(
    r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9A-Za-z])"
)
# Any 18-character digit run ending in X is also treated as an ID
# (a mistyped birth date is still PII).
_CN_ID_LOOSE = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
# 13-19 digits, optionally grouped by single spaces or dashes
# (bank cards are printed in groups of 4).
_CARD = re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)")
# Phones: CN mobile (optionally +86/0086), CN landline with area code, international +CC numbers.
_PHONE = re.compile(
    r"(?<![\d+])(?:"
    r"(?:\+|00)86[ \-]?1[3-9]\d(?:[ \-]?\d{4}){2}"  # +86 138 0013 8000
    r"|1[3-9]\d(?:[ \-]?\d{4}){2}"  # 138 0013 8000 / 13800138000
    r"|0\d{2,3}[ \-]?\d{7,8}"  # 010-12345678
    r"|\(0\d{2,3}\)[ \-]?\d{7,8}"  # (021) 12345678
    r"|\+[1-9]\d{0,2}(?:[ \-.]?\(?\d{1,4}\)?){2,5}"  # +44 20 7946 0958, +1 (415) 555-2671
    r")(?!\d)"
)


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum used by bank cards."""
    total, double = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if double:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        double = not double
    return total % 10 == 0


def _card_sub(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return "[CARD]"
    return m.group(0)


def _phone_sub(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "[PHONE]" if 7 <= len(digits) <= 15 else m.group(0)


def redact(text: str) -> str:
    """Replace personal data in ``text`` by ``[EMAIL]``, ``[ID]``, ``[CARD]``, ``[PHONE]``.

    Order matters: e-mails first (they contain digits), then ID numbers (18 chars, may
    pass Luhn by chance), then card numbers, then phone numbers.
    """
    if not text:
        return text
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CN_ID.sub("[ID]", text)
    text = _CN_ID_LOOSE.sub("[ID]", text)
    text = _CARD.sub(_card_sub, text)
    text = _PHONE.sub(_phone_sub, text)
    return text


def redact_obj(obj: Any, _redact=redact) -> Any:
    """:func:`redact` applied to every string inside dicts/lists/tuples."""
    if isinstance(obj, str):
        return _redact(obj[:MAX_FIELD_CHARS])
    if isinstance(obj, dict):
        return {str(k): redact_obj(v, _redact) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, _redact) for v in obj]
    return obj


@functools.lru_cache(maxsize=2048)
def _redact_memo(text: str) -> str:
    return redact(text)


def redact_known(text: str) -> str:
    """:func:`redact`, memoised for answer text and sources: a crowd gets the same few answers.

    Only text that came from the knowledge (answers, quoted passages) goes through the memo,
    never visitor questions, so the memo holds no visitor's personal data.
    """
    if len(text) > 4000:
        return redact(text)
    return _redact_memo(text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message (attach it to a handler or logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is the logger's problem, not ours
            return True
        red = redact(msg)
        if red != msg:
            record.msg, record.args = red, None
        return True


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (for log shippers), personal data redacted, trace id as a field.

    Log calls pass the turn's trace id as ``extra={"trace_id": ...}``; the service's turn log
    lines do. Meant for ``[logging] json_lines = true`` (``runtime.cli.setup_logging``).
    """

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        trace = getattr(record, "trace_id", None)
        if trace:
            out["trace_id"] = str(trace)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


# --- records --------------------------------------------------------------------------


@dataclass
class TurnRecord:
    """One audited turn. Text fields are redacted by :meth:`AuditLog.record`, not here."""

    question: str
    answer: str
    path: str
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    sources: list[dict[str, Any]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    language: str = ""
    degraded: bool = False
    channel: str = ""  # "kiosk", "openai", "voice"
    client: str = ""  # "loopback" or "remote" (never the address: that is personal data too)
    experiment_id: str = ""
    ts: float = field(default_factory=time.time)

    @classmethod
    def from_answer(
        cls, answer: Any, *, degraded: bool = False, channel: str = "", client: str = ""
    ) -> TurnRecord:
        """From a :class:`runtime.answer.types.Answer` (or anything with the same fields)."""
        sources = []
        for s in getattr(answer, "sources", []) or []:
            sources.append(
                {n: getattr(s, n) for n in s.__dataclass_fields__}
                if hasattr(s, "__dataclass_fields__")
                else dict(s)
            )
        return cls(
            question=getattr(answer, "question", ""),
            answer=getattr(answer, "text", ""),
            path=getattr(answer, "path", ""),
            trace_id=getattr(answer, "trace_id", "") or uuid.uuid4().hex[:16],
            sources=sources,
            timings_ms=dict(getattr(answer, "timings_ms", {}) or {}),
            language=getattr(answer, "language", ""),
            degraded=degraded,
            channel=channel,
            client=client,
            experiment_id=getattr(answer, "experiment_id", ""),
        )


@dataclass(frozen=True)
class _PendingAnswer:
    """An answer queued for the audit log; turned into a :class:`TurnRecord` by the writer."""

    answer: Any
    degraded: bool
    channel: str
    client: str
    ts: float

    @property
    def trace_id(self) -> str:
        return str(getattr(self.answer, "trace_id", ""))

    def build(self) -> TurnRecord:
        rec = TurnRecord.from_answer(
            self.answer, degraded=self.degraded, channel=self.channel, client=self.client
        )
        rec.ts = self.ts
        return rec


_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    trace_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    client TEXT NOT NULL,
    language TEXT NOT NULL,
    path TEXT NOT NULL,
    degraded INTEGER NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    sources TEXT NOT NULL,
    timings TEXT NOT NULL,
    experiment_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_ts ON turns(ts);
CREATE INDEX IF NOT EXISTS turns_path ON turns(path, ts);
"""

_COLUMNS = (
    "id",
    "ts",
    "trace_id",
    "channel",
    "client",
    "language",
    "path",
    "degraded",
    "question",
    "answer",
    "sources",
    "timings",
    "experiment_id",
)


def _row(rec: TurnRecord) -> tuple:
    return (
        rec.ts,
        rec.trace_id[:64],
        rec.channel[:32],
        rec.client[:32],
        rec.language[:8],
        rec.path[:32],
        1 if rec.degraded else 0,
        redact(rec.question[:MAX_FIELD_CHARS]),
        redact_known(rec.answer[:MAX_FIELD_CHARS]),
        _json_text(redact_obj(rec.sources, redact_known)),
        _json_text({str(k): float(v) for k, v in rec.timings_ms.items()}),
        rec.experiment_id[:128],
    )


try:
    import orjson as _orjson
except ImportError:  # optional: the standard library writes the same JSON, slower
    _orjson = None


def _json_text(obj: Any) -> str:
    if _orjson is not None:
        try:
            return _orjson.dumps(obj).decode()
        except TypeError:
            pass
    return json.dumps(obj, ensure_ascii=False)


def _as_dict(row: tuple) -> dict[str, Any]:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["degraded"] = bool(d["degraded"])
    d["sources"] = json.loads(d["sources"])
    d["timings_ms"] = json.loads(d.pop("timings"))
    return d


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with full sync; raises :class:`AuditError` naming the file."""
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(path), check_same_thread=False, timeout=10, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("SELECT count(*) FROM turns").fetchone()
    except sqlite3.DatabaseError as exc:
        raise AuditError(
            f"audit log {path} cannot be opened: {exc}",
            hint=(
                "check the file's permissions; "
                "a corrupt log can be moved aside and a new one is created"
            ),
        ) from exc
    return conn


class AuditLog:
    """The writer: :meth:`record` queues a turn; a thread commits queued turns together.

    The writer gathers turns for at most ``commit_interval_s`` (10 ms) after the first one
    before committing: one fsync costs about 0.3 ms of CPU, so a commit per turn at a few
    hundred turns/s cost more CPU than answering them. A caller that waits (``wait=True``,
    :meth:`flush`) is committed at once. On kill -9 what is lost is what was queued and not
    yet committed: the turn in flight, or the turns of the last 10 ms under a crowd.

    ``record(..., wait=True)`` returns only once the turn is committed (used where a caller
    must know, e.g. tests and the kill -9 check). ``max_pending`` bounds memory: when the
    disk cannot keep up, new turns are dropped and counted (``dropped``), never blocking answers.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = 90.0,
        max_pending: int = 10_000,
        max_batch: int = 500,
        commit_interval_s: float = 0.01,
    ) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.max_batch = max_batch
        self.commit_interval_s = commit_interval_s
        self._conn = connect(self.path)
        self._queue: queue.Queue[tuple[TurnRecord | None, threading.Event | None] | None] = (
            queue.Queue(max_pending)
        )
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self.commits = 0
        self._closed = False
        self.purge()
        self._thread = threading.Thread(target=self._writer, name="kiosk-audit", daemon=True)
        self._thread.start()

    # -- writing ------------------------------------------------------------------------
    def record(self, rec: TurnRecord, *, wait: bool = False, timeout: float = 10.0) -> bool:
        """Queue (and with ``wait`` commit) one turn.

        False when it was dropped or not committed in time.
        """
        if self._closed:
            return False
        done = threading.Event() if wait else None
        try:
            self._queue.put_nowait((rec, done))
        except queue.Full:
            self.dropped += 1
            log.warning("audit queue full: turn %s not logged", rec.trace_id)
            return False
        return done.wait(timeout) if done is not None else True

    def record_answer(
        self, answer: Any, *, degraded: bool = False, channel: str = "", client: str = ""
    ) -> bool:
        """Queue one turn from an answer without waiting; the :class:`TurnRecord` is built by the
        writer thread, so the caller (the service's event loop) pays only for the queue put.

        The same queue as :meth:`record`, so the same guarantee on kill -9: what is lost is
        what was answered but not yet committed.
        """
        return self.record(_PendingAnswer(answer, degraded, channel, client, time.time()))

    def _writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            urgent = item[1] is not None  # someone waits for this commit: no gathering
            until = time.monotonic() + self.commit_interval_s
            while len(batch) < self.max_batch:
                left = until - time.monotonic()
                try:
                    if urgent or left <= 0:
                        nxt = self._queue.get_nowait()
                    else:
                        nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    self._commit(batch)
                    return
                batch.append(nxt)
                urgent = urgent or nxt[1] is not None
            self._commit(batch)

    def _commit(self, batch: list[tuple[TurnRecord | None, threading.Event | None]]) -> None:
        try:
            rows = []
            for rec, _ in batch:
                if rec is None:
                    continue
                try:
                    rows.append(_row(rec.build() if isinstance(rec, _PendingAnswer) else rec))
                except Exception:  # noqa: BLE001 - one malformed answer must not lose the batch
                    self.failed += 1
                    log.exception("audit record not built")
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT INTO turns(ts, trace_id, channel, client, language, path, degraded, "
                "question, answer, "
                "sources, timings, experiment_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self._conn.execute("COMMIT")
            self.written += len(rows)
            self.commits += 1
        except Exception:  # noqa: BLE001 - a full disk must not stop answering
            self.failed += len(batch)
            log.exception("audit write of %d turns failed", len(batch))
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        finally:
            for _, ev in batch:
                if ev is not None:
                    ev.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every turn queued before this call is committed."""
        done = threading.Event()
        try:
            self._queue.put((None, done), timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._conn.close()

    # -- reading and maintenance ----------------------------------------------------------
    def purge(self, older_than_days: float | None = None, *, now: float | None = None) -> int:
        """Delete turns older than the retention (or ``older_than_days``); returns how many."""
        days = self.retention_days if older_than_days is None else older_than_days
        if days <= 0:
            return 0
        return purge_file(self._conn, days, now=now)

    def recent(
        self, *, limit: int = 50, paths: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        return recent(self._conn, limit=limit, paths=paths)


def purge_file(conn: sqlite3.Connection, days: float, *, now: float | None = None) -> int:
    cutoff = (time.time() if now is None else now) - days * 86400
    cur = conn.execute("DELETE FROM turns WHERE ts < ?", (cutoff,))
    return cur.rowcount


def recent(
    conn: sqlite3.Connection, *, limit: int = 50, paths: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The newest turns (optionally only those answered by the given paths), newest first."""
    limit = max(1, min(int(limit), 1000))
    if paths:
        paths = list(paths)
        marks = ",".join("?" * len(paths))
        rows = conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM turns WHERE path IN ({marks}) "
            "ORDER BY ts DESC, id DESC LIMIT ?",
            (*paths, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM turns ORDER BY ts DESC, id DESC LIMIT ?", (limit,)
        ).fetchall()
    return [_as_dict(r) for r in rows]


def iter_turns(
    conn: sqlite3.Connection, *, since: float | None = None, until: float | None = None
) -> Iterator[dict]:
    q = f"SELECT {', '.join(_COLUMNS)} FROM turns WHERE ts >= ? AND ts < ? ORDER BY id"
    for row in conn.execute(q, (since or 0.0, until or float("inf"))):
        yield _as_dict(row)


def export_jsonl(db: Path, out, *, since: float | None = None, until: float | None = None) -> int:
    """Write turns (already redacted at write time) as one JSON object per line; returns the count.

    Text is redacted once more on the way out, so a log written by an older, weaker
    redactor never leaves the box with personal data the current one would catch.
    """
    if not Path(db).is_file():
        raise AuditError(
            f"audit log {db} does not exist",
            hint="check [audit] path / [paths] data_dir; the log is created by `kiosk serve`",
        )
    conn = connect(Path(db), readonly=True)
    n = 0
    try:
        for turn in iter_turns(conn, since=since, until=until):
            turn = redact_obj(turn)
            out.write(json.dumps(turn, ensure_ascii=False) + "\n")
            n += 1
    finally:
        conn.close()
    return n

"""Ordered, named schema migrations for the knowledge store, recorded in ``schema_migrations``.

Each migration runs once, in order, inside its own transaction together with
the row that records it, so a crash leaves the file either before or after a
migration, never half-way. A file whose recorded migrations go beyond what this
runtime knows was written by newer software: it is refused rather than guessed
at. Add a migration by appending to :data:`MIGRATIONS`; never edit or reorder
released ones.

Vectors are stored twice on purpose: as float32 BLOBs in ``chunks`` /
``faq_questions`` (a plain table scan loads 100k of them for the numpy index
~7x faster than a ``vec0`` scan) and in ``vec0`` tables (sqlite-vec's own kNN
with metadata filters). ``integrity_check`` verifies they agree.

Virtual tables (FTS5, sqlite-vec ``vec0``) take their tokenizer and vector
dimension from the :class:`MigrationContext`, which the store fills from its
``store_meta`` table (or from the caller when the file is new).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass

from runtime.errors import StoreReadOnlyError, StoreVersionError

from .connection import Connection


@dataclass(frozen=True)
class MigrationContext:
    embedding_model: str
    dim: int
    fts_scheme: str  # one of text.FTS_SCHEMES


def _fts_tokenizer(scheme: str) -> str:
    # jieba/bigram text arrives pre-segmented with spaces; unicode61 splits on them,
    # Porter stems English.
    return "trigram" if scheme == "trigram" else "porter unicode61 remove_diacritics 2"


def _m001_initial(conn: Connection, ctx: MigrationContext) -> None:
    tok = _fts_tokenizer(ctx.fts_scheme)
    now = _now()
    for sql in (
        "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            source_path TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            language TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            category TEXT NOT NULL DEFAULT '',
            pack_id TEXT NOT NULL DEFAULT '',
            pack_version INTEGER NOT NULL DEFAULT 0,
            meta TEXT NOT NULL DEFAULT '{}',
            added_at TEXT NOT NULL
        )""",
        "CREATE INDEX documents_hash ON documents (content_hash)",
        """CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            doc_id INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            text TEXT NOT NULL,
            section_path TEXT NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            page INTEGER,
            language TEXT NOT NULL,
            embedding BLOB NOT NULL
        )""",
        "CREATE INDEX chunks_doc ON chunks (doc_id, ordinal)",
        f"CREATE VIRTUAL TABLE chunks_fts USING fts5 (heading, body, tokenize = '{tok}')",
        # Headings weigh double; `ORDER BY rank` then uses this BM25 and stays on FTS5's fast path.
        "INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('rank', 'bm25(2.0, 1.0)')",
        f"""CREATE VIRTUAL TABLE chunk_vectors USING vec0 (
            embedding float[{int(ctx.dim)}] distance_metric=cosine,
            language text, category text, pack_id text
        )""",
        """CREATE TABLE faq_entries (
            id INTEGER PRIMARY KEY,
            faq_id TEXT NOT NULL UNIQUE,
            answer TEXT NOT NULL,
            language TEXT NOT NULL,
            category TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            pack_id TEXT NOT NULL DEFAULT '',
            pack_version INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE faq_questions (
            id INTEGER PRIMARY KEY,
            entry_id INTEGER NOT NULL REFERENCES faq_entries (id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            question TEXT NOT NULL,
            normalized TEXT NOT NULL,
            embedding BLOB NOT NULL
        )""",
        "CREATE INDEX faq_questions_normalized ON faq_questions (normalized)",
        "CREATE INDEX faq_questions_entry ON faq_questions (entry_id)",
        f"CREATE VIRTUAL TABLE faq_fts USING fts5 (body, tokenize = '{tok}')",
        f"CREATE VIRTUAL TABLE faq_vectors USING vec0 (embedding float[{int(ctx.dim)}] "
        "distance_metric=cosine)",
    ):
        conn.execute(sql)
    conn.executemany(
        "INSERT INTO store_meta (key, value) VALUES (?, ?)",
        [
            ("embedding_model", ctx.embedding_model),
            ("dim", str(int(ctx.dim))),
            ("fts_scheme", ctx.fts_scheme),
            ("generation", "0"),
            ("created_at", now),
        ],
    )


Migration = tuple[str, Callable[[Connection, MigrationContext], None]]

# Append only. The position (1-based) is the schema version.
MIGRATIONS: list[Migration] = [
    ("initial: documents, chunks, FTS5, vec0, FAQ", _m001_initial),
]

SCHEMA_VERSION = len(MIGRATIONS)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def applied_version(conn: Connection) -> int:
    """The highest applied migration, 0 for a fresh file."""
    exists = conn.scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    )
    if not exists:
        return 0
    return int(conn.scalar("SELECT coalesce(max(version), 0) FROM schema_migrations"))


def migrate(conn: Connection, ctx: MigrationContext) -> int:
    """Apply every pending migration in order; return the schema version now in the file."""
    current = applied_version(conn)
    if current > SCHEMA_VERSION:
        raise StoreVersionError(
            f"knowledge store {conn.path} has schema version {current}; this runtime knows up "
            f"to {SCHEMA_VERSION}",
            hint="update kiosk-assistant, or rebuild the store with this version",
        )
    if current == SCHEMA_VERSION:
        return current
    if conn.readonly:
        raise StoreReadOnlyError(
            f"knowledge store {conn.path} needs migrating from schema {current} to "
            f"{SCHEMA_VERSION} "
            "but was opened read-only",
            hint="open it once read-write (e.g. `kiosk ingest`), or rebuild it",
        )
    if current == 0:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        name, apply = MIGRATIONS[version - 1]
        with conn.transaction():
            if applied_version(conn) >= version:  # another process migrated while we waited
                continue
            apply(conn, ctx)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, _now()),
            )
    return SCHEMA_VERSION

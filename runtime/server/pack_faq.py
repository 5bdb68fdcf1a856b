"""Exact matches against the active knowledge pack's FAQ, answerable on the event loop.

The pipeline finds a pack FAQ entry by asking the knowledge store (SQLite, under the
pipeline's store lock, after embedding the question), so without this a pack FAQ question
waits for a pipeline worker — behind generation. But the store's own first rule is an exact
match of the normalised question (``faq_questions.normalized``, see
``KnowledgeStore.match_faq``), and that needs no model: this module keeps that rule as an
in-memory dict built from the store, so the service's fast path answers such questions in
microseconds, the same answer the pipeline would give.

The dict is (re)built off the event loop, in a short-lived thread, when the knowledge
version changes (a pack install or rollback, or a re-ingest), checked at most every
``check_every_s`` while questions arrive. Until the first build finishes the fast path just
falls through to the pipeline. The same check moves the answer cache to the new knowledge
version, so cache hits on the fast path never outlive a pack switch by more than that either.
And whenever the cache's version is not the one the table was built for (the pipeline or the
pack installer moved it already), the table is not used: after a switch made through the
installer, no old FAQ answer is served at all.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_QUESTIONS = 500_000  # a pack larger than this is not indexed (the pipeline still answers)


@dataclass(frozen=True)
class PackFaqEntry:
    """What the pipeline puts into an FAQ answer's one source."""

    faq_id: str
    matched_question: str
    answer: str
    source: str
    pack_id: str
    pack_version: int


class PackFaqIndex:
    """``lookup(normalized_question, language)`` → the pack FAQ entry the store matches exactly."""

    def __init__(self, pipeline: Any, *, check_every_s: float = 1.0) -> None:
        self.pipeline = pipeline
        self._cache = getattr(pipeline, "cache", None)
        self.check_every_s = check_every_s
        self._map: dict[tuple[str, str], PackFaqEntry] = {}
        self._version: str | None = None  # knowledge version the map was built from
        self._next_check = 0.0
        self._busy = threading.Lock()
        self.builds = 0
        self.ready = threading.Event()  # set after the first build (tests and warm-up wait on it)

    def lookup(self, normalized: str, language: str) -> PackFaqEntry | None:
        """Never blocks: a missing or stale index answers None or the last version's entry."""
        if time.monotonic() >= self._next_check:
            self.refresh_soon()
        cache = self._cache
        if cache is not None and getattr(cache, "version", self._version) != self._version:
            # The answer cache already moved to other knowledge (the pipeline saw it, or the
            # pack installer told it): this table is older, so the pipeline answers until the
            # next rebuild.
            return None
        return self._map.get((normalized, language))

    def refresh_soon(self) -> None:
        """Check the knowledge version in a background thread (at most one at a time)."""
        if not self._busy.acquire(blocking=False):
            return
        self._next_check = time.monotonic() + self.check_every_s
        threading.Thread(target=self._refresh, name="kiosk-faq-index", daemon=True).start()

    def refresh(self) -> None:
        """Check (and rebuild) now, in the calling thread."""
        with self._busy:
            self._next_check = time.monotonic() + self.check_every_s
            self._check()

    def _refresh(self) -> None:
        try:
            self._check()
        finally:
            self._busy.release()

    def _check(self) -> None:
        p = self.pipeline
        try:
            version_of = getattr(p, "knowledge_version", None)
            version = str(version_of()) if version_of is not None else "static"
        except Exception as exc:  # noqa: BLE001 - unreadable store: serve nothing from it
            log.debug("knowledge version unknown: %s", exc)
            self._map, self._version = {}, None
            self.ready.set()
            return
        if version == self._version:
            self.ready.set()
            return
        cache = getattr(p, "cache", None)
        if cache is not None and hasattr(cache, "set_version"):
            cache.set_version(
                version
            )  # old cache entries must not outlive the switch on the fast path
        try:
            self._map = self._build()
        except Exception as exc:  # noqa: BLE001 - the pipeline still answers through the store
            log.warning("pack FAQ index not built: %s", exc)
            self._map = {}
        self._version = version
        self.builds += 1
        self.ready.set()

    def _build(self) -> dict[tuple[str, str], PackFaqEntry]:
        import contextlib

        from runtime.knowledge.text import normalize

        p = self.pipeline
        store = getattr(p, "store", None)
        if store is None:
            return {}
        lock = getattr(p, "store_lock", None) or contextlib.nullcontext()
        acquire = store.acquire() if hasattr(store, "acquire") else contextlib.nullcontext(store)
        out: dict[tuple[str, str], PackFaqEntry] = {}
        with acquire as s:
            if s is None or not hasattr(s, "iter_faq"):
                return {}
            with lock:
                records = [rec for rec, _ in s.iter_faq()]
        n = 0
        for rec in records:  # entries by id, questions by ordinal: the store's "ORDER BY q.id"
            for q in rec.questions:
                n += 1
                if n > MAX_QUESTIONS:
                    log.warning("pack FAQ over %d questions: exact fast path off", MAX_QUESTIONS)
                    return {}
                key = (normalize(q), rec.language)
                if key[0] and key not in out:
                    out[key] = PackFaqEntry(
                        rec.faq_id, q, rec.answer, rec.source, rec.pack_id, int(rec.pack_version)
                    )
        return out

"""Answer cache: exact and near-duplicate questions, keyed by the active knowledge version.

A kiosk hears the same few questions all day; answering them from memory costs
microseconds and frees the generator. Entries are keyed by the normalised
question *and* the knowledge version (pack id + version, or the store's content
generation), so installing a pack makes every old entry unreachable; the
pipeline also calls :meth:`AnswerCache.clear` when it sees the version change.
Near-duplicates ("opening hours?" / "what are the opening hours") match when
their question vectors are closer than ``near_threshold`` and in the same
language. Bounded LRU: memory stays fixed whatever visitors type.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .types import Answer


@dataclass
class _Entry:
    answer: Answer
    vector: np.ndarray | None
    language: str


class AnswerCache:
    def __init__(self, max_entries: int = 512, near_threshold: float = 0.95) -> None:
        self.max_entries = max_entries
        self.near_threshold = near_threshold
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._version = ""
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def version(self) -> str:
        """The knowledge version entries are kept for."""
        return self._version

    def set_version(self, version: str) -> None:
        """Drop everything when the knowledge version changes."""
        with self._lock:
            if version != self._version:
                self._entries.clear()
                self._version = version

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, key: str, vector: np.ndarray | None, language: str) -> tuple[Answer, str] | None:
        """(answer, "exact"|"near") or None."""
        with self._lock:
            entry = self._entries.get((self._version, key))
            if entry is not None and entry.language == language:
                self._entries.move_to_end((self._version, key))
                self.hits += 1
                return entry.answer, "exact"
            if vector is not None and self._entries:
                best, best_key = -1.0, None
                for k, e in self._entries.items():
                    if k[0] != self._version or e.vector is None or e.language != language:
                        continue
                    sim = float(e.vector @ vector)
                    if sim > best:
                        best, best_key = sim, k
                if best_key is not None and best >= self.near_threshold:
                    self._entries.move_to_end(best_key)
                    self.hits += 1
                    return self._entries[best_key].answer, "near"
            if vector is not None:
                self.misses += 1  # a lookup without a vector is only the exact pre-check
            return None

    def put(self, key: str, vector: np.ndarray | None, language: str, answer: Answer) -> None:
        if not key:
            return
        with self._lock:
            k = (self._version, key)
            self._entries[k] = _Entry(
                answer, None if vector is None else np.asarray(vector, np.float32), language
            )
            self._entries.move_to_end(k)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

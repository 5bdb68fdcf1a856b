"""Exact k-nearest-neighbour search over the store's vectors with numpy.

The sqlite-vec wheel is built without AVX, so its float brute force is ~4× slower
than a BLAS matrix-vector product over the same vectors (measured in
scripts/bench/retrieval.py). The store therefore keeps a float32 copy of its
vectors in memory, L2-normalised so cosine similarity is one ``sgemv``, and
answers exact kNN here. SQLite (the ``vec0`` tables) stays the only source of
truth: the copy is rebuilt from it whenever the store's ``generation`` counter
moves, and sqlite-vec's own kNN remains available (``vector_backend=
"sqlite-vec"``) as the reference the benchmark and tests compare against.

Metadata filters (language, category, pack) are per-row integer codes, turned
into a boolean mask, so a filtered search is still one pass over the matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

BLAS_MIN_ROWS = 50_000  # from here on BLAS's product wins even with the other core busy


def similarities(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``matrix @ q``: numpy's own single-threaded SIMD loop below BLAS_MIN_ROWS, BLAS above.

    A matrix-vector product is memory bound, so a second BLAS thread buys
    little, and OpenBLAS threads busy-wait for each other: on a loaded 2-core
    box (the generator running beside retrieval) a 2,000-row product took 24-32
    ms through multi-threaded BLAS and 0.2 ms through ``einsum``; at 100k rows
    the two were equal (see docs/knowledge.md). Single-threaded is also
    predictable and leaves the other core to the generator. From about 50k rows
    the product is long enough for BLAS to pay off (idle box, 100k x 512:
    10.3 ms through BLAS against 12.5 ms through ``einsum``; equal under load).
    """
    if matrix.shape[0] >= BLAS_MIN_ROWS:
        return matrix @ q
    return np.einsum("ij,j->i", matrix, q)


@dataclass
class Attribute:
    """One categorical column per row, stored as codes into ``values``."""

    codes: np.ndarray  # int32, one per row
    values: list[str]

    @classmethod
    def from_strings(cls, items: Sequence[str]) -> Attribute:
        values, codes = np.unique(np.asarray(items, dtype=object).astype(str), return_inverse=True)
        return cls(codes=codes.astype(np.int32), values=[str(v) for v in values])

    def mask(self, wanted: Iterable[str]) -> np.ndarray:
        lookup = {v: i for i, v in enumerate(self.values)}
        wanted_codes = [lookup[w] for w in wanted if w in lookup]
        return np.isin(self.codes, np.asarray(wanted_codes, dtype=np.int32))


@dataclass
class VectorIndex:
    """Row-normalised float32 matrix + the SQLite rowid of each row + filter attributes."""

    ids: np.ndarray  # int64 (n,)
    matrix: np.ndarray  # float32 (n, dim), unit rows, C-contiguous
    attributes: dict[str, Attribute] = field(default_factory=dict)
    generation: int = -1
    _order: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        attributes: dict[str, Sequence[str]] | None = None,
        generation: int = -1,
    ) -> VectorIndex:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2:
            raise ValueError("vectors must be 2-D")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        matrix /= norms
        attrs = {
            name: Attribute.from_strings(list(col)) for name, col in (attributes or {}).items()
        }
        return cls(
            ids=np.asarray(ids, dtype=np.int64),
            matrix=matrix,
            attributes=attrs,
            generation=generation,
        )

    def rows_of(self, ids: Sequence[int]) -> np.ndarray:
        """Row positions of the given rowids (-1 where absent)."""
        if self._order is None:
            self._order = np.argsort(self.ids, kind="stable")
        wanted = np.asarray(ids, dtype=np.int64)
        sorted_ids = self.ids[self._order]
        pos = np.searchsorted(sorted_ids, wanted)
        pos = np.clip(pos, 0, max(self.size - 1, 0))
        found = (
            (self.size > 0) & (sorted_ids[pos] == wanted)
            if self.size
            else np.zeros(len(wanted), bool)
        )
        return np.where(found, self._order[pos] if self.size else -1, -1)

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def filter_mask(self, **wanted: Sequence[str]) -> np.ndarray | None:
        """AND of one ``isin`` per non-empty filter; ``None`` when nothing filters."""
        mask: np.ndarray | None = None
        for name, values in wanted.items():
            if not values:
                continue
            attr = self.attributes.get(name)
            part = attr.mask(values) if attr is not None else np.zeros(self.size, dtype=bool)
            mask = part if mask is None else (mask & part)
        return mask

    def search(
        self, query: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by cosine similarity: (rowids, similarities), best first."""
        if self.size == 0 or k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        if norm > 0:
            q = q / norm
        scores = similarities(self.matrix, q)
        if mask is not None:
            scores[~mask] = -np.inf
            available = int(mask.sum())
        else:
            available = self.size
        k = min(k, available)
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if k < self.size:
            top = np.argpartition(-scores, k - 1)[:k]
        else:
            top = np.arange(self.size)
        # Stable order: by score descending, ties by rowid ascending (same order as a full sort).
        order = np.lexsort((self.ids[top], -scores[top]))
        top = top[order]
        return self.ids[top], scores[top].astype(np.float32)

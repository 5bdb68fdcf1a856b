"""USE multilingual v3 on onnxruntime, plus the tokenizer and batching its backends share.

The prepared variant (see ``runtime/prepare/recipe_embedding.py``) is a
tokenizer-free graph: Python tokenizes with ``sentencepiece`` and feeds
``token_ids`` (int32, all rows back to back) and ``row_splits`` (int64). The
graph pads rows to the longest in a call, so texts are sorted by length and cut
into micro-batches under a token budget: less padding, and bounded memory for any
batch size. Long texts are cut by characters, then by tokens (``max_tokens``,
bos/eos kept), so a 100 kB string costs what a 512-token one does.

:class:`UseTokenizer` and :func:`read_encoder_config` are used by the OpenVINO
runner too; nothing here imports onnxruntime until :meth:`OnnxEmbedder.load`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import (
    BackendUnavailableError,
    DeviceError,
    InferenceError,
    ModelError,
    ModelNotPreparedError,
)

from .base import Embedder

log = logging.getLogger(__name__)

MODEL_ID = "use-multilingual-v3"
CONFIG_FILE = "embedder.json"
TOKENIZER_FILE = "tokenizer.model"
TOKEN_IDS = "token_ids"  # graph input: int32, every row's ids back to back
ROW_SPLITS = "row_splits"  # graph input: int64, n + 1 offsets into token_ids
# A token covers at most this many characters in practice; texts are cut to
# max_tokens * this before tokenizing, so tokenizer time is bounded too.
CHARS_PER_TOKEN_CAP = 16
# Micro-batch limits: padded tokens (rows x longest row) and rows per graph call.
# 512..1024 measured best (fewer padded tokens, cache-sized activations); 1024
# still gives a 32-chunk batch several micro-batches to spread over the threads.
TOKEN_BUDGET = 1024
MAX_ROWS = 64

# Execution providers that serve a device name, in order of preference.
_ORT_PROVIDERS = {
    "CPU": ("CPUExecutionProvider",),
    "GPU": (
        "CUDAExecutionProvider",
        "ROCMExecutionProvider",
        "DmlExecutionProvider",
        "OpenVINOExecutionProvider",
    ),
    "NPU": ("QNNExecutionProvider", "VitisAIExecutionProvider", "OpenVINOExecutionProvider"),
}


@dataclass(frozen=True)
class EncoderConfig:
    """What the recipe recorded in ``embedder.json`` next to the graph."""

    model_id: str
    dim: int
    max_tokens: int
    add_bos: bool
    add_eos: bool
    encoder: str


def read_encoder_config(model_dir: Path) -> EncoderConfig:
    """Read and check ``embedder.json`` of a prepared variant folder."""
    path = Path(model_dir) / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelNotPreparedError(
            f"{path} is missing: {model_dir} is not a prepared {MODEL_ID} variant",
            hint=f"run: kiosk models prepare {MODEL_ID}",
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(
            f"{path} cannot be read: {exc}", hint=f"run: kiosk models prepare {MODEL_ID}"
        ) from None
    try:
        cfg = EncoderConfig(
            model_id=str(data["model_id"]),
            dim=int(data["dim"]),
            max_tokens=int(data["max_tokens"]),
            add_bos=bool(data["add_bos"]),
            add_eos=bool(data["add_eos"]),
            encoder=str(data["encoder"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"{path} lacks or mangles {exc}", hint=f"run: kiosk models prepare {MODEL_ID}"
        ) from None
    if cfg.dim <= 0 or cfg.max_tokens < 2 or "/" in cfg.encoder or cfg.encoder.startswith("."):
        raise ModelError(
            f"{path} has impossible values {data}", hint=f"run: kiosk models prepare {MODEL_ID}"
        )
    return cfg


@dataclass(frozen=True)
class MicroBatch:
    """One graph call: which input rows it holds and the packed graph inputs."""

    rows: np.ndarray  # indices into the caller's texts
    token_ids: np.ndarray  # int32 [n_tokens]
    row_splits: np.ndarray  # int64 [len(rows) + 1]


class UseTokenizer:
    """SentencePiece ids for the tokenizer-free graph: truncation, bos/eos, sorted micro-batches."""

    def __init__(self, model_file: Path, *, max_tokens: int, add_bos: bool, add_eos: bool) -> None:
        try:
            import sentencepiece as spm
        except ModuleNotFoundError:
            raise BackendUnavailableError(
                "the embedder's tokenizer needs the 'sentencepiece' package",
                hint="pip install 'kiosk-assistant' (sentencepiece is a core dependency)",
            ) from None
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as exc:
            raise ModelError(
                f"tokenizer {model_file} cannot be loaded: {exc}",
                hint=f"run: kiosk models prepare {MODEL_ID}",
            ) from None
        self.max_tokens = max_tokens
        self._prefix = [self._sp.bos_id()] if add_bos else []
        self._suffix = [self._sp.eos_id()] if add_eos else []
        self._body = max_tokens - len(self._prefix) - len(self._suffix)
        self._max_chars = max_tokens * CHARS_PER_TOKEN_CAP
        if self._body < 1:
            raise ModelError(f"max_tokens {max_tokens} leaves no room for text")

    def _clean(self, text: object, index: int) -> str:
        if not isinstance(text, str):
            raise InferenceError(
                f"text {index} to embed is a {type(text).__name__}, not a str",
                hint="pass a sequence of strings",
            )
        text = text[: self._max_chars]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from a broken decoder
            text = text.encode("utf-8", "replace").decode("utf-8")
        return text

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_tokens`` with bos/eos kept."""
        clean = [self._clean(t, i) for i, t in enumerate(texts)]
        pieces = self._sp.encode(clean, out_type=int) if clean else []
        out = [self._prefix + p[: self._body] + self._suffix for p in pieces]
        return [row if row else [self._sp.unk_id()] for row in out]

    def micro_batches(
        self, texts: Sequence[str], *, token_budget: int = TOKEN_BUDGET, max_rows: int = MAX_ROWS
    ) -> Iterator[MicroBatch]:
        """Rows sorted by length, cut so that rows x longest row stays within ``token_budget``."""
        ids = self.ids(texts)
        lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and end - start < max_rows
                and lengths[order[end]] * (end + 1 - start) <= token_budget
            ):
                end += 1
            rows = order[start:end]
            splits = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum(lengths[rows], out=splits[1:])
            flat = np.fromiter(
                (t for r in rows for t in ids[r]), dtype=np.int32, count=int(splits[-1])
            )
            yield MicroBatch(rows=rows, token_ids=flat, row_splits=splits)
            start = end


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows of unit length, float32 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def run_batched(
    tokenizer: UseTokenizer,
    texts: Sequence[str],
    dim: int,
    run: Callable[[MicroBatch], np.ndarray],
    what: str,
    pool: ThreadPoolExecutor | None = None,
) -> np.ndarray:
    """Embed ``texts`` through ``run`` (one call per micro-batch), in input order, normalised.

    With a ``pool``, micro-batches run concurrently (the backends release the GIL
    while a graph runs): each graph call is single-threaded, which on this small,
    many-node graph uses cores better than splitting every op across threads.
    """
    out = np.empty((len(texts), dim), dtype=np.float32)
    batches = list(tokenizer.micro_batches(texts))

    def one(mb: MicroBatch) -> None:
        try:
            vectors = run(mb)
        except Exception as exc:  # noqa: BLE001 - any backend failure is an InferenceError
            raise InferenceError(
                f"{what} failed on a batch of {len(mb.rows)} text(s): {str(exc).splitlines()[0]}",
                hint="check the model files with `kiosk models verify`",
            ) from exc
        if vectors.shape != (len(mb.rows), dim) or not np.all(np.isfinite(vectors)):
            raise InferenceError(
                f"{what} returned shape {vectors.shape} or non-finite values for "
                f"{len(mb.rows)} text(s), expected ({len(mb.rows)}, {dim})"
            )
        out[mb.rows] = vectors

    if pool is None or len(batches) < 2:
        for mb in batches:
            one(mb)
    else:
        for future in [pool.submit(one, mb) for mb in batches]:
            future.result()
    return l2_normalise(out)


def split_device(device: str) -> str:
    """'GPU.0' -> 'GPU'; checks the name."""
    base = device.split(".", 1)[0].upper()
    if base not in _ORT_PROVIDERS:
        raise DeviceError(f"unknown device {device!r} for the embedder", hint="use CPU, GPU or NPU")
    return base


class OnnxEmbedder(Embedder):
    """USE multilingual v3 on onnxruntime (tokenizer-free int8 graph)."""

    model_id = MODEL_ID
    backend = "onnxruntime"

    def __init__(
        self,
        session: Any,
        tokenizer: UseTokenizer,
        config: EncoderConfig,
        device: str,
        workers: int = 1,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._output = session.get_outputs()[0].name
        self.dim = config.dim
        self.device = device
        self._closed = threading.Event()
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="embed-ort") if workers > 1 else None
        )

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str = "CPU",
        threads: int = 2,
        providers: list[str] | None = None,
    ) -> OnnxEmbedder:
        """Open a prepared onnx variant folder on ``device`` with ``threads`` intra-op threads."""
        model_dir = Path(model_dir)
        config = read_encoder_config(model_dir)
        base = split_device(device)
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise BackendUnavailableError(
                "the onnxruntime embedder needs the 'onnxruntime' package",
                hint="pip install 'kiosk-assistant' (onnxruntime is a core dependency)",
            ) from None
        available = ort.get_available_providers()
        if providers is None:
            chosen = [p for p in _ORT_PROVIDERS[base] if p in available]
            if not chosen:
                raise DeviceError(
                    f"onnxruntime has no execution provider for {device} (has {available})",
                    hint="install an onnxruntime build for it, or let the loader fall back",
                )
            providers = chosen[:1] if base == "CPU" else [chosen[0], "CPUExecutionProvider"]
        else:
            missing = [p for p in providers if p not in available]
            if missing:
                raise DeviceError(
                    f"onnxruntime lacks execution provider(s) {missing} (has {available})"
                )
        if threads < 1:
            raise DeviceError(f"threads must be at least 1, not {threads}")
        tokenizer = UseTokenizer(
            model_dir / TOKENIZER_FILE,
            max_tokens=config.max_tokens,
            add_bos=config.add_bos,
            add_eos=config.add_eos,
        )
        # CPU: each graph call single-threaded, ``threads`` calls at once (see run_batched).
        workers = threads if base == "CPU" else 1
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1 if base == "CPU" else threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # the graph has unused initializers; ORT warns about each
        encoder = model_dir / config.encoder
        try:
            session = ort.InferenceSession(str(encoder), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - a broken file or a provider that cannot start
            raise DeviceError(
                f"onnxruntime could not open {encoder} on {device}: {str(exc).splitlines()[0]}",
                hint="check the files with `kiosk models verify`; the loader tries the next device",
            ) from None
        if base != "CPU" and session.get_providers()[0] != providers[0]:
            raise DeviceError(f"onnxruntime did not start {providers[0]} for {device}")
        log.debug(
            "use-multilingual-v3 on onnxruntime %s (%s), %d threads", device, providers[0], threads
        )
        return cls(session, tokenizer, config, device, workers)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        if self._closed.is_set():
            raise InferenceError("the onnxruntime embedder was closed")

        def run(mb: MicroBatch) -> np.ndarray:
            return self._session.run(
                [self._output], {TOKEN_IDS: mb.token_ids, ROW_SPLITS: mb.row_splits}
            )[0]

        return run_batched(
            self._tokenizer, texts, self.dim, run, "onnxruntime embedder", self._pool
        )

    def close(self) -> None:
        self._closed.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._session = None

"""Load models onto the best device that works, falling back on failure.

For each model the loader asks ``runtime.devices.plan_placement`` for the
ordered candidates (backend, device, prepared variant), then tries each:
load/compile, then a smoke inference that checks the output is sane. The
first candidate that passes wins; every failure is logged with its reason
and kept in the returned :class:`~runtime.devices.Placement`, which
``/healthz`` and ``kiosk doctor`` show.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from runtime.devices import Attempt, Candidate, Placement, plan_placement
from runtime.errors import DeviceError, InferenceError, KioskError, ModelNotPreparedError
from runtime.prepare.cache import read_record, variant_dir
from runtime.prepare.manifest import ModelManifest, load_manifests
from runtime.probe import probe

from .base import Embedder

if TYPE_CHECKING:
    from kiosk_config import KioskConfig
    from runtime.devices import Capabilities

log = logging.getLogger(__name__)
R = TypeVar("R")

SMOKE_TEXTS = ("洗手间在哪里？", "Where is the restroom?")


def prepared_variants(cache: Path, manifest: ModelManifest) -> dict[str, str]:
    """format -> variant name, for the variants of this model that are prepared."""
    out: dict[str, str] = {}
    for v in manifest.variants:
        if v.format not in out and read_record(cache, manifest.id, v.name) is not None:
            out[v.format] = v.name
    return out


def load_with_fallback(
    manifest: ModelManifest,
    candidates: list[Candidate],
    open_fn: Callable[[Candidate], R],
    smoke_fn: Callable[[R], None],
) -> tuple[R, Placement]:
    """Try each candidate in order; return the first runner that loads and passes its smoke test."""
    placement = Placement(model_id=manifest.id, task=manifest.task, chosen=None)
    for cand in candidates:
        started = time.perf_counter()
        runner = None
        try:
            runner = open_fn(cand)
            smoke_fn(runner)
        except Exception as exc:  # noqa: BLE001 - any failure means: try the next device
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            placement.attempts.append(
                Attempt(
                    cand,
                    ok=False,
                    error=f"{type(exc).__name__}: {reason}",
                    seconds=time.perf_counter() - started,
                )
            )
            log.warning(
                "%s on %s/%s failed (%s); trying the next device",
                manifest.id,
                cand.backend,
                cand.device,
                reason,
            )
            close = getattr(runner, "close", None)
            if close is not None:
                close()
            continue
        placement.attempts.append(Attempt(cand, ok=True, seconds=time.perf_counter() - started))
        placement.chosen = cand
        log.info("%s runs on %s/%s (%s)", manifest.id, cand.backend, cand.device, cand.variant)
        return runner, placement
    tried = "; ".join(
        f"{a.candidate.backend}/{a.candidate.device}: {a.error}" for a in placement.attempts
    )
    raise DeviceError(
        f"no device could run model {manifest.id}" + (f" (tried {tried})" if tried else ""),
        hint=(
            "run `kiosk doctor` to see the devices and backends; "
            "`kiosk models verify` to check files"
        ),
    )


def check_embeddings(vectors: np.ndarray, n: int, dim: int) -> None:
    """Smoke check of an embedder's output: right shape, finite, unit rows, not all equal."""
    if vectors.shape != (n, dim):
        raise InferenceError(f"embedder returned shape {vectors.shape}, expected {(n, dim)}")
    if not np.all(np.isfinite(vectors)):
        raise InferenceError("embedder returned NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise InferenceError(f"embedder rows are not unit length (norms {norms})")
    if n > 1 and np.allclose(vectors[0], vectors[1], atol=1e-4):
        raise InferenceError("embedder returned identical vectors for different texts")


def _open_embedder(cfg: KioskConfig, manifest: ModelManifest, cand: Candidate) -> Embedder:
    folder = variant_dir(cfg.paths.model_cache, manifest.id, cand.variant)
    if cand.backend == "onnxruntime":
        from .embed_onnx import OnnxEmbedder

        return OnnxEmbedder.load(folder, device=cand.device, threads=cfg.devices.threads)
    if cand.backend == "openvino":
        from .embed_openvino import OpenVinoEmbedder

        cache_dir = cfg.compiled_cache_dir / manifest.id / cand.variant
        return OpenVinoEmbedder.load(
            folder, device=cand.device, threads=cfg.devices.threads, cache_dir=cache_dir
        )
    raise DeviceError(f"no embedder runner for backend {cand.backend!r}")


def load_embedder(cfg: KioskConfig, caps: Capabilities | None = None) -> Embedder:
    """The configured embedder on the best working device."""
    return load_embedder_placed(cfg, caps)[0]


def load_embedder_placed(
    cfg: KioskConfig, caps: Capabilities | None = None
) -> tuple[Embedder, Placement]:
    manifests = load_manifests(cfg.manifest_dir)
    model_id = cfg.models.embedder
    if model_id not in manifests:
        raise KioskError(
            f"[models] embedder = {model_id!r} names no manifest in {cfg.manifest_dir}",
            hint=f"use one of {sorted(m for m, x in manifests.items() if x.task == 'embedding')}",
        )
    manifest = manifests[model_id]
    variants = prepared_variants(cfg.paths.model_cache, manifest)
    if not variants:
        raise ModelNotPreparedError(
            f"model {model_id} is not prepared in {cfg.paths.model_cache}",
            hint=f"run: kiosk models prepare {model_id}",
        )
    caps = caps or probe().caps
    candidates = plan_placement(
        caps,
        task="embedding",
        variants=variants,
        preference=cfg.devices.preference,
        backend=cfg.models.embedder_backend,
    )
    dim = manifest.dim or 0

    def smoke(emb: Embedder) -> None:
        check_embeddings(emb.embed_batch(list(SMOKE_TEXTS)), len(SMOKE_TEXTS), dim or emb.dim)

    return load_with_fallback(
        manifest, candidates, lambda c: _open_embedder(cfg, manifest, c), smoke
    )

"""Which generator the answer pipeline gets: the configured one if it is prepared, else none.

The pipeline works with no generator (cache, FAQ and quoted passages), so a
missing or broken generator is reported, not raised: the caller prints the
reason and serves the fast paths. When ``runtime.inference.generator_select``
(the generator engineer's loader with device fallback) is present it decides;
until then the first prepared OpenVINO variant of the configured (or default)
generation model is loaded on CPU.
"""

from __future__ import annotations

import importlib.util
import logging

from runtime.inference.base import Generator

log = logging.getLogger(__name__)


def load_answer_generator(cfg) -> tuple[Generator | None, str]:
    """(generator or None, one line saying what was loaded or why not)."""
    if importlib.util.find_spec("runtime.inference.generator_select") is not None:
        try:
            from runtime.inference import generator_select as gs

            measurements = gs.load_measurements(
                gs.measurements_path(cfg), machine=gs.machine_fingerprint(cfg.devices.threads)
            )
            choice = gs.choose_generator(cfg, measurements)
            if choice.model_id is None:
                return None, "no generator: " + "; ".join(choice.reasons)
            cand = next(
                c
                for c in gs.candidates_from_manifests(
                    __import__(
                        "runtime.prepare.manifest", fromlist=["load_manifests"]
                    ).load_manifests(cfg.manifest_dir),
                    cfg.paths.model_cache,
                )
                if c.model_id == choice.model_id and c.backend == choice.backend
            )
            gen = gs.load_generator(cfg, cand)
            return gen, f"generator {cand.model_id} ({cand.variant}) on {gen.backend}/{gen.device}"
        except Exception as exc:  # noqa: BLE001 - fall through to the direct loader, then to none
            log.warning(
                "generator_select failed: %s",
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
    try:
        from runtime.inference.loader import prepared_variants
        from runtime.prepare.cache import variant_dir
        from runtime.prepare.manifest import load_manifests

        manifests = load_manifests(cfg.manifest_dir)
    except Exception as exc:  # noqa: BLE001
        return None, f"no generator: manifests unreadable ({exc})"
    wanted = cfg.models.generator
    candidates = [m for m in manifests.values() if m.task == "generation"]
    if wanted != "auto":
        candidates = [m for m in candidates if m.id == wanted]
    candidates.sort(key=lambda m: (not m.default, m.id))
    for manifest in candidates:
        variants = prepared_variants(cfg.paths.model_cache, manifest)
        variant = variants.get("openvino")
        if variant is None:
            continue
        try:
            from runtime.inference.generate_openvino import OpenVinoGenerator

            gen = OpenVinoGenerator.load(
                variant_dir(cfg.paths.model_cache, manifest.id, variant),
                device="CPU",
                threads=cfg.devices.threads,
                model_id=manifest.id,
            )
            return gen, f"generator {manifest.id} ({variant}) on openvino/CPU"
        except Exception as exc:  # noqa: BLE001
            log.warning("generator %s/%s failed to load: %s", manifest.id, variant, exc)
            return (
                None,
                f"no generator: {manifest.id}/{variant} failed to load "
                f"({str(exc).splitlines()[0]})",
            )
    return None, (
        "no generator prepared (answers come from the FAQ and quoted passages); "
        "run `kiosk models prepare` to add one"
    )

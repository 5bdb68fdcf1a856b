"""The embedding binding: which model made a pack's vectors (rule 3).

The hash identifies the model's weights, not the runtime variant: it is the sha256 of
the sorted ``name:sha256`` lines of the model's source files in its manifest
(models/<id>.toml), so the onnxruntime and OpenVINO variants of one model bind alike
while another model, or other weights under the same name, do not. A model without a
manifest (test embedders) binds by ``sha256("<model id>\\0<dim>")``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .format import EmbeddingBinding


def binding_from_files(model_id: str, dim: int, files: list[tuple[str, str]]) -> EmbeddingBinding:
    lines = "\n".join(f"{name}:{sha}" for name, sha in sorted(files))
    return EmbeddingBinding(
        model_id=model_id, dim=int(dim), hash=hashlib.sha256(lines.encode()).hexdigest()
    )


def binding_for(model_id: str, dim: int, manifest_dir: Path | None = None) -> EmbeddingBinding:
    """Binding for ``model_id``: from its model manifest when there is one, else from id and dim."""
    if manifest_dir is not None:
        path = Path(manifest_dir) / f"{model_id}.toml"
        if path.is_file():
            from runtime.prepare.manifest import load_manifest

            manifest = load_manifest(path)
            return binding_from_files(model_id, dim, [(f.name, f.sha256) for f in manifest.files])
    digest = hashlib.sha256(f"{model_id}\0{int(dim)}".encode()).hexdigest()
    return EmbeddingBinding(model_id=model_id, dim=int(dim), hash=digest)


def binding_for_config(cfg) -> EmbeddingBinding:
    """The kiosk's own binding: the configured embedder's manifest (id, dim, file hashes)."""
    from runtime.errors import PackCompatibilityError
    from runtime.prepare.manifest import load_manifest

    model_id = cfg.models.embedder
    path = Path(cfg.manifest_dir) / f"{model_id}.toml"
    if not path.is_file():
        raise PackCompatibilityError(
            f"[models] embedder = {model_id!r} has no manifest at {path}",
            hint="packs are bound to an embedding model; configure one that has a manifest",
        )
    manifest = load_manifest(path)
    if not manifest.dim:
        raise PackCompatibilityError(
            f"model manifest {path} does not state the embedding dim",
            hint="add dim = N to the manifest",
        )
    return binding_from_files(model_id, manifest.dim, [(f.name, f.sha256) for f in manifest.files])

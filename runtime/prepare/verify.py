"""Check the model cache against the manifests by re-hashing every byte.

`prepare` trusts its stamps and PREPARED.json records so that a second run is
free; `verify` trusts nothing: it re-hashes the assembled files against the
manifest and every variant output against the variant's PREPARED.json, checks
that each record still describes the manifest (same recipe, options and source
hashes), and reports unexpected files. It returns a list of problems, each
naming the file and the command that fixes it, instead of stopping at the first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .assemble import Advance, drop_stamp, hash_file, write_stamp
from .cache import PREPARED_RECORD, files_dir, model_dir, model_lock, read_record, variant_dir
from .manifest import ModelManifest, Variant

RECORD_VERSION = 1

BytesTask = Callable[[str, int], AbstractContextManager[Advance]]


def null_bytes_task(description: str, total: int) -> AbstractContextManager[Advance]:
    return nullcontext(lambda _: None)


@dataclass(frozen=True)
class Problem:
    model_id: str
    where: str  # path relative to the model folder, or the variant name
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.model_id}/{self.where}" if self.where else self.model_id
        return f"{where}: {self.message} (fix: {self.fix})"


@dataclass
class VerifyResult:
    model_id: str
    checked_files: int = 0
    checked_bytes: int = 0
    prepared: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # sha256 by (device, inode, size, mtime): a variant file hard-linked to an assembled
    # one is read once
    _seen: dict[tuple[int, int, int, int], str] = field(default_factory=dict, repr=False)

    def hash(self, path: Path, label: str, bytes_task: BytesTask) -> str:
        st = path.stat()
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._seen:
            with bytes_task(f"verify {label}", st.st_size) as advance:
                self._seen[key] = hash_file(path, advance)[1]
            self.checked_bytes += st.st_size
        self.checked_files += 1
        return self._seen[key]


def normalized_options(variant: Variant) -> Any:
    """The variant's options as they read back from JSON (how PREPARED.json stores them)."""
    return json.loads(json.dumps(variant.options, default=str, sort_keys=True))


def source_entries(manifest: ModelManifest) -> list[dict[str, Any]]:
    return [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in manifest.files]


def record_problems(
    record: dict[str, Any] | None, manifest: ModelManifest, variant: Variant
) -> list[str]:
    """Why a PREPARED.json does not (or no longer) describe this variant; no hashing."""
    if record is None:
        return ["no PREPARED.json"]
    if not isinstance(record, dict) or record.get("record_version") != RECORD_VERSION:
        return ["PREPARED.json is not a record this version of kiosk wrote"]
    reasons = []
    expected = {
        "id": manifest.id,
        "variant": variant.name,
        "format": variant.format,
        "precision": variant.precision,
        "recipe": variant.recipe,
        "options": normalized_options(variant),
    }
    for key, want in expected.items():
        if record.get(key) != want:
            reasons.append(
                f"PREPARED.json says {key} = {record.get(key)!r}, the manifest says {want!r}"
            )
    if record.get("sources") != source_entries(manifest):
        reasons.append("it was prepared from other source files than the manifest names now")
    files = record.get("files")
    if not isinstance(files, list) or not files or not all(_valid_entry(e) for e in files):
        reasons.append("PREPARED.json has no valid list of output files")
    return reasons


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    path, size, sha = entry.get("path"), entry.get("size"), entry.get("sha256")
    if not isinstance(path, str) or not isinstance(size, int) or not isinstance(sha, str):
        return False
    pure = PurePosixPath(path)
    return (
        bool(path) and not pure.is_absolute() and ".." not in pure.parts and path != PREPARED_RECORD
    )


def verify_model(
    manifest: ModelManifest, cache: Path, *, bytes_task: BytesTask = null_bytes_task
) -> VerifyResult:
    """Re-hash everything of one model in the cache; never raises for what it finds."""
    result = VerifyResult(manifest.id)
    prepare_cmd = f"kiosk models prepare {manifest.id}"
    if not model_dir(cache, manifest.id).is_dir():
        result.problems.append(Problem(manifest.id, "", f"not prepared in {cache}", prepare_cmd))
        return result
    with model_lock(cache, manifest.id):
        records = {v.name: read_record(cache, manifest.id, v.name) for v in manifest.variants}
        any_prepared = any(r is not None for r in records.values())
        for mf in manifest.files:
            _check_assembled(manifest, mf, cache, any_prepared, result, bytes_task)
        for v in manifest.variants:
            _check_variant(manifest, v, records[v.name], cache, result, bytes_task)
    return result


def _check_assembled(manifest, mf, cache, any_prepared, result, bytes_task) -> None:
    where = f"files/{mf.name}"
    path = files_dir(cache, manifest.id) / mf.name
    fix = f"kiosk models prepare {manifest.id}"
    if not path.is_file():
        if not any_prepared:  # once a variant exists the assembled files are only a cache
            result.problems.append(Problem(manifest.id, where, "missing", fix))
        return
    size = path.stat().st_size
    if size != mf.size:
        drop_stamp(cache, manifest.id, mf.name)  # so the next prepare re-assembles it
        kind = "truncated" if size < mf.size else "too long"
        result.problems.append(
            Problem(manifest.id, where, f"{kind}: {size} bytes, expected {mf.size}", fix)
        )
        return
    sha = result.hash(path, f"{manifest.id}/{where}", bytes_task)
    if sha != mf.sha256:
        drop_stamp(cache, manifest.id, mf.name)
        result.problems.append(
            Problem(manifest.id, where, f"sha256 expected {mf.sha256}, got {sha}", fix)
        )
    else:
        write_stamp(cache, manifest.id, mf.name, sha)


def _check_variant(manifest, v: Variant, record, cache, result, bytes_task) -> None:
    folder = variant_dir(cache, manifest.id, v.name)
    force_fix = f"kiosk models prepare --force {manifest.id} --variant {v.name}"
    if record is None:
        if folder.exists():
            result.problems.append(
                Problem(
                    manifest.id,
                    v.name,
                    f"folder {folder} has no readable {PREPARED_RECORD}, so it is not prepared",
                    force_fix,
                )
            )
        elif not v.optional:
            result.problems.append(
                Problem(
                    manifest.id,
                    v.name,
                    "not prepared",
                    f"kiosk models prepare {manifest.id} --variant {v.name}",
                )
            )
        return
    reasons = record_problems(record, manifest, v)
    for reason in reasons:
        result.problems.append(Problem(manifest.id, v.name, f"stale: {reason}", force_fix))
    if not isinstance(record.get("files"), list) or not all(
        _valid_entry(e) for e in record["files"]
    ):
        return
    result.prepared.append(v.name)
    listed = set()
    for entry in record["files"]:
        listed.add(entry["path"])
        where = f"{v.name}/{entry['path']}"
        path = folder / entry["path"]
        if not path.is_file():
            result.problems.append(Problem(manifest.id, where, "missing", force_fix))
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            kind = "truncated" if size < entry["size"] else "too long"
            result.problems.append(
                Problem(
                    manifest.id, where, f"{kind}: {size} bytes, expected {entry['size']}", force_fix
                )
            )
            continue
        sha = result.hash(path, f"{manifest.id}/{where}", bytes_task)
        if sha != entry["sha256"]:
            result.problems.append(
                Problem(
                    manifest.id, where, f"sha256 expected {entry['sha256']}, got {sha}", force_fix
                )
            )
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if (path.is_file() or path.is_symlink()) and rel != PREPARED_RECORD and rel not in listed:
            result.problems.append(
                Problem(manifest.id, f"{v.name}/{rel}", "not listed in PREPARED.json", force_fix)
            )

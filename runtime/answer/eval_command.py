"""`kiosk eval answers` (added to the `eval` group in runtime/commands/evaluate.py)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from runtime.cli import get_config
from runtime.commands.shared_data import data_dir_option

DEFAULT_QUESTIONS = (
    Path(__file__).resolve().parent.parent.parent
    / "kiosk_config"
    / "demo"
    / "eval"
    / "grounded_questions.jsonl"
)


def _csv(value: str, cast=str) -> list:
    return [cast(v.strip()) for v in value.split(",") if v.strip()]


@click.command(name="answers")
@click.option(
    "--questions",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=DEFAULT_QUESTIONS,
    help="Grounded question set (JSONL; default: the demo set).",
)
@click.option(
    "--benchmark",
    type=click.Choice(["zh-rgb"]),
    default=None,
    help="Score a public benchmark instead of --questions, on its own passages: zh-rgb is "
    "RGB's Chinese news questions (half answerable, half with the answer passages left out, "
    "to be refused). Needs the shared data folder.",
)
@data_dir_option
@click.option(
    "--prompts",
    default="plain",
    show_default=True,
    help="Prompt styles to compare: plain,numbered.",
)
@click.option(
    "--passages",
    default="2",
    show_default=True,
    help="Context passages to compare, e.g. 0,1,2 (0: only the quoted sentences).",
)
@click.option(
    "--check",
    "checks",
    type=click.Choice(["on", "off", "both"]),
    default="on",
    show_default=True,
    help="Claim check on, off, or compare both.",
)
@click.option(
    "--generator",
    "generators",
    default="auto",
    show_default=True,
    help="auto: no generator and the prepared one; none: fast paths and quotes only.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Only the first N questions."
)
@click.option(
    "--sample",
    "sample_n",
    type=click.IntRange(min=1),
    default=None,
    help="N questions spread evenly over the set (keeps the language/type mix).",
)
@click.option(
    "--deadline-ms",
    type=click.IntRange(min=50),
    default=60_000,
    show_default=True,
    help="First-words deadline during evaluation (long: measure accuracy, not speed).",
)
@click.option(
    "--faq-thresholds",
    is_flag=True,
    help="Also print how FAQ confidence thresholds separate real same-intent question pairs.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the JSON report here.",
)
@click.option("--show-misses", is_flag=True, help="List every wrong answer.")
@click.pass_context
def answers(
    ctx: click.Context,
    questions: Path,
    benchmark: str | None,
    data_dir: Path | None,
    prompts: str,
    passages: str,
    checks: str,
    generators: str,
    limit: int | None,
    sample_n: int | None,
    deadline_ms: int,
    faq_thresholds: bool,
    out: Path | None,
    show_misses: bool,
) -> None:
    """Accuracy, contradictions and refusal rates of the answer pipeline per variant."""
    from rich.console import Console
    from rich.table import Table

    from runtime.answer.evaluate import (
        VariantResult,
        faq_pair_thresholds,
        load_questions,
        run_variant,
        sample,
        variants,
    )
    from runtime.answer.pipeline import AnswerPipeline, PipelineSettings
    from runtime.answer.service import build_service

    cfg = get_config(ctx)
    want_gen = generators != "none"
    svc = build_service(cfg, with_generator=want_gen)
    store, knowledge, scratch = svc.pipeline.store, svc.knowledge, None
    if benchmark == "zh-rgb":
        from runtime.answer.rgb import RGB_FILE, build_rgb_store, load_rgb
        from runtime.commands.shared_data import shared_data_dir

        data = shared_data_dir(data_dir)
        rgb = load_rgb(data, limit=limit)  # a small store for a small run
        all_qs = rgb.questions
        scratch = tempfile.TemporaryDirectory(prefix="kiosk-rgb-")  # removed at the end
        store = build_rgb_store(
            rgb, svc.pipeline.embedder, Path(scratch.name), say=lambda m: click.echo(m, err=True)
        )
        knowledge = f"RGB zh passages ({len(rgb.passages)}; rows left out: {rgb.dropped or 0})"
        questions = data / RGB_FILE
    else:
        all_qs = load_questions(questions)
    qs = sample(all_qs[:limit], sample_n)
    click.echo(f"knowledge: {knowledge}; {svc.generator}", err=True)
    base: PipelineSettings = svc.pipeline.settings
    base.deadline_ms = deadline_ms
    base.total_ms = max(base.total_ms, deadline_ms * 2)
    base.embed_timeout_ms = max(base.embed_timeout_ms, 5000)
    gen_names = ["none"]
    if want_gen and svc.pipeline.generator is not None:
        gen_names.append(svc.pipeline.generator.model_id)
    # "both": one run with the check on scores both (no-check = the generated text it replaced).
    check_list = [checks != "off"]
    report = {
        "questions": str(questions),
        "count": len(qs),
        "knowledge": knowledge,
        "variants": [],
    }
    console = Console(stderr=False, width=160)
    misses: dict[str, list] = {}
    for name, gen_name, settings in variants(
        base,
        prompts=_csv(prompts),
        passages=_csv(passages, int),
        checks=check_list,
        generators=gen_names,
    ):
        p = AnswerPipeline(
            store,
            svc.pipeline.embedder,
            None if gen_name == "none" else svc.pipeline.generator,
            settings=settings,
            languages=svc.pipeline.languages,
            staff_handoff=svc.pipeline.staff_handoff,
            kiosk_name=svc.pipeline.kiosk_name,
            static_faq=svc.pipeline.static_faq,
        )
        done = [0]

        def progress(s, name=name, done=done):
            done[0] += 1
            if done[0] % 10 == 0:
                click.echo(f"  {name}: {done[0]}/{len(qs)}", err=True)

        derived = (
            VariantResult(name.replace("/check", "/nocheck"))
            if checks == "both" and gen_name != "none"
            else None
        )
        result = run_variant(name, p, qs, progress, nocheck=derived)
        p.close()
        for res in (result, derived):
            if res is None:
                continue
            report["variants"].append(res.summary())
            misses[res.name] = [
                {
                    "id": s.question.id,
                    "question": s.question.question,
                    "path": s.answer.path,
                    "answer": s.answer.text,
                    "generated": s.answer.generated,
                    "expected": s.question.expected,
                    "contradiction": s.contradiction,
                }
                for s in res.scored
                if (s.question.answerable and not s.correct)
                or (not s.question.answerable and not s.refused)
            ]
    table = Table(title=f"answers on {questions.name} ({len(qs)} questions)")
    for col in (
        "variant",
        "accuracy",
        "correct",
        "contradictions",
        "refusal (uncovered)",
        "false refusals",
        "paths",
        "p50 ms",
        "p95 ms",
    ):
        table.add_column(col)
    for v in report["variants"]:
        table.add_row(
            v["variant"],
            f"{v['accuracy']:.3f}" if v["accuracy"] is not None else "-",
            f"{v['correct']}/{v['answerable']}",
            str(v["contradictions"]),
            f"{v['refusal_rate']:.3f}" if v["refusal_rate"] is not None else "-",
            str(v["false_refusals"]),
            " ".join(f"{k}:{n}" for k, n in sorted(v["paths"].items())),
            str(v["latency_p50_ms"]),
            str(v["latency_p95_ms"]),
        )
    console.print(table)
    console.print(_by_type_table(report["variants"]))
    if faq_thresholds:
        from runtime.commands.shared_data import EvaluationDataError, shared_data_dir

        try:
            pairs = shared_data_dir(data_dir) / "faq_zh_question_pairs" / "pairs.tsv"
        except EvaluationDataError:
            pairs = Path("(no shared data folder)") / "pairs.tsv"
        if pairs.is_file():
            rows = faq_pair_thresholds(
                svc.pipeline.embedder, pairs, [0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
            )
            report["faq_pair_thresholds"] = rows
            t2 = Table(
                title=f"FAQ threshold on real same-intent pairs ({rows[0]['pairs']} pairs, {pairs})"
            )
            for col in ("cosine ≥", "precision", "recall", "accepted"):
                t2.add_column(col)
            for r in rows:
                t2.add_row(
                    str(r["threshold"]), str(r["precision"]), str(r["recall"]), str(r["accepted"])
                )
            console.print(t2)
        else:
            click.echo(f"no pair data at {pairs}: set KIOSK_SHARED_DATA", err=True)
    if show_misses:
        for name, rows in misses.items():
            click.echo(f"\n{name}: {len(rows)} misses")
            for r in rows:
                click.echo(
                    f"  {r['id']} [{r['path']}] {r['question']} → {r['answer'][:140]!r}"
                    + (f" (generated {r['generated'][:100]!r})" if r["generated"] else "")
                )
    report["misses"] = misses
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(report, indent=2, ensure_ascii=False, default=list), encoding="utf-8"
        )
    if scratch is not None:
        store.close()
        scratch.cleanup()
    svc.close()


def _by_type_table(variants: list[dict]):
    """Correct / answerable per question type and variant, with the facts shown in brackets
    (right facts, no yes/no in front); uncovered types show refused / questions."""
    from rich.table import Table

    table = Table(title="per question type: correct (facts shown) / answerable; uncovered: refused")
    table.add_column("type")
    for v in variants:
        table.add_column(v["variant"])
    types = sorted({t for v in variants for t in v["by_type"]})
    for t in types:
        cells = []
        for v in variants:
            g = v["by_type"].get(t)
            if g is None:
                cells.append("-")
            elif g["answerable"]:
                cells.append(f"{g['correct']} ({g['facts_shown']}) / {g['answerable']}")
            else:
                cells.append(f"{g['refused']} / {g['questions']} refused")
        table.add_row(t, *cells)
    return table

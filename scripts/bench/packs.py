"""Benchmark: build, verify and install time and peak memory for packs of 1k, 10k and 50k chunks.

Each phase runs in its own child process so its peak RSS (ru_maxrss) is its own:
  build    export a filled store into a signed pack (sections of 1024 chunks)
  verify   size cap, signature, manifest, streamed section hashes, policy
  install  verify + unpack section by section + build the SQLite store + integrity + smoke + switch
Reference in the same run: "direct" = adding the same records straight into a new store
(no pack), i.e. the floor for install (its memory holds every vector, it is a time
reference only); and the interpreter's own RSS after imports ("over baseline").
Vectors are deterministic random unit vectors (the embedder is not what is measured).

usage: python scripts/bench/packs.py [--sizes 1000,10000,50000] [--dim 512]
                                    [--out bench-results/packs.json]
Goal (packs.md): 10k chunks verify + install <= 10 s on 2 cores; memory flat in pack size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


class HashEmbedder:
    """Deterministic random unit vectors keyed by text: fast at any scale."""

    backend, device = "numpy", "CPU"

    def __init__(self, dim: int) -> None:
        self.dim, self.model_id = dim, "bench-hash-embedder"

    def embed_batch(self, texts):
        import numpy as np

        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it is not inherited over exec)."""  # noqa: E501
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(name: str, args: dict, q) -> None:
    from runtime.knowledge.store import KnowledgeStore  # noqa: F401 - count imports in the baseline
    from runtime.packs.binding import binding_for
    from runtime.packs.install import PackInstaller, PackSettings
    from runtime.packs.sample import fill_store, sample_records, sample_smoke
    from runtime.packs.signing import SigningKey, signer
    from runtime.packs.trust import TrustState
    from runtime.packs.verify import verify_pack

    base = _peak_mb()
    work = Path(args["work"])
    emb = HashEmbedder(args["dim"])
    binding = binding_for(emb.model_id, emb.dim)
    key = SigningKey(bytes.fromhex(args["seed"]))
    n_docs, per_doc = args["chunks"] // 10, 10
    settings = PackSettings(
        configured_keys=[bytes(key.verify_key).hex()],
        binding=binding,
        locales=("en",),
        max_bytes=1 << 34,
    )
    t0 = time.perf_counter()
    result: dict = {}
    if name == "build":
        from runtime.packs.build import export_pack

        records = sample_records(n_docs, per_doc)
        with KnowledgeStore.open(
            work / "src.sqlite", embedding_model=emb.model_id, dim=emb.dim
        ) as store:
            fill_store(store, emb, records)
            t0 = time.perf_counter()
            smoke, vecs = sample_smoke(records, emb)
            export_pack(
                store,
                work / "p.kpack",
                pack_id="bench",
                version=1,
                sign=signer(key),
                binding=binding,
                smoke=smoke,
                smoke_vectors=vecs,
                locales=["en"],
            )
        result["bytes"] = (work / "p.kpack").stat().st_size
    elif name == "direct":
        records = sample_records(n_docs, per_doc)
        vectors = [emb.embed_batch([c.text for c in chunks]) for _, chunks in records]
        t0 = time.perf_counter()
        with KnowledgeStore.open(
            work / f"direct-{os.getpid()}.sqlite", embedding_model=emb.model_id, dim=emb.dim
        ) as store:
            for (doc, chunks), v in zip(records, vectors, strict=True):
                store.add_document(doc, chunks, v)
    elif name == "verify":
        verify_pack(work / "p.kpack", settings.policy(TrustState()), TrustState())
    elif name == "install":
        r = PackInstaller(work / f"packs-{os.getpid()}", settings).install_file(work / "p.kpack")
        result["timings"] = r.timings
    result.update(seconds=time.perf_counter() - t0, peak_mb=_peak_mb(), baseline_mb=base)
    q.put(result)


def run_phase(name: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_phase, args=(name, args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "packs.json"))
    a = ap.parse_args()
    from nacl.signing import SigningKey

    seed = bytes(SigningKey.generate()).hex()
    load_before = os.getloadavg()  # numbers taken on a busy box are not comparable
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="bench-packs-") as work:
            args = {"work": work, "chunks": n, "dim": a.dim, "seed": seed}
            row = {"chunks": n}
            for phase in ("build", "verify", "install", "direct"):
                row[phase] = run_phase(phase, args)
                print(
                    f"  {n:>6} chunks {phase:8} {row[phase]['seconds']:7.2f} s  peak {row[phase]['peak_mb']:7.1f} MB",  # noqa: E501
                    flush=True,
                )
            rows.append(row)
    print(
        f"\n{'chunks':>7} {'pack MB':>8} {'build s':>8} {'verify s':>9} {'install s':>10} "
        f"{'(unpack':>8} {'check)':>7} {'direct s':>9} {'install/direct':>15} "
        f"{'verify peak MB':>15} {'install peak MB':>16} {'over baseline':>14}"
    )
    for r in rows:
        inst = r["install"]
        t = inst.get("timings", {})
        print(
            f"{r['chunks']:>7} {r['build']['bytes'] / 1e6:>8.1f} {r['build']['seconds']:>8.2f} "
            f"{r['verify']['seconds']:>9.3f} {inst['seconds']:>10.2f} {t.get('build_s', 0):>8.2f} "
            f"{t.get('check_s', 0):>7.2f} {r['direct']['seconds']:>9.2f} "
            f"{inst['seconds'] / r['direct']['seconds']:>15.2f} {r['verify']['peak_mb']:>15.1f} "
            f"{inst['peak_mb']:>16.1f} {inst['peak_mb'] - inst['baseline_mb']:>14.1f}"
        )
    facts = {
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "dim": a.dim,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"facts": facts, "rows": rows}, indent=1))
    la = facts["load_after"]
    print(f"load average after: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

"""Crash test: SIGKILL an install at random moments, hundreds of times.

Each round forks a child that installs the next pack version and kills it after a random
delay drawn over the whole length of an install. After every kill, a fresh reader
("restart") must find a complete active pack, old or new, never a mix: the SQLite
integrity check passes, every document carries the active version, and the pack's own
smoke questions find their sources. The next round's install must also succeed in
cleaning up whatever the killed one left.

Forking (rather than exec'ing a new interpreter) keeps a round at tens of milliseconds;
the child shares nothing with the parent that SQLite cares about (the parent holds no
connection to the packs folder while the child runs). Killing a process does not test
power loss: the page cache survives (RELIABILITY.md, "Limits worth stating").
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeEmbedder

from runtime.packs.active import ActiveKnowledge
from runtime.packs.build import export_pack
from runtime.packs.format import PackFile, manifest_from_bytes
from runtime.packs.install import PackInstaller, load_smoke, read_pointer, run_smoke
from runtime.packs.sample import PackKit, fill_store, sample_records, sample_smoke

ROUNDS = 200
ROOT = Path(__file__).resolve().parents[2]


def _exporter(kit: PackKit, work: Path):
    """Two contents (A, B) kept in open stores; export either under any version in milliseconds."""
    from runtime.knowledge.store import KnowledgeStore

    stores = {}
    for tag in ("A", "B"):
        records = sample_records(6, 2, seed=7, tag=tag)
        store = KnowledgeStore.open(
            work / f"content-{tag}.sqlite",
            embedding_model=kit.binding.model_id,
            dim=kit.binding.dim,
        )
        fill_store(store, kit.embedder, records)
        stores[tag] = (store, *sample_smoke(records, kit.embedder))

    def make(version: int) -> Path:
        tag = "AB"[version % 2]
        store, smoke, vecs = stores[tag]
        out = work / f"v{version}.kpack"
        export_pack(
            store,
            out,
            pack_id="demo",
            version=version,
            sign=kit.sign,
            binding=kit.binding,
            smoke=smoke,
            smoke_vectors=vecs,
            locales=["en"],
        )
        return out

    def close() -> None:
        for store, *_ in stores.values():
            store.close()

    return make, close


def _check_restart(packs: Path) -> tuple[int, str]:
    """What a restarted kiosk sees: (active version, verdict). Fails the test on any inconsistency."""  # noqa: E501
    ptr = read_pointer(packs)
    entry = ptr["current"]
    assert entry is not None
    active = ActiveKnowledge(packs)  # opens with the integrity check
    try:
        with active.acquire() as store:
            assert store is not None, active.describe()
            assert active.using == "current", active.describe()
            versions = {d.pack_version for _, d in store.iter_documents()}
            assert versions == {entry["version"]}, f"mixed pack versions {versions}"
            stats = store.stats()
            assert (stats["documents"], stats["chunks"]) == (
                entry["counts"]["documents"],
                entry["counts"]["chunks"],
            )
            with PackFile(packs / entry["pack"]) as pf:
                m = manifest_from_bytes(pf.envelope.body)
            assert m.version == entry["version"]
            failed = run_smoke(store, load_smoke(packs / entry["pack"], m), 5)
            assert failed == [], f"smoke questions failed after restart: {failed}"
    finally:
        active.close()
    return entry["version"], "ok"


class _Worker:
    """The zygote (pack_install_worker.py) and its protocol."""

    def __init__(self, packs: Path, kit: PackKit) -> None:
        settings = {
            "keys": [kit.public_key],
            "binding": kit.binding.model_dump(),
            "locales": ["en"],
        }
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("pack_install_worker.py")),
                str(packs),
                json.dumps(settings),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def start(self, pack: Path) -> int:
        self.proc.stdin.write(f"{pack}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def status(self) -> int:
        return int(self.proc.stdout.readline())

    def run(self, pack: Path) -> float:
        t0 = time.perf_counter()
        self.start(pack)
        status = self.status()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        return time.perf_counter() - t0

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()


@pytest.mark.slow
def test_sigkill_during_install(tmp_path):
    kit = PackKit(tmp_path / "pub", FakeEmbedder(32))
    make, close = _exporter(kit, tmp_path / "pub")
    packs = tmp_path / "packs"
    settings = kit.settings()
    PackInstaller(packs, settings).install_file(make(1))
    worker = _Worker(packs, kit)
    # how long does a warm install take in the worker? the kill delays cover 0 .. 1.2x that
    times = [worker.run(make(v)) for v in range(2, 7)]
    full = sorted(times[2:])[1]
    finished_times: list[float] = []
    unfinished_streak = 0
    version = 6
    rng = random.Random(20261121)
    outcomes = {"old": 0, "new": 0, "finished": 0}
    for _ in range(ROUNDS):
        highest = max(version, read_pointer(packs)["current"]["version"])
        pack = make(highest + 1)
        before = read_pointer(packs)["current"]["version"]
        # follow the real install time: shrink to recent finished installs, grow when none finish
        if len(finished_times) >= 5:
            full = sorted(finished_times[-15:])[len(finished_times[-15:]) // 2]
        if unfinished_streak >= 8:
            full *= 1.3
            unfinished_streak = 0
        delay = rng.uniform(0, full * 1.2)
        t0 = time.perf_counter()
        pid = worker.start(pack)
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        status = worker.status()
        now_version, _ = _check_restart(packs)
        assert now_version in (before, highest + 1)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, "the install failed by itself"
            outcomes["finished"] += 1
            finished_times.append(time.perf_counter() - t0)
            unfinished_streak = 0
        else:
            assert os.WTERMSIG(status) == signal.SIGKILL
            outcomes["new" if now_version == highest + 1 else "old"] += 1
            unfinished_streak += 1
        version = highest + 1
    worker.close()
    print(
        f"\n{ROUNDS} installs killed at random (install takes {full * 1000:.0f} ms): {outcomes}; "
        f"{ROUNDS} complete knowledge bases after restart"
    )
    assert outcomes["old"] > 20  # kills landed before the switch...
    assert outcomes["new"] + outcomes["finished"] > 20  # ...and after it
    # leftovers of killed installs are cleaned by the next install; current + previous remain
    PackInstaller(packs, settings).install_file(make(version + 1))
    assert len([p for p in (packs / "stores").iterdir() if p.suffix == ".sqlite"]) == 2
    assert [p.name for p in (packs / "staging").iterdir()] in ([], ["downloads"])
    close()

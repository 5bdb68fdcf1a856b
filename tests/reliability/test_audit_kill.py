"""kill -9 while the audit log is writing: at most the turn in flight is lost, the log stays
readable.

A child process writes turns one by one and prints each turn's number once ``record(wait=True)``
returned (committed). The parent kills it with SIGKILL at a varying moment, then checks the file:
integrity ok, every acknowledged turn present, at most one more (committed, not yet printed).
Repeated on the same file, so recovery of a WAL left by a killed writer is exercised too.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.audit import AuditLog, TurnRecord, export_jsonl

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys
from runtime.audit import AuditLog, TurnRecord
log = AuditLog(sys.argv[1])
start = int(sys.argv[2])
n = start
while True:
    n += 1
    ok = log.record(TurnRecord(question=f"question {n} from 13912345678", answer="answer " * 40,
                               path="rag", trace_id=f"trace-{n}",
                               sources=[{"quote": "passage " * 30}]), wait=True)
    if not ok:
        raise SystemExit(3)
    sys.stdout.write(f"{n}\n")
    sys.stdout.flush()
"""


def _count(db: Path) -> tuple[int, int, str]:
    conn = sqlite3.connect(db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        n, top = conn.execute(
            "SELECT count(*), coalesce(max(CAST(substr(trace_id, 7) AS INTEGER)), 0) FROM turns"
        ).fetchone()
    finally:
        conn.close()
    return n, top, integrity


@pytest.mark.parametrize("kill_after_acks", [1, 7, 40])
def test_kill_9_during_logging_loses_at_most_the_turn_in_flight(tmp_path, kill_after_acks):
    db = tmp_path / "audit.sqlite"
    acked_total = 0
    for round_ in range(3):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(acked_total)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        acked = []
        try:
            while len(acked) < kill_after_acks + round_:
                line = proc.stdout.readline()
                assert line, f"child exited early with {proc.poll()}"
                acked.append(int(line))
            time.sleep(0.001 * (round_ + 1))  # let it be mid-write when the signal lands
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            acked += [int(x) for x in proc.stdout.read().split()]  # printed before the kill
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        acked_total = acked[-1]
        n, top, integrity = _count(db)
        assert integrity == "ok"
        assert top in (
            acked_total,
            acked_total + 1,
        )  # acknowledged turns all there; at most one more
        assert n == top  # no gaps, no duplicates
        acked_total = top
    # Still a working log after the kills: reopen, append, export.
    log = AuditLog(db)
    assert log.record(TurnRecord(question="after", answer="a", path="faq"), wait=True)
    log.close()
    with open(tmp_path / "out.jsonl", "w") as f:
        assert export_jsonl(db, f) == acked_total + 1
    assert b"13912345678" not in (tmp_path / "out.jsonl").read_bytes()

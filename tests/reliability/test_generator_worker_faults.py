"""The answer pipeline with its generator in a worker process, and the worker SIGKILLed.

What must hold: the question in flight when the worker dies, and every question asked while
it restarts, is answered within the turn's deadline by the fallback ladder and marked with the
path it took; once the supervisor has restarted the worker, questions get generated answers
again (the breaker half-opens, the trial succeeds, it closes).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from fakes import FakeEmbedder, build_answer_store

from runtime.answer import AnswerPipeline, PipelineSettings
from runtime.workers.supervisor import ProcessGenerator, WorkerSettings

UNIT = Path(__file__).resolve().parent.parent / "unit"  # test_generator_worker_fake.py
GENERATED = "The hall is closed all day on Sundays and on public holidays."
QUESTIONS = [
    "Is the hall open on Sundays?",
    "How much is a passport?",
    "周日开门吗？",
    "护照申请费是多少？",
    "When do counters open on Mondays?",
    "Where are the restrooms?",
    "Where can I park?",
]
DEADLINE_MS = 1500
TOTAL_MS = 4000
FALLBACK_PATHS = ("extractive", "faq", "cache", "fallback")


@pytest.fixture
def store(tmp_path):
    s = build_answer_store(tmp_path / "k.sqlite", FakeEmbedder(dim=64))
    yield s
    s.close()


@pytest.fixture
def worker():
    gen = ProcessGenerator(
        settings=WorkerSettings(
            memory_mb=0,
            restart_min_s=4.0,  # 2-4 s with jitter: long enough to ask every question meanwhile
            restart_max_s=8.0,
            ping_interval_s=0.2,
            ping_timeout_s=2.0,
            grace_s=1.0,
        ),
        factory="test_generator_worker_fake:make",
        factory_kwargs={"mode": "ok", "text": GENERATED, "piece_delay_s": 0.05},
        env={"PYTHONPATH": os.pathsep.join([str(UNIT), os.environ.get("PYTHONPATH", "")])},
    ).start()
    assert gen.wait_ready(60) == "ready", gen.status()
    yield gen
    gen.close()


def timed(p: AnswerPipeline, question: str, on_partial=None):
    p.cache.clear()
    t = time.monotonic()
    final = None
    for ev in p.stream(question):
        if ev.kind == "partial" and on_partial is not None:
            on_partial()
            on_partial = None
        if ev.kind == "done":
            final = ev.answer
    return final, (time.monotonic() - t) * 1000


def test_worker_killed_mid_answer_every_question_answered_then_generation_returns(store, worker):
    settings = PipelineSettings(
        deadline_ms=DEADLINE_MS,
        total_ms=TOTAL_MS,
        embed_timeout_ms=5000,
        breaker_failures=2,
        breaker_reset_s=0.5,
        faq_threshold=0.9,
    )
    p = AnswerPipeline(store, FakeEmbedder(dim=64), worker, settings=settings)
    try:
        before, _ = timed(p, QUESTIONS[0])
        assert before.path == "rag" and GENERATED in before.text, before.notes
        pid = worker.status()["pid"]

        # SIGKILL the worker as the first generated words arrive.
        killed, ms = timed(p, QUESTIONS[0], on_partial=lambda: os.kill(pid, signal.SIGKILL))
        assert killed.text.strip() and ms < TOTAL_MS, (killed.path, ms)
        assert killed.path in FALLBACK_PATHS, (killed.path, killed.notes)
        assert any("WorkerCrashedError" in n for n in killed.notes), killed.notes
        assert killed.sources and "closed all day on Sundays" in killed.sources[0].quote

        # While the worker restarts, every question is answered at once from the ladder.
        assert worker.status()["state"] == "restarting"
        down = [timed(p, q) for q in QUESTIONS]
        for answer, ms in down:
            assert answer.text.strip() and ms < TOTAL_MS, (answer.question, ms)
            # Never generated; "refusal" is the ladder's answer when nothing relevant is found.
            assert answer.path in (*FALLBACK_PATHS, "refusal"), (answer.question, answer.path)
        assert sum(a.path == "extractive" for a, _ in down) >= 3, [a.path for a, _ in down]
        reasons = " ".join(n for a, _ in down for n in a.notes)
        assert "WorkerUnavailableError" in reasons or "breaker open" in reasons, reasons
        assert worker.status()["state"] == "restarting", "the test asked too slowly to see the gap"

        # After the restart, generated answers come back.
        assert worker.wait_ready(60) == "ready"
        assert worker.status()["restarts"] == 1 and worker.status()["pid"] != pid
        time.sleep(settings.breaker_reset_s)  # the breaker lets its trial call through
        after, ms = timed(p, QUESTIONS[0])
        assert after.path == "rag" and GENERATED in after.text, (after.path, after.notes)
        assert ms < TOTAL_MS
        assert p.breakers["generator"].state == "closed"
    finally:
        p.close()

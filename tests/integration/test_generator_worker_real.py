"""The real default generator through the worker process: loaded in the child (not in this
process), streams a short answer, survives a consumer that stops early, and comes back after
a SIGKILL."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import require_prepared

from runtime.errors import WorkerCrashedError
from runtime.inference.base import GenerationRequest
from runtime.inference.generate_text import looks_like_garbage

pytestmark = pytest.mark.real_models


def test_real_generator_in_a_worker_process(kiosk_cfg, model_cache):
    from runtime.answer.generation import load_answer_generator

    require_prepared(model_cache, "qwen2.5-coder-0.5b-instruct", "openvino-int4")
    assert kiosk_cfg.generation.isolation == "process"
    gen, note = load_answer_generator(kiosk_cfg)
    assert gen is not None, note
    try:
        st = gen.status()
        assert st["state"] == "ready" and st["pid"] != os.getpid(), st
        assert "worker process" in note and gen.describe()["model"].startswith("qwen2.5")
        assert st["rss_mb"] > 200  # the model lives in the child
        question = GenerationRequest(
            prompt="What is the capital of France? Answer in one short sentence.", max_tokens=16
        )
        answer = gen.generate(question)
        assert "Paris" in answer and not looks_like_garbage(answer, language="en"), answer

        long = gen.stream(
            GenerationRequest(prompt="Count from one to one hundred in words.", max_tokens=200)
        )
        first = [next(long) for _ in range(2)]
        long.close()  # cancel: the child stops decoding and serves the next request
        assert all(isinstance(p, str) for p in first)
        assert "Paris" in gen.generate(question)

        pid = st["pid"]
        it = gen.stream(
            GenerationRequest(prompt="Count from one to one hundred in words.", max_tokens=200)
        )
        next(it)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            list(it)
        assert gen.wait_ready(300) == "ready"
        assert gen.status()["pid"] != pid and gen.status()["restarts"] == 1
        assert "Paris" in gen.generate(question)
    finally:
        gen.close()

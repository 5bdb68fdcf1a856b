"""The real generators: the default Qwen2.5-Coder-0.5B on OpenVINO GenAI (and on
onnxruntime-genai when that optional variant is prepared) streaming Chinese and
English answers, honouring stop strings, max tokens and max time."""

from __future__ import annotations

import os

import pytest
from conftest import require_prepared

from runtime.inference.base import GenerationRequest
from runtime.inference.generate_text import looks_like_garbage

pytestmark = pytest.mark.real_models

MODEL = "qwen2.5-coder-0.5b-instruct"
LONG = "Write a long, detailed essay about the history of public libraries."


@pytest.fixture(scope="module")
def openvino_gen(model_cache):
    from runtime.inference.generate_openvino import OpenVinoGenerator

    folder = require_prepared(model_cache, MODEL, "openvino-int4")
    gen = OpenVinoGenerator.load(folder, threads=2, model_id=MODEL)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def ortgenai_gen(model_cache):
    from runtime.errors import ModelNotPreparedError
    from runtime.inference.generate_ortgenai import OrtGenaiGenerator
    from runtime.prepare.cache import prepared_variant_dir

    pytest.importorskip("onnxruntime_genai")
    try:  # an optional variant: absent is a skip even in CI
        folder = prepared_variant_dir(model_cache, MODEL, "ortgenai-int4")
    except ModelNotPreparedError as exc:
        pytest.skip(str(exc))
    gen = OrtGenaiGenerator.load(folder, threads=2, model_id=MODEL)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def tiny_ortgenai(model_cache):
    """SmolLM2-135M on onnxruntime-genai: the English-only test fixture (optional variant)."""
    from runtime.errors import ModelNotPreparedError
    from runtime.inference.generate_ortgenai import OrtGenaiGenerator
    from runtime.prepare.cache import prepared_variant_dir

    pytest.importorskip("onnxruntime_genai")
    try:
        folder = prepared_variant_dir(model_cache, "smollm2-135m-instruct", "ortgenai-int4")
    except ModelNotPreparedError as exc:
        pytest.skip(str(exc))
    gen = OrtGenaiGenerator.load(folder, threads=2, model_id="smollm2-135m-instruct")
    yield gen
    gen.close()


@pytest.fixture(params=["openvino", "onnxruntime-genai"])
def gen(request):
    return request.getfixturevalue(
        "openvino_gen" if request.param == "openvino" else "ortgenai_gen"
    )


def test_english_answer_streams_in_pieces(gen):
    pieces = list(
        gen.stream(
            GenerationRequest(
                prompt="What is the capital of France? Answer in one short sentence.", max_tokens=32
            )
        )
    )
    text = "".join(pieces)
    assert len(pieces) > 1
    assert "Paris" in text
    assert not looks_like_garbage(text, language="en")


def test_chinese_answer_with_a_system_prompt(gen):
    text = gen.generate(
        GenerationRequest(
            system="你是服务大厅的助手。请用简体中文简短回答。",
            prompt="中国的首都是哪个城市？请用一句话回答。",
            max_tokens=32,
        )
    )
    assert "北京" in text
    assert not looks_like_garbage(text, language="zh")


def test_stop_string_ends_the_answer_before_it(gen):
    req = GenerationRequest(
        prompt="Count from 1 to 10, separated by commas. Output only the numbers.", max_tokens=40
    )
    full = gen.generate(req)
    assert "6" in full  # without a stop the model counts past 5
    stopped = gen.generate(GenerationRequest(prompt=req.prompt, max_tokens=40, stop=("5",)))
    assert "4" in stopped and "5" not in stopped
    assert full.startswith(stopped)


def test_max_tokens_is_honoured(gen):
    short = gen.generate(GenerationRequest(prompt=LONG, max_tokens=8))
    longer = gen.generate(GenerationRequest(prompt=LONG, max_tokens=24))
    assert 0 < gen.count_tokens(short) <= 8
    assert gen.count_tokens(short) < gen.count_tokens(longer) <= 24
    assert longer.startswith(short.rstrip())  # greedy: the same answer, cut earlier


def test_max_time_ends_a_long_answer(gen):
    text = gen.generate(GenerationRequest(prompt=LONG, max_tokens=400, max_time_s=0.2))
    assert gen.count_tokens(text) < 100  # 400 tokens take several seconds on any CPU here


def test_consumer_leaving_early_leaves_the_generator_usable(gen):
    stream = gen.stream(GenerationRequest(prompt=LONG, max_tokens=200))
    next(stream)
    stream.close()
    text = gen.generate(
        GenerationRequest(prompt="What is 2 + 3? Answer with the number only.", max_tokens=8)
    )
    assert "5" in text


@pytest.fixture(params=["qwen", "smollm2"])
def any_ortgenai(request):
    return request.getfixturevalue("ortgenai_gen" if request.param == "qwen" else "tiny_ortgenai")


def test_ortgenai_reuses_the_cached_system_prompt(any_ortgenai):
    ortgenai_gen = any_ortgenai
    system = "You are the help desk assistant of Riverside City Service Hall. " * 8
    first = GenerationRequest(system=system, prompt="When do you open?", max_tokens=4)
    second = GenerationRequest(system=system, prompt="Where can I pay a fee?", max_tokens=4)
    ortgenai_gen.generate(first)
    ortgenai_gen.generate(second)
    total = ortgenai_gen.count_tokens(ortgenai_gen.render_prompt(second))
    assert ortgenai_gen.last_prefill_tokens < total - ortgenai_gen.count_tokens(system) + 8
    # Greedy output is the same whether the prefix came from the cache or not.
    cached = ortgenai_gen.generate(second)
    ortgenai_gen.reuse_prefix = False
    try:
        fresh = ortgenai_gen.generate(second)
    finally:
        ortgenai_gen.reuse_prefix = True
    assert cached == fresh


@pytest.mark.skipif(
    not os.environ.get("KIOSK_TEST_QUALITY_TIER"),
    reason="set KIOSK_TEST_QUALITY_TIER=1 to load the 1.5B",
)
def test_quality_tier_answers_chinese(model_cache):
    from runtime.inference.generate_openvino import OpenVinoGenerator

    folder = require_prepared(model_cache, "qwen2.5-coder-1.5b-instruct", "openvino-int4")
    gen = OpenVinoGenerator.load(folder, threads=2, model_id="qwen2.5-coder-1.5b-instruct")
    text = gen.generate(
        GenerationRequest(prompt="中国的首都是哪个城市？请用一句话回答。", max_tokens=24)
    )
    assert "北京" in text and not looks_like_garbage(text, language="zh")

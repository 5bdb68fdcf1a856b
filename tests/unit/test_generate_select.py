"""Generator choice by measurement: a pure function tested with fake measurements."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kiosk_config.schema import KioskConfig
from runtime.errors import ConfigError, ModelNotPreparedError
from runtime.inference.base import GenerationRequest, Generator
from runtime.inference.generator_select import (
    Candidate,
    Measurement,
    candidates_from_manifests,
    choose_generator,
    load_measurements,
    measure_generator,
    measurement_prompt,
    parse_pin,
    save_measurements,
)

SMALL_OV = Candidate("qwen-0.5b", "openvino-int4", "openvino", 1, ("zh", "en"))
SMALL_ORT = Candidate("qwen-0.5b", "ortgenai-int4", "onnxruntime-genai", 1, ("zh", "en"))
BIG_OV = Candidate("qwen-1.5b", "openvino-int4", "openvino", 2, ("zh", "en"))
TINY_EN = Candidate("smol", "openvino-int4", "openvino", 0, ("en",))
ALL = [SMALL_OV, SMALL_ORT, BIG_OV, TINY_EN]


def m(c: Candidate, first: float, decode: float, error: str | None = None) -> Measurement:
    return Measurement(c.model_id, c.backend, c.variant, first, decode, 300, error=error)


def cfg(deadline_ms: int = 2000, generator: str = "auto", languages=("zh", "en")) -> KioskConfig:
    c = KioskConfig()
    c.answer.deadline_ms = deadline_ms
    c.models.generator = generator
    c.kiosk.languages = list(languages)
    return c


def test_most_accurate_tier_that_fits_wins():
    ms = [m(SMALL_OV, 1.6, 35), m(SMALL_ORT, 3.4, 48), m(BIG_OV, 1.9, 11)]
    choice = choose_generator(cfg(2000), ms, candidates=ALL)
    assert (choice.model_id, choice.backend) == ("qwen-1.5b", "openvino")
    assert not choice.pinned
    assert choice.measurement.first_token_s == 1.9
    assert any("fits" in r for r in choice.reasons)


def test_slow_quality_tier_falls_back_to_the_small_one_and_the_faster_first_token():
    ms = [m(SMALL_OV, 1.6, 35), m(SMALL_ORT, 1.9, 48), m(BIG_OV, 6.8, 11)]
    choice = choose_generator(cfg(2000), ms, candidates=ALL)
    assert (choice.model_id, choice.backend) == ("qwen-0.5b", "openvino")
    assert any("qwen-1.5b:openvino" in r and "too slow" in r for r in choice.reasons)


def test_decode_rate_below_a_reader_does_not_fit():
    ms = [m(SMALL_OV, 1.6, 35), m(BIG_OV, 1.0, 3.0)]
    assert choose_generator(cfg(2000), ms, candidates=ALL).model_id == "qwen-0.5b"


def test_when_nothing_fits_the_fastest_first_token_wins():
    ms = [m(SMALL_OV, 1.6, 35), m(SMALL_ORT, 3.4, 48), m(BIG_OV, 6.8, 11)]
    choice = choose_generator(cfg(500), ms, candidates=ALL)
    assert (choice.model_id, choice.backend) == ("qwen-0.5b", "openvino")
    assert "none fits" in choice.reasons[-1]


def test_english_only_model_is_never_chosen_for_a_chinese_kiosk():
    ms = [m(TINY_EN, 0.1, 140), m(SMALL_OV, 1.6, 35)]
    choice = choose_generator(cfg(2000), ms, candidates=ALL)
    assert choice.model_id == "qwen-0.5b"
    assert any(r.startswith("smol:openvino: skipped") for r in choice.reasons)
    # An English-only kiosk may use it; it is still less accurate, so only when nothing else fits.
    en_only = choose_generator(cfg(2000, languages=("en",)), ms, candidates=ALL)
    assert en_only.model_id == "qwen-0.5b"
    assert (
        choose_generator(cfg(2000, languages=("en",)), ms, candidates=[TINY_EN]).model_id == "smol"
    )


def test_broken_generators_are_skipped():
    ms = [m(BIG_OV, float("inf"), 0.0, error="garbage"), m(SMALL_ORT, 1.0, 40)]
    choice = choose_generator(cfg(2000), ms, candidates=ALL)
    assert (choice.model_id, choice.backend) == ("qwen-0.5b", "onnxruntime-genai")
    assert any("measurement failed: garbage" in r for r in choice.reasons)


def test_all_broken_means_no_generator():
    ms = [m(c, float("inf"), 0.0, error="crash") for c in (SMALL_OV, SMALL_ORT, BIG_OV)]
    choice = choose_generator(cfg(2000), ms, candidates=[SMALL_OV, SMALL_ORT, BIG_OV])
    assert choice.model_id is None


def test_unmeasured_box_runs_the_default_tier_and_says_so():
    small_default = Candidate("qwen-0.5b", "openvino-int4", "openvino", 1, ("zh", "en"), True)
    choice = choose_generator(cfg(2000), [], candidates=[small_default, SMALL_ORT, BIG_OV])
    assert (choice.model_id, choice.backend) == ("qwen-0.5b", "openvino")
    assert choice.measurement is None
    assert "not measured" in choice.reasons[-1] and "default tier" in choice.reasons[-1]


def test_unmeasured_box_without_a_default_tier_uses_the_accuracy_rank():
    choice = choose_generator(cfg(2000), [], candidates=ALL)
    assert (choice.model_id, choice.backend) == ("qwen-1.5b", "openvino")
    assert "most accurate" in choice.reasons[-1]


def test_pin_by_model_picks_its_fastest_backend():
    ms = [m(SMALL_OV, 1.6, 35), m(SMALL_ORT, 3.4, 48), m(BIG_OV, 1.0, 30)]
    choice = choose_generator(cfg(2000, generator="qwen-0.5b"), ms, candidates=ALL)
    assert (choice.model_id, choice.backend, choice.pinned) == ("qwen-0.5b", "openvino", True)


def test_pin_by_model_and_backend_is_honoured_even_when_slow():
    ms = [m(SMALL_OV, 1.6, 35), m(SMALL_ORT, 3.4, 48)]
    choice = choose_generator(
        cfg(1000, generator="qwen-0.5b:onnxruntime-genai"), ms, candidates=ALL
    )
    assert (choice.model_id, choice.backend, choice.pinned) == (
        "qwen-0.5b",
        "onnxruntime-genai",
        True,
    )
    assert any("over the 1.00s deadline" in r for r in choice.reasons)


def test_pin_of_an_unprepared_model_is_an_error_with_a_hint():
    with pytest.raises(ModelNotPreparedError, match="not a prepared generator") as info:
        choose_generator(cfg(generator="qwen-7b"), [], candidates=ALL)
    assert "kiosk models prepare qwen-7b" in info.value.hint


def test_parse_pin():
    assert parse_pin("auto") is None
    assert parse_pin("qwen") == ("qwen", None)
    assert parse_pin("qwen:openvino") == ("qwen", "openvino")
    with pytest.raises(ConfigError, match="unknown backend 'llamacpp'"):
        parse_pin("qwen:llamacpp")


def test_measurements_round_trip_and_other_machines_are_dropped(tmp_path):
    path = tmp_path / "gen" / "measurements.json"
    a = Measurement("qwen-0.5b", "openvino", "openvino-int4", 1.5, 35.0, 301, machine="box-a")
    b = Measurement(
        "qwen-1.5b", "openvino", "openvino-int4", float("inf"), 0.0, 0, machine="box-b", error="x"
    )
    save_measurements(path, [a, b])
    assert load_measurements(path) == [a, b]
    assert load_measurements(path, machine="box-a") == [a]
    assert load_measurements(tmp_path / "missing.json") == []
    path.write_text("{not json")
    assert load_measurements(path) == []


def test_candidates_come_from_prepared_generation_variants(tmp_path):
    from pathlib import Path

    from runtime.prepare.manifest import load_manifests

    manifests = load_manifests(Path(__file__).resolve().parents[2] / "models")
    everything = candidates_from_manifests(manifests, tmp_path, prepared_only=False)
    keys = {(c.model_id, c.backend): c for c in everything}
    assert (
        keys[("qwen2.5-coder-1.5b-instruct", "openvino")].accuracy_rank
        > keys[("qwen2.5-coder-0.5b-instruct", "openvino")].accuracy_rank
    )
    assert ("qwen2.5-coder-0.5b-instruct", "onnxruntime-genai") in keys
    assert all(c.backend in ("openvino", "onnxruntime-genai") for c in everything)  # no raw GGUF
    assert (
        candidates_from_manifests(manifests, tmp_path) == []
    )  # nothing prepared in an empty cache
    (tmp_path / "qwen2.5-coder-0.5b-instruct" / "openvino-int4").mkdir(parents=True)
    (tmp_path / "qwen2.5-coder-0.5b-instruct" / "openvino-int4" / "PREPARED.json").write_text("{}")
    prepared = candidates_from_manifests(manifests, tmp_path)
    assert [(c.model_id, c.variant) for c in prepared] == [
        ("qwen2.5-coder-0.5b-instruct", "openvino-int4")
    ]


class WordGenerator(Generator):
    """Streams a fixed answer word by word; one 'token' is one word."""

    backend = "fake"
    device = "CPU"
    model_id = "fake-words"

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        self.requests.append(request)
        for word in ("the hall opens at nine and closes at five " * 10).split()[
            : request.max_tokens
        ]:
            yield word + " "


def test_measurement_prompt_reaches_the_default_context():
    gen = WordGenerator()
    req = measurement_prompt(gen, 300)
    size = gen.count_tokens(req.system + req.prompt)
    assert 280 <= size <= 340
    assert req.system  # the system prompt is separate so backends can cache it


def test_measure_generator_runs_cold_then_warm_with_the_same_system_prompt():
    gen = WordGenerator()
    result = measure_generator(gen, variant="v", threads=2)
    assert result.model_id == "fake-words" and result.backend == "fake" and result.variant == "v"
    assert result.error is None
    assert (
        result.decode_tps > 0
        and result.first_token_s >= 0
        and result.cold_first_token_s is not None
    )
    assert result.prompt_tokens >= 280
    cold, second = gen.requests[1], gen.requests[2]
    assert cold.system == second.system and cold.prompt != second.prompt
    assert "2 threads" in result.machine


def test_nothing_prepared_says_what_to_run():
    choice = choose_generator(cfg(), [], candidates=[])
    assert choice.model_id is None
    assert "kiosk models prepare" in choice.reasons[0]


class FixedGenerator(WordGenerator):
    def __init__(self, model_id: str, backend: str, answer: str) -> None:
        super().__init__()
        self.model_id, self.backend, self.answer = model_id, backend, answer
        self.closed = False

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        yield self.answer

    def close(self) -> None:
        self.closed = True


def _prepare_fake(cache, model_id, variant):
    folder = cache / model_id / variant
    folder.mkdir(parents=True)
    (folder / "PREPARED.json").write_text("{}")


def test_load_falls_back_when_the_chosen_generator_answers_garbage(tmp_path, monkeypatch):
    from runtime.inference import generator_select as gs

    c = cfg()
    c.paths.model_cache = tmp_path / "models"
    c.paths.data_dir = tmp_path / "data"
    _prepare_fake(c.paths.model_cache, "qwen2.5-coder-1.5b-instruct", "openvino-int4")
    _prepare_fake(c.paths.model_cache, "qwen2.5-coder-0.5b-instruct", "openvino-int4")
    loaded = []

    def fake_load(cfg_, cand):
        # the default tier (0.5B) is tried first on an unmeasured box; make it the broken one
        answer = (
            "的的的的的的的的的的的的的的的"
            if cand.model_id.startswith("qwen2.5-coder-0.5b")
            else "Paris."
        )
        gen = FixedGenerator(cand.model_id, cand.backend, answer)
        loaded.append(gen)
        return gen

    monkeypatch.setattr(gs, "load_generator", fake_load)
    gen, choice = gs.load_chosen_generator(c)
    assert [g.model_id for g in loaded] == [
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
    ]
    assert loaded[0].closed
    assert gen is loaded[1] and choice.model_id == "qwen2.5-coder-1.5b-instruct"
    assert "garbage" in choice.reasons[0] and "fell back" in choice.reasons[0]


def test_load_gives_none_when_the_pinned_generator_is_broken(tmp_path, monkeypatch):
    from runtime.errors import InferenceError
    from runtime.inference import generator_select as gs

    c = cfg(generator="qwen2.5-coder-0.5b-instruct")
    c.paths.model_cache = tmp_path / "models"
    c.paths.data_dir = tmp_path / "data"
    _prepare_fake(c.paths.model_cache, "qwen2.5-coder-0.5b-instruct", "openvino-int4")
    _prepare_fake(c.paths.model_cache, "qwen2.5-coder-1.5b-instruct", "openvino-int4")

    def broken(cfg_, cand):
        raise InferenceError("native crash while loading")

    monkeypatch.setattr(gs, "load_generator", broken)
    gen, choice = gs.load_chosen_generator(c)
    assert gen is None and choice.model_id is None
    assert any("native crash" in r for r in choice.reasons)


def test_measure_prepared_stores_results_and_records_broken_generators(tmp_path, monkeypatch):
    from runtime.inference import generator_select as gs

    c = cfg()
    c.paths.model_cache = tmp_path / "models"
    c.paths.data_dir = tmp_path / "data"
    _prepare_fake(c.paths.model_cache, "qwen2.5-coder-0.5b-instruct", "openvino-int4")
    _prepare_fake(c.paths.model_cache, "qwen2.5-coder-1.5b-instruct", "openvino-int4")
    _prepare_fake(c.paths.model_cache, "smollm2-135m-instruct", "openvino-int4")
    loaded = []

    def fake_load(cfg_, cand):
        loaded.append(cand.model_id)
        bad = cand.model_id.startswith("qwen2.5-coder-1.5b")
        answer = "\ufffd\ufffd\ufffd" if bad else "Paris is the capital of France."
        return FixedGenerator(cand.model_id, cand.backend, answer)

    monkeypatch.setattr(gs, "load_generator", fake_load)
    results = gs.measure_prepared(c)
    assert "smollm2-135m-instruct" not in loaded  # English-only: never chosen here, never measured
    by_model = {m.model_id: m for m in results}
    assert by_model["qwen2.5-coder-1.5b-instruct"].error.startswith(
        "smoke answer looks like garbage"
    )
    assert by_model["qwen2.5-coder-0.5b-instruct"].error is None
    machine = gs.machine_fingerprint(c.devices.threads)
    assert gs.load_measurements(gs.measurements_path(c), machine=machine) == results
    choice = gs.choose_generator(c, results)
    assert choice.model_id == "qwen2.5-coder-0.5b-instruct"


def test_the_warm_turn_shares_only_the_system_prompt():
    gen = WordGenerator()
    measure_generator(gen)
    cold, warm = gen.requests[1], gen.requests[2]
    assert cold.system == warm.system
    common = 0
    while (
        common < min(len(cold.prompt), len(warm.prompt))
        and cold.prompt[common] == warm.prompt[common]
    ):
        common += 1
    assert common < 10  # passages differ from the start, as on a real next turn


def test_equal_first_tokens_are_decided_by_decode_rate():
    # Measured on the dev box: the same first token, onnxruntime-genai decoding ~2x faster.
    ms = [m(SMALL_OV, 1.535, 29.7), m(SMALL_ORT, 1.542, 52.4), m(BIG_OV, 9.7, 4.1)]
    choice = choose_generator(cfg(1000), ms, candidates=ALL)
    assert (choice.model_id, choice.backend) == ("qwen-0.5b", "onnxruntime-genai")
    fits = choose_generator(cfg(2000), ms, candidates=ALL)
    assert (fits.model_id, fits.backend) == ("qwen-0.5b", "onnxruntime-genai")

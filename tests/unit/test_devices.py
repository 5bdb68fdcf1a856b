"""Device choice is a pure function of probed capabilities: tested with fake probes."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.devices import Candidate, Capabilities, plan_placement
from runtime.errors import DeviceError, InferenceError
from runtime.inference.loader import check_embeddings, load_with_fallback
from runtime.prepare.manifest import ModelManifest

CPU_ONLY = Capabilities(backends=frozenset({"onnxruntime", "openvino"}), openvino_devices=("CPU",),
                        ort_providers=("CPUExecutionProvider",))
NPU_BOX = Capabilities(
    backends=frozenset({"onnxruntime", "openvino"}),
    openvino_devices=("CPU", "GPU.0", "NPU"),
    ort_providers=("CPUExecutionProvider",),
)
CUDA_BOX = Capabilities(
    backends=frozenset({"onnxruntime"}),
    ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
)
BOTH = {"onnx": "onnx-int8", "openvino": "openvino-int8"}
DEFAULT_PREF = ["NPU", "GPU", "CPU"]


def test_cpu_only_box_gets_cpu_candidates_in_backend_order():
    got = plan_placement(CPU_ONLY, task="embedding", variants=BOTH, preference=DEFAULT_PREF)
    assert got == [
        Candidate("onnxruntime", "CPU", "onnx-int8"),
        Candidate("openvino", "CPU", "openvino-int8"),
    ]


def test_npu_box_tries_npu_then_gpu_then_cpu():
    got = plan_placement(NPU_BOX, task="embedding", variants=BOTH, preference=DEFAULT_PREF)
    assert [(c.backend, c.device) for c in got] == [
        ("openvino", "NPU"),
        ("openvino", "GPU"),
        ("onnxruntime", "CPU"),
        ("openvino", "CPU"),
    ]


def test_cuda_is_reached_through_onnxruntime_only_when_its_variant_is_prepared():
    assert [
        c.device
        for c in plan_placement(CUDA_BOX, task="embedding", variants=BOTH, preference=DEFAULT_PREF)
    ] == ["GPU", "CPU"]
    assert (
        plan_placement(
            CUDA_BOX, task="embedding", variants={"openvino": "x"}, preference=DEFAULT_PREF
        )
        == []
    )


def test_preference_order_is_respected_and_cpu_is_always_last_resort():
    got = plan_placement(NPU_BOX, task="embedding", variants={"openvino": "ov"}, preference=["GPU"])
    assert [c.device for c in got] == ["GPU", "CPU"]


def test_backend_pin_and_missing_backend():
    got = plan_placement(
        NPU_BOX, task="embedding", variants=BOTH, preference=DEFAULT_PREF, backend="onnxruntime"
    )
    assert {c.backend for c in got} == {"onnxruntime"}
    no_ov = Capabilities(backends=frozenset({"onnxruntime"}), openvino_devices=("CPU", "NPU"))
    assert all(
        c.backend == "onnxruntime"
        for c in plan_placement(no_ov, task="embedding", variants=BOTH, preference=DEFAULT_PREF)
    )


def test_unknown_device_and_backend_are_typed_errors():
    with pytest.raises(DeviceError, match="unknown device"):
        plan_placement(CPU_ONLY, task="embedding", variants=BOTH, preference=["TPU"])
    with pytest.raises(DeviceError, match="cannot run"):
        plan_placement(
            CPU_ONLY, task="embedding", variants=BOTH, preference=["CPU"], backend="ctranslate2"
        )


MANIFEST = ModelManifest.model_validate(
    {
        "id": "fake",
        "task": "embedding",
        "license": "test",
        "source": {"kind": "path", "path": "/nonexistent"},
        "files": [{"name": "m.onnx", "parts": ["m.onnx"], "size": 1, "sha256": "0" * 64}],
        "variants": [{"name": "v", "format": "onnx", "precision": "fp32", "recipe": "copy"}],
    }
)


def test_fallback_skips_a_device_that_fails_to_load_and_one_that_fails_its_smoke_test():
    cands = [
        Candidate("openvino", "NPU", "v"),
        Candidate("openvino", "GPU", "v"),
        Candidate("onnxruntime", "CPU", "v"),
    ]
    closed = []

    class Runner:
        def __init__(self, cand):
            self.cand = cand

        def close(self):
            closed.append(self.cand.device)

    def open_fn(cand):
        if cand.device == "NPU":
            raise RuntimeError("compile failed: unsupported op")
        return Runner(cand)

    def smoke(runner):
        if runner.cand.device == "GPU":
            raise InferenceError("garbage output")

    runner, placement = load_with_fallback(MANIFEST, cands, open_fn, smoke)
    assert runner.cand.device == "CPU"
    assert placement.chosen == cands[2]
    assert [(a.candidate.device, a.ok) for a in placement.attempts] == [
        ("NPU", False),
        ("GPU", False),
        ("CPU", True),
    ]
    assert (
        "compile failed" in placement.attempts[0].error and "garbage" in placement.attempts[1].error
    )
    assert closed == ["GPU"]  # the runner that loaded but failed its smoke test was released
    assert placement.as_dict()["device"] == "CPU"


def test_no_working_device_is_a_device_error_listing_every_attempt():
    def open_fn(cand):
        raise RuntimeError(f"broken on {cand.device}")

    with pytest.raises(DeviceError, match="broken on NPU.*broken on CPU"):
        load_with_fallback(
            MANIFEST,
            [Candidate("openvino", "NPU", "v"), Candidate("onnxruntime", "CPU", "v")],
            open_fn,
            lambda r: None,
        )


def test_embedding_smoke_check_rejects_bad_output():
    good = np.eye(2, 4, dtype=np.float32)
    check_embeddings(good, 2, 4)
    with pytest.raises(InferenceError, match="shape"):
        check_embeddings(good, 2, 8)
    with pytest.raises(InferenceError, match="NaN"):
        check_embeddings(np.full((2, 4), np.nan, dtype=np.float32), 2, 4)
    with pytest.raises(InferenceError, match="unit length"):
        check_embeddings(good * 3, 2, 4)
    with pytest.raises(InferenceError, match="identical"):
        check_embeddings(np.tile(good[:1], (2, 1)), 2, 4)

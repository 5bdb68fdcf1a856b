"""Which backend and device runs each model: a pure function of what was probed.

``plan_placement`` takes the probed :class:`Capabilities` (see ``runtime/probe.py``),
the model's prepared variants and the configured device preference, and
returns the ordered list of candidates to try. It does no I/O, so it is
unit-tested with fake probes for NPU/GPU/CPU boxes. The loader
(``runtime/inference/loader.py``) walks that list, falling back to the next
candidate when a load, compile or smoke inference fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runtime.errors import DeviceError

DEVICES = ("NPU", "GPU", "CPU")

# onnxruntime execution providers that put work on each device kind.
ORT_PROVIDERS: Mapping[str, tuple[str, ...]] = {
    "NPU": ("QNNExecutionProvider", "VitisAIExecutionProvider"),
    "GPU": ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider",
            "CoreMLExecutionProvider"),
    "CPU": ("CPUExecutionProvider",),
}

# For each task: the backends that can run it and the prepared format each needs, in
# order of preference on the same device (set by the benchmarks in scripts/bench/).
TASK_BACKENDS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "embedding": (("onnxruntime", "onnx"), ("openvino", "openvino")),
    "generation": (("openvino_genai", "openvino"), ("onnxruntime_genai", "onnxruntime-genai")),
    "transcription": (("ctranslate2", "ctranslate2"),),
    "synthesis": (("onnxruntime", "onnx"), ("espeak-ng", "raw")),
}

# Python module (or program) that must be importable for a backend to be usable.
BACKEND_MODULES: Mapping[str, str] = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "openvino_genai": "openvino_genai",
    "onnxruntime_genai": "onnxruntime_genai",
    "ctranslate2": "ctranslate2",
    "espeak-ng": "espeak-ng",
}


@dataclass(frozen=True)
class Capabilities:
    """What the box offers. Built by runtime.probe.probe(); built by hand in tests."""

    backends: frozenset[str] = frozenset()  # names from BACKEND_MODULES that are usable
    openvino_devices: tuple[str, ...] = ()  # e.g. ("CPU", "GPU.0", "NPU")
    ort_providers: tuple[str, ...] = ()  # e.g. ("CUDAExecutionProvider", "CPUExecutionProvider")
    ctranslate2_cuda: bool = False
    cpu_flags: frozenset[str] = frozenset()

    def devices_for(self, backend: str) -> tuple[str, ...]:
        """Device kinds (NPU/GPU/CPU) this backend can reach on this box."""
        if backend not in self.backends:
            return ()
        if backend in ("openvino", "openvino_genai"):
            kinds = {d.split(".")[0] for d in self.openvino_devices}
            return tuple(d for d in DEVICES if d in kinds)
        if backend in ("onnxruntime", "onnxruntime_genai"):
            have = set(self.ort_providers) | {"CPUExecutionProvider"}
            return tuple(d for d in DEVICES if have.intersection(ORT_PROVIDERS[d]))
        if backend == "ctranslate2":
            return ("GPU", "CPU") if self.ctranslate2_cuda else ("CPU",)
        return ("CPU",)


@dataclass(frozen=True)
class Candidate:
    backend: str
    device: str
    variant: str  # the prepared variant the backend loads


@dataclass
class Attempt:
    candidate: Candidate
    ok: bool
    error: str = ""
    seconds: float = 0.0


@dataclass
class Placement:
    """Where a model ended up, and every attempt before it (for /healthz and `kiosk doctor`)."""

    model_id: str
    task: str
    chosen: Candidate | None
    attempts: list[Attempt] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model_id,
            "task": self.task,
            "backend": self.chosen.backend if self.chosen else None,
            "device": self.chosen.device if self.chosen else None,
            "variant": self.chosen.variant if self.chosen else None,
            "attempts": [
                {"backend": a.candidate.backend, "device": a.candidate.device,
                 "variant": a.candidate.variant, "ok": a.ok, "error": a.error,
                 "seconds": round(a.seconds, 3)}
                for a in self.attempts
            ],
        }


def plan_placement(
    caps: Capabilities,
    *,
    task: str,
    variants: Mapping[str, str],
    preference: Sequence[str],
    backend: str = "auto",
) -> list[Candidate]:
    """Ordered candidates for one model.

    ``variants`` maps a prepared format ("onnx", "openvino", ...) to the name of a
    prepared variant of that format. ``preference`` is the device order from the
    config (default NPU → GPU → CPU). ``backend`` pins one backend ("auto": any).
    Devices in the preference come first in its order; within a device, backends
    follow TASK_BACKENDS. CPU is always tried last even if the preference omits it,
    unless no backend can run the task on the CPU.
    """
    unknown = [d for d in preference if d not in DEVICES]
    if unknown:
        raise DeviceError(f"unknown device name(s) {unknown}", hint=f"use any of {list(DEVICES)}")
    if task not in TASK_BACKENDS:
        raise DeviceError(f"no backend is known for task {task!r}")
    pairs = TASK_BACKENDS[task]
    if backend != "auto":
        pairs = tuple(p for p in pairs if p[0] == backend)
        if not pairs:
            raise DeviceError(
                f"backend {backend!r} cannot run {task} models",
                hint=f"use one of {[p[0] for p in TASK_BACKENDS[task]]} or 'auto'",
            )
    order = list(dict.fromkeys([*preference, "CPU"]))
    out: list[Candidate] = []
    for device in order:
        for name, fmt in pairs:
            if fmt in variants and device in caps.devices_for(name):
                out.append(Candidate(backend=name, device=device, variant=variants[fmt]))
    return out

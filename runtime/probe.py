"""Probe the box: CPU features, importable backends, OpenVINO devices, onnxruntime providers.

Every probe is guarded: a backend that is missing or fails to initialise is
reported as absent (with the reason), never an exception at start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import platform
import shutil
from dataclasses import dataclass, field

from runtime.devices import BACKEND_MODULES, Capabilities

log = logging.getLogger(__name__)

INTERESTING_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                         "amx_tile", "amx_int8", "f16c")


@dataclass
class ProbeReport:
    caps: Capabilities
    cpu_model: str
    cores: int
    versions: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # backend -> why it is unusable


def _cpu_info() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = frozenset(line.split(":", 1)[1].split())
                if flags and model:
                    break
    except OSError:
        pass
    return model, flags


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        dist = {"openvino_genai": "openvino-genai", "onnxruntime_genai": "onnxruntime-genai"}.get(
            module, module
        )
        return version(dist)
    except Exception:  # noqa: BLE001 - version lookup is best effort
        return "?"


def probe() -> ProbeReport:
    model, flags = _cpu_info()
    backends: set[str] = set()
    versions: dict[str, str] = {}
    problems: dict[str, str] = {}
    ov_devices: tuple[str, ...] = ()
    ort_providers: tuple[str, ...] = ()
    ct2_cuda = False

    for backend, module in BACKEND_MODULES.items():
        if backend == "espeak-ng":
            if shutil.which("espeak-ng"):
                backends.add(backend)
            else:
                problems[backend] = "program espeak-ng not found (apt-get install espeak-ng)"
            continue
        if importlib.util.find_spec(module) is None:
            problems[backend] = f"Python package {module} is not installed"
            continue
        try:
            mod = importlib.import_module(module)
            if backend == "openvino":
                ov_devices = tuple(mod.Core().available_devices)
            elif backend == "onnxruntime":
                ort_providers = tuple(mod.get_available_providers())
            elif backend == "ctranslate2":
                ct2_cuda = mod.get_cuda_device_count() > 0
            backends.add(backend)
            versions[backend] = _version(module)
        except Exception as exc:  # noqa: BLE001 - a broken backend is reported, not fatal
            problems[backend] = f"{type(exc).__name__}: {exc}"
            log.warning("backend %s is unusable: %s", backend, exc)

    caps = Capabilities(
        backends=frozenset(backends),
        openvino_devices=ov_devices,
        ort_providers=ort_providers,
        ctranslate2_cuda=ct2_cuda,
        cpu_flags=frozenset(f for f in flags if f in INTERESTING_CPU_FLAGS),
    )
    return ProbeReport(caps=caps, cpu_model=model, cores=os.cpu_count() or 1,
                       versions=versions, problems=problems)

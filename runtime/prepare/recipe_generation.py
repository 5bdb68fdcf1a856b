"""Recipes that prepare the GGUF generators for each backend.

Three recipes, registered for the manifests in ``models/``:

``gguf-copy``
    the assembled GGUF as is (llama.cpp reads it; the benchmark reference).
``openvino-genai-gguf``
    an OpenVINO IR written by OpenVINO GenAI's own GGUF reader, with no torch.
    The reader accepts only some tensor types (F32, F16, Q4_0, Q4_1, Q4_K, Q6_K,
    Q8_0); the Qwen2.5-Coder-0.5B Q4_K_M file stores most weights as Q5_0, so
    those tensors are first requantized with the ``gguf`` package (numpy):
    matrices to Q4_0, the token embedding (read one row per token, so its size
    costs memory, not speed) to Q8_0. Every other tensor and all metadata are
    copied byte for byte. ``enable_save_ov_model=True`` then saves the IR,
    which loads in seconds where the GGUF takes a minute.
``ortgenai-builder``
    onnxruntime-genai int4 through its model builder. The builder cannot read a
    Q4_K_M GGUF and needs transformers 5.x + torch, which clash with the
    project's pins, so it runs in a separate preparation venv
    (``~/.cache/kiosk-assistant/prep-venv``, created on first use): transformers
    dequantizes the GGUF to safetensors, the builder quantizes to int4.

Peak memory on the 2-core box: requantizing the 0.5B about 1.8 GB, the OpenVINO
conversion about 1.7 GB (0.5B) and 3.8 GB (1.5B); timings in docs/generation.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from runtime.errors import ModelRecipeError

log = logging.getLogger(__name__)

# Tensor types OpenVINO GenAI 2025-2026 reads from GGUF (src/cpp/src/gguf_utils).
OPENVINO_GGUF_TYPES = frozenset({"F32", "F16", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "Q8_0"})


def unsupported_tensors(
    path: Path, supported: frozenset[str] = OPENVINO_GGUF_TYPES
) -> dict[str, str]:
    """Names and types of the tensors in ``path`` whose type is not in ``supported``."""
    import gguf

    reader = gguf.GGUFReader(path)
    return {
        t.name: t.tensor_type.name for t in reader.tensors if t.tensor_type.name not in supported
    }


def requantize_gguf(
    src: Path,
    dst: Path,
    *,
    target: str = "Q4_0",
    embedding_target: str = "Q8_0",
    supported: frozenset[str] = OPENVINO_GGUF_TYPES,
    report: Callable[[str], None] = lambda _msg: None,
) -> dict[str, int]:
    """Write ``dst``: ``src`` with every tensor of a type outside ``supported`` requantized.

    Matrix weights go to ``target``; the token embedding (read one row per token,
    so its size costs memory but not decode speed) goes to ``embedding_target``.
    Returns how many tensors were copied and requantized.
    """
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quantize

    try:
        reader = gguf.GGUFReader(src)
    except (OSError, ValueError) as exc:
        raise ModelRecipeError(
            f"GGUF file {src} cannot be read: {exc}",
            hint="check the assembled file with `kiosk models verify`",
        ) from None
    qtypes = gguf.GGMLQuantizationType
    arch_field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise ModelRecipeError(
            f"GGUF file {src} has no general.architecture key", hint="the file is not a model GGUF"
        )
    arch = arch_field.contents()
    writer = gguf.GGUFWriter(dst, arch)

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)

    planned: list[tuple[object, np.ndarray, object]] = []
    counts = {"copied": 0, "requantized": 0}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if kind in supported:
            data, raw = tensor.data, tensor.tensor_type
            counts["copied"] += 1
        else:
            new_kind = embedding_target if tensor.name == "token_embd.weight" else target
            new_type = qtypes[new_kind]
            # Dequantize now only to learn the byte shape; data is recomputed at write time.
            block, type_size = gguf.GGML_QUANT_SIZES[new_type]
            logical = tuple(int(x) for x in reversed(tensor.shape))  # numpy order (rows, cols)
            if logical[-1] % block:
                raise ModelRecipeError(
                    f"tensor {tensor.name} of {src} has a row of {logical[-1]} values, "
                    f"not a multiple of {block}",
                    hint=f"choose another target type than {new_kind}",
                )
            byte_shape = (*logical[:-1], logical[-1] // block * type_size)
            planned.append((tensor, byte_shape, new_type))
            counts["requantized"] += 1
            writer.add_tensor_info(
                tensor.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), new_type
            )
            continue
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, raw)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    todo = {id(t): (shape, kind) for t, shape, kind in planned}
    done = 0
    for tensor in reader.tensors:
        if id(tensor) in todo:
            shape, new_type = todo[id(tensor)]
            values = dequantize(tensor.data, tensor.tensor_type)
            packed = quantize(values.reshape(-1, values.shape[-1]), new_type).reshape(shape)
            del values
            writer.write_tensor_data(packed)
            done += 1
            if done % 25 == 0 or done == len(todo):
                report(
                    f"requantized {done}/{len(todo)} tensors "
                    f"({tensor.tensor_type.name} -> {new_type.name})"
                )
        else:
            writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    log.info("requantized %s into %s: %s", src, dst, counts)
    return counts


# --- recipes ------------------------------------------------------------------------

# Packages of the separate preparation venv for the onnxruntime-genai builder.
PREP_VENV_REQUIREMENTS = (
    "torch==2.13.0",  # a bare `torch` pulls several GB of CUDA packages
    "transformers>=5,<6",
    "gguf>=0.17",
    "onnxruntime-genai==0.18.0",
    "onnx>=1.17",
    "onnx-ir",
    "sentencepiece",
    "protobuf",
)


def _source_gguf(ctx) -> Path:
    name = ctx.variant.options.get("file") or ctx.manifest.files[0].name
    path = ctx.source(name)
    if not path.is_file():
        raise ModelRecipeError(
            f"model {ctx.manifest.id}: source file {name} is missing from {ctx.files_dir}",
            hint=f"run: kiosk models prepare {ctx.manifest.id}",
        )
    return path


def _link_or_copy(src: Path, dst: Path) -> None:
    import os
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _register() -> None:
    from runtime.prepare.recipes import recipe

    recipe("gguf-copy")(prepare_gguf_copy)
    recipe("openvino-genai-gguf")(prepare_openvino_from_gguf)
    recipe("ortgenai-builder")(prepare_ortgenai)


def prepare_gguf_copy(ctx) -> None:
    """The GGUF file itself (hard link when the cache is one file system)."""
    src = _source_gguf(ctx)
    _link_or_copy(src, ctx.out_dir / src.name)
    ctx.report(f"{ctx.manifest.id}: {src.name} ready for llama.cpp")


SMOKE_PROMPT = "What is the capital of France? Answer in one short sentence."


def prepare_openvino_from_gguf(ctx) -> None:
    """GGUF → (requantize what OpenVINO cannot read) → OpenVINO IR + tokenizer IRs."""
    import openvino_genai

    src = _source_gguf(ctx)
    work = ctx.out_dir / "model.gguf"
    missing = unsupported_tensors(src)
    if missing:
        ctx.report(
            f"{ctx.manifest.id}: requantizing {len(missing)} tensors of types "
            f"{sorted(set(missing.values()))} that OpenVINO GenAI cannot read"
        )
        counts = requantize_gguf(
            src,
            work,
            target=str(ctx.variant.options.get("requantize", "Q4_0")),
            embedding_target=str(ctx.variant.options.get("embedding", "Q8_0")),
            report=ctx.report,
        )
        ctx.report(
            f"{ctx.manifest.id}: {counts['requantized']} tensors requantized, "
            f"{counts['copied']} copied"
        )
    else:
        _link_or_copy(src, work)
    ctx.report(f"{ctx.manifest.id}: converting to OpenVINO IR (about a minute on 2 cores)")
    try:
        pipe = openvino_genai.LLMPipeline(
            str(work), "CPU", enable_save_ov_model=True, INFERENCE_NUM_THREADS=int(ctx.threads)
        )
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = 24
        answer = pipe.generate(SMOKE_PROMPT, config)
    except RuntimeError as exc:
        raise ModelRecipeError(
            f"OpenVINO GenAI could not convert {src.name}: {str(exc).splitlines()[0][:300]}",
            hint="upgrade openvino-genai, or requantize to another type "
            '(options.requantize = "Q8_0")',
        ) from None
    del pipe
    work.unlink()
    from runtime.inference.generate_text import looks_like_garbage

    if looks_like_garbage(str(answer), language="en"):
        raise ModelRecipeError(
            f"{ctx.manifest.id}: the converted model answers garbage: {str(answer)[:80]!r}",
            hint="requantize to Q8_0 (options.requantize) and prepare again",
        )
    if not (ctx.out_dir / "openvino_model.xml").is_file():
        raise ModelRecipeError(
            f"OpenVINO GenAI wrote no openvino_model.xml into {ctx.out_dir}",
            hint="upgrade openvino-genai (enable_save_ov_model needs 2025.2 or newer)",
        )
    ctx.tool_versions["openvino-genai"] = openvino_genai.__version__
    ctx.tool_versions["gguf"] = _version("gguf")
    ctx.report(f"{ctx.manifest.id}: OpenVINO IR ready; smoke answer {str(answer).strip()[:60]!r}")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def prep_venv_dir() -> Path:
    import os

    env = os.environ.get("KIOSK_PREP_VENV")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kiosk-assistant" / "prep-venv"


def ensure_prep_venv(report: Callable[[str], None] = print) -> Path:
    """The preparation venv's python, created and filled on first use (needs PyPI)."""
    import subprocess
    import sys

    venv = prep_venv_dir()
    python = venv / "bin" / "python"
    marker = venv / "kiosk-prep-requirements.txt"
    wanted = "\n".join(PREP_VENV_REQUIREMENTS) + "\n"
    if python.is_file() and marker.is_file() and marker.read_text() == wanted:
        return python
    report(f"creating the model preparation venv {venv} (torch + transformers; several minutes)")
    try:
        if not python.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *PREP_VENV_REQUIREMENTS], check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ModelRecipeError(
            f"the preparation venv {venv} could not be set up: {exc}",
            hint="check PyPI access, or set KIOSK_PREP_VENV to a venv with "
            + " ".join(PREP_VENV_REQUIREMENTS),
        ) from None
    marker.write_text(wanted)
    return python


# Runs inside the preparation venv: GGUF → safetensors (dequantized by transformers).
_GGUF_TO_HF = r"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, name, out, tie = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
torch.set_num_threads(int(sys.argv[5]))
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
if tie:
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.get_input_embeddings().weight
# The weights are plain floats now; drop the GGUF quantizer so transformers saves them.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
tok.save_pretrained(out)
"""


def prepare_ortgenai(ctx) -> None:
    """GGUF → safetensors (transformers) → onnxruntime-genai int4 (builder), in the prep venv."""
    import shutil
    import subprocess
    import tempfile

    src = _source_gguf(ctx)
    python = ensure_prep_venv(ctx.report)
    tie = bool(ctx.variant.options.get("tie_embeddings", True))
    with tempfile.TemporaryDirectory(dir=ctx.out_dir.parent, prefix=".ortgenai-") as tmp:
        hf_dir, cache = Path(tmp) / "hf", Path(tmp) / "cache"
        ctx.report(f"{ctx.manifest.id}: dequantizing {src.name} with transformers")
        steps = [
            [
                str(python),
                "-c",
                _GGUF_TO_HF,
                str(src.parent),
                src.name,
                str(hf_dir),
                "1" if tie else "0",
                str(ctx.threads),
            ],
            [
                str(python),
                "-m",
                "onnxruntime_genai.models.builder",
                "-i",
                str(hf_dir),
                "-o",
                str(ctx.out_dir),
                "-p",
                "int4",
                "-e",
                "cpu",
                "-c",
                str(cache),
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                raise ModelRecipeError(
                    f"{ctx.manifest.id}: step {' '.join(step[1:3])[:60]} failed: "
                    f"{done.stderr.strip()[-600:]}",
                    hint=f"check the preparation venv {prep_venv_dir()} (delete it to rebuild)",
                )
            ctx.report(
                f"{ctx.manifest.id}: {'dequantized' if step is steps[0] else 'int4 ONNX written'}"
            )
        shutil.rmtree(cache, ignore_errors=True)
    if not (ctx.out_dir / "genai_config.json").is_file():
        raise ModelRecipeError(
            f"the onnxruntime-genai builder wrote no genai_config.json into {ctx.out_dir}",
            hint="check the builder's output above",
        )
    ctx.tool_versions["onnxruntime-genai"] = "0.18.0"
    ctx.tool_versions["transformers"] = ">=5,<6"


_register()

"""Rewrite a GGUF file so OpenVINO GenAI can read it, with numpy only (no llama.cpp build).

OpenVINO GenAI's GGUF reader accepts only some tensor types (F32, F16, Q4_0,
Q4_1, Q4_K, Q6_K, Q8_0). The Qwen2.5-Coder-0.5B Q4_K_M file stores most of its
weights as Q5_0, which the reader refuses. The ``gguf`` package can dequantize
every common type and quantize a few (Q4_0, Q8_0, ...) in numpy, and
``GGUFWriter`` writes a new file: enough to requantize only the tensors the
reader refuses and copy every other tensor and all metadata byte for byte.

Memory: one tensor is dequantized at a time (the largest, Qwen's 151936×896
token embedding, is about 0.55 GB as float32).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from runtime.errors import ModelRecipeError

log = logging.getLogger(__name__)

# Tensor types OpenVINO GenAI 2025-2026 reads from GGUF (src/cpp/src/gguf_utils).
OPENVINO_GGUF_TYPES = frozenset({"F32", "F16", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "Q8_0"})


def unsupported_tensors(path: Path, supported: frozenset[str] = OPENVINO_GGUF_TYPES) -> dict[str, str]:
    """Names and types of the tensors in ``path`` whose type is not in ``supported``."""
    import gguf

    reader = gguf.GGUFReader(path)
    return {t.name: t.tensor_type.name for t in reader.tensors if t.tensor_type.name not in supported}


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
        raise ModelRecipeError(f"GGUF file {src} cannot be read: {exc}",
                               hint="check the assembled file with `kiosk models verify`") from None
    qtypes = gguf.GGMLQuantizationType
    arch_field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise ModelRecipeError(f"GGUF file {src} has no general.architecture key", hint="the file is not a model GGUF")
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
                    f"tensor {tensor.name} of {src} has a row of {logical[-1]} values, not a multiple of {block}",
                    hint=f"choose another target type than {new_kind}",
                )
            byte_shape = (*logical[:-1], logical[-1] // block * type_size)
            planned.append((tensor, byte_shape, new_type))
            counts["requantized"] += 1
            writer.add_tensor_info(tensor.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), new_type)
            continue
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, raw)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    todo = {id(t): (shape, kind) for t, shape, kind in planned}
    for i, tensor in enumerate(reader.tensors):
        if id(tensor) in todo:
            shape, new_type = todo[id(tensor)]
            values = dequantize(tensor.data, tensor.tensor_type)
            packed = quantize(values.reshape(-1, values.shape[-1]), new_type).reshape(shape)
            del values
            writer.write_tensor_data(packed)
            if i % 40 == 0:
                report(f"requantized {tensor.name} {tensor.tensor_type.name} -> {new_type.name}")
        else:
            writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    log.info("requantized %s into %s: %s", src, dst, counts)
    return counts

"""GGUF requantization for OpenVINO GenAI, on a tiny generated GGUF file."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from runtime.errors import ModelRecipeError
from runtime.prepare.recipe_generation import requantize_gguf, unsupported_tensors

Q = gguf.GGMLQuantizationType


def _write_tiny(path, rng):
    writer = gguf.GGUFWriter(path, "qwen2")
    writer.add_block_count(1)
    writer.add_string("tokenizer.chat_template", "{{ messages }}")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_uint32("tiny.value", 7)
    weights = {
        "token_embd.weight": rng.standard_normal((8, 64)).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((4, 64)).astype(np.float32),
        "blk.0.ffn_down.weight": rng.standard_normal((4, 64)).astype(np.float32),
    }
    writer.add_tensor(
        "token_embd.weight", quantize(weights["token_embd.weight"], Q.Q5_0), raw_dtype=Q.Q5_0
    )
    writer.add_tensor(
        "blk.0.attn_q.weight", quantize(weights["blk.0.attn_q.weight"], Q.Q5_0), raw_dtype=Q.Q5_0
    )
    writer.add_tensor(
        "blk.0.ffn_down.weight",
        quantize(weights["blk.0.ffn_down.weight"], Q.Q8_0),
        raw_dtype=Q.Q8_0,
    )
    norm = rng.standard_normal(64).astype(np.float32)
    writer.add_tensor("blk.0.attn_norm.weight", norm)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights, norm


def test_requantize_replaces_only_unreadable_tensors(tmp_path):
    src, dst = tmp_path / "in.gguf", tmp_path / "out.gguf"
    weights, norm = _write_tiny(src, np.random.default_rng(0))
    assert unsupported_tensors(src) == {"token_embd.weight": "Q5_0", "blk.0.attn_q.weight": "Q5_0"}

    counts = requantize_gguf(src, dst)
    assert counts == {"copied": 2, "requantized": 2}
    assert unsupported_tensors(dst) == {}

    before, after = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    types = {t.name: t.tensor_type for t in after.tensors}
    assert types == {
        "token_embd.weight": Q.Q8_0,
        "blk.0.attn_q.weight": Q.Q4_0,
        "blk.0.ffn_down.weight": Q.Q8_0,
        "blk.0.attn_norm.weight": Q.F32,
    }
    old = {t.name: t for t in before.tensors}
    for t in after.tensors:
        assert list(t.shape) == list(old[t.name].shape), t.name
        if t.tensor_type == old[t.name].tensor_type:  # copied byte for byte
            assert bytes(t.data) == bytes(old[t.name].data)
        else:  # requantized: still close to the original weights
            values = dequantize(t.data, t.tensor_type)
            reference = dequantize(old[t.name].data, old[t.name].tensor_type)
            err = np.abs(values - reference).mean() / np.abs(reference).mean()
            assert err < (0.02 if t.tensor_type == Q.Q8_0 else 0.15), (t.name, err)
    norm_out = next(t for t in after.tensors if t.name == "blk.0.attn_norm.weight")
    np.testing.assert_array_equal(np.asarray(norm_out.data, dtype=np.float32), norm)
    # Metadata survives, arrays and strings included.
    for key in (
        "tokenizer.chat_template",
        "tokenizer.ggml.tokens",
        "tiny.value",
        "qwen2.block_count",
    ):
        assert after.fields[key].contents() == before.fields[key].contents(), key
    assert after.fields["general.architecture"].contents() == "qwen2"


def test_requantize_refuses_rows_that_do_not_fit_the_block(tmp_path):
    src = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(src, "qwen2")
    writer.add_tensor(
        "blk.0.x.weight", quantize(np.ones((2, 32), np.float32), Q.Q5_0), raw_dtype=Q.Q5_0
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelRecipeError, match="not a multiple of 256"):
        requantize_gguf(src, tmp_path / "out.gguf", target="Q4_K")  # Q4_K blocks are 256 values


def test_not_a_gguf_file_is_a_recipe_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ModelRecipeError, match="cannot be read"):
        requantize_gguf(bad, tmp_path / "out.gguf")

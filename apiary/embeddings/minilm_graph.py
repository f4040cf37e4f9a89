"""all-MiniLM-L6-v2 as an ONNX graph, built from the bundled `model.safetensors` with `onnx`.

No exporter and no download: the graph is written node by node from the same weights the
numpy reference (`minilm_numpy.py`) reads, with ONNX Runtime's fused transformer operators
(the `com.microsoft` domain, what its own BERT optimizer emits), so nothing depends on the
runtime recognising patterns at load time:

    EmbedLayerNormalization  word + position (+ segment A, folded into position) embeddings,
                             LayerNorm, and each row's token count (the attention mask index)
    6 x  Attention           fused Q/K/V projection, 12 heads, softmax over the unpadded keys
         (or, in a graph for one text per run, MatMuls for Q, K and V and an unmasked
         MultiHeadAttention)
         MatMul, Add, LayerNormalization      output projection, residual, LayerNorm
         MatMul + BiasGelu                   feed-forward up, exact erf GELU
         MatMul, Add, LayerNormalization      feed-forward down, residual, LayerNorm
    mean pooling over the attention mask, then L2 normalisation (sentence-transformers' own)

Inputs: `input_ids` and `attention_mask`, int32 (batch, tokens), right-padded (a graph
built with `one_text` takes one unpadded text per run: its attention has no mask). Output:
`embeddings`, float32 (batch, 384), unit rows. `quantize` turns the dense layers' and the
attention projections' weights into int8 (activations are quantized per run, dynamically),
all but the few outlier input channels of the feed-forward down products (GELU_OUTLIERS);
the up products' outlier channels are spread over several int8 columns (SPREAD_PARTS).
Residual and LayerNorm are left as separate operators: sessions must be made with the
`SkipLayerNormFusion` optimizer off (`FUSIONS_OFF`), since ONNX Runtime's fused kernel
measured 6x slower on CPU (310 against 52 us for 136 tokens) and it would fuse them back.
The building is deterministic: the same weights give byte-identical files.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

HIDDEN = 384
HEADS = 12
LAYERS = 6
INTERMEDIATE = 1536
LAYER_NORM_EPS = 1e-12
OPSET = 18
# Bumped whenever the graph built from the same weights changes; the model's producer_version.
GRAPH_VERSION = 3

# Input channels of the feed-forward products whose values run far larger than all others
# (BERT's "massive activations"): five of the residual stream's 384 channels, the same ones
# in every layer, reach 11-30 where the rest stay under 10, and in the first four layers one
# or two of the 1536 GELU outputs reach 14-25 where the rest stay under 7 (none stands out
# in the last two). One uint8 scale over a whole input spends its range on them, which is
# what made int8 lose accuracy. `build(split_outliers=True)` keeps them out of that range:
# the GELU outliers go to a float32 product of their own (`quantize` leaves it float), and
# the residual outliers are spread over several input columns (`SPREAD_PARTS`). Found by
# running the float32 graph over varied text and taking each layer's largest maxima;
# tests/embeddings/test_minilm_onnx.py checks they still are.
RESIDUAL_OUTLIERS = (63, 99, 127, 157, 223)
GELU_OUTLIERS = ((856,), (607,), (218, 1004), (358,), (), ())
OUTLIER_SUFFIX = ".outliers"

# How a residual outlier channel is spread: its value is cut into these parts (normalised to
# sum to 1), each an input column of its own that multiplies the channel's own weight row,
# so the product is the same sum in float32 while each column stays within the range of
# the others (the largest part of 30 is 6.7). The parts are unequal so that their rounding
# errors differ and partly cancel: six equal parts round alike and add up six times. This
# replaced a float32 side product for these channels, whose small float product and the
# Add after it cost 10% of an int8 run; the up product gains 25 input columns (409).
SPREAD_PARTS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)

# ONNX Runtime optimizers a session of these graphs must run without (`disabled_optimizers`).
FUSIONS_OFF = ("SkipLayerNormFusion",)

_MS = "com.microsoft"


def build(
    weights: Path, *, split_outliers: bool = False, one_text: bool = False
) -> onnx.ModelProto:
    """The fp32 graph from a BERT `model.safetensors` (all-MiniLM-L6-v2's layout).

    `split_outliers` computes the feed-forward products' outlier channels apart (see
    RESIDUAL_OUTLIERS): the same arithmetic in float32 (to about 1e-7), the graph
    `quantize` wants.

    `one_text` builds a graph for runs of one text each, which no padding can be part of:
    its attention takes no mask, which lets ONNX Runtime use `MultiHeadAttention`'s faster
    CPU path (about 5% of a run; with a mask it measured 12% slower than `Attention`). A
    batch of padded texts gives wrong vectors in it; the embedder never sends one."""
    tensors = load_file(str(weights))
    initializers: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def constant(name: str, value: npt.ArrayLike, dtype: type = numpy.float32) -> str:
        initializers.append(
            numpy_helper.from_array(numpy.ascontiguousarray(value, dtype=dtype), name)
        )
        return name

    def weight(name: str) -> npt.NDArray[numpy.float32]:
        return numpy.asarray(tensors[name], dtype=numpy.float32)

    def linear(name: str) -> npt.NDArray[numpy.float32]:
        return weight(f"{name}.weight").T  # torch keeps (out, in); MatMul wants (in, out)

    def node(op: str, inputs: list[str], output: str, domain: str = "", **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def add_layer_norm(
        projected: str,
        bias_name: str,
        bias: npt.NDArray[numpy.float32],
        residual: str,
        norm_name: str,
        scale: npt.NDArray[numpy.float32],
        shift: npt.NDArray[numpy.float32],
        output: str,
    ) -> str:
        """LayerNorm(projected + bias + residual), as plain ONNX operators (see FUSIONS_OFF)."""
        biased = node("Add", [projected, constant(bias_name, bias)], f"{output}.biased")
        summed = node("Add", [biased, residual], f"{output}.residual")
        return node(
            "LayerNormalization",
            [summed, constant(f"{norm_name}.weight", scale), constant(f"{norm_name}.bias", shift)],
            output,
            axis=-1,
            epsilon=LAYER_NORM_EPS,
        )

    def spread_matmul(
        activations: str, weights: npt.NDArray[numpy.float32], output: str, outliers: Sequence[int]
    ) -> str:
        """activations @ weights, each outlier channel's value spread over len(SPREAD_PARTS)
        input columns: the channel scaled by the first part, and a copy of it per other
        part appended (Gather, Concat), each column multiplying the channel's weight row."""
        if not outliers:
            return node("MatMul", [activations, constant(f"{output}.weight", weights)], output)
        columns = sorted(outliers)
        parts = numpy.array(SPREAD_PARTS, dtype=numpy.float64) / sum(SPREAD_PARTS)
        copies = [column for column in columns for _ in parts[1:]]
        scale = numpy.ones(weights.shape[0] + len(copies), dtype=numpy.float32)
        scale[columns] = parts[0]
        scale[weights.shape[0] :] = numpy.tile(parts[1:], len(columns))
        picked = node(
            "Gather",
            [activations, constant(f"{output}.copy_index", copies, numpy.int64)],
            f"{output}.copies",
            axis=2,
        )
        widened = node("Concat", [activations, picked], f"{output}.widened", axis=2)
        spread = node("Mul", [widened, constant(f"{output}.parts", scale)], f"{output}.spread")
        rows = [*range(weights.shape[0]), *copies]
        return node("MatMul", [spread, constant(f"{output}.weight", weights[rows])], output)

    def matmul(
        activations: str, weights: npt.NDArray[numpy.float32], output: str, outliers: Sequence[int]
    ) -> str:
        """activations @ weights; with `outliers`, as the product over every other input
        channel (those zeroed) plus a float32 product over the outlier channels alone."""
        if not outliers:
            return node("MatMul", [activations, constant(f"{output}.weight", weights)], output)
        columns = sorted(outliers)
        keep = numpy.ones(weights.shape[0], dtype=numpy.float32)
        keep[columns] = 0.0
        inliers = node(
            "Mul", [activations, constant(f"{output}.inlier_mask", keep)], f"{output}.inliers"
        )
        main = node("MatMul", [inliers, constant(f"{output}.weight", weights)], output)
        picked = node(
            "Gather",
            [activations, constant(f"{output}.outlier_index", columns, numpy.int64)],
            f"{output}.outlier_columns",
            axis=2,
        )
        side = node(
            "MatMul",
            [picked, constant(f"{output}.outliers.weight", weights[columns])],
            f"{output}{OUTLIER_SUFFIX}",
        )
        return node("Add", [main, side], f"{output}.sum")

    # Every token of a single text is segment A, so segment row 0 is added to every position
    # row once here rather than gathered per token.
    positions = (
        weight("embeddings.position_embeddings.weight")
        + weight("embeddings.token_type_embeddings.weight")[0]
    )
    nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            [
                "input_ids",
                "",  # segment_ids: folded into the positions above
                constant("word_embeddings", weight("embeddings.word_embeddings.weight")),
                constant("position_embeddings", positions),
                "",
                constant("embeddings_norm.weight", weight("embeddings.LayerNorm.weight")),
                constant("embeddings_norm.bias", weight("embeddings.LayerNorm.bias")),
                "attention_mask",
            ],
            ["embedded", "mask_index"],
            name="embed_layer_norm",
            domain=_MS,
            epsilon=LAYER_NORM_EPS,
        )
    )
    hidden = "embedded"
    for index in range(LAYERS):
        prefix = f"encoder.layer.{index}"
        attention = f"{prefix}.attention.self"
        parts = ("query", "key", "value")
        if one_text:
            projections = []
            for part in parts:
                matrix = constant(f"{prefix}.{part}.weight", linear(f"{attention}.{part}"))
                bias = constant(f"{prefix}.{part}.bias", weight(f"{attention}.{part}.bias"))
                product = node("MatMul", [hidden, matrix], f"{prefix}.{part}.product")
                projections.append(node("Add", [product, bias], f"{prefix}.{part}"))
            context = node(
                "MultiHeadAttention", projections, f"{prefix}.context", domain=_MS, num_heads=HEADS
            )
        else:
            qkv_weight = numpy.concatenate(
                [linear(f"{attention}.{part}") for part in parts], axis=1
            )
            qkv_bias = numpy.concatenate([weight(f"{attention}.{part}.bias") for part in parts])
            context = node(
                "Attention",
                [
                    hidden,
                    constant(f"{prefix}.qkv.weight", qkv_weight),
                    constant(f"{prefix}.qkv.bias", qkv_bias),
                    "mask_index",
                ],
                f"{prefix}.context",
                domain=_MS,
                num_heads=HEADS,
            )
        projected = node(
            "MatMul",
            [
                context,
                constant(
                    f"{prefix}.attention_out.weight", linear(f"{prefix}.attention.output.dense")
                ),
            ],
            f"{prefix}.attention_out",
        )
        attended = add_layer_norm(
            projected,
            f"{prefix}.attention_out.bias",
            weight(f"{prefix}.attention.output.dense.bias"),
            hidden,
            f"{prefix}.attention_norm",
            weight(f"{prefix}.attention.output.LayerNorm.weight"),
            weight(f"{prefix}.attention.output.LayerNorm.bias"),
            f"{prefix}.attended",
        )
        up = spread_matmul(
            attended,
            linear(f"{prefix}.intermediate.dense"),
            f"{prefix}.up",
            RESIDUAL_OUTLIERS if split_outliers else (),
        )
        activated = node(
            "BiasGelu",
            [up, constant(f"{prefix}.up.bias", weight(f"{prefix}.intermediate.dense.bias"))],
            f"{prefix}.gelu",
            domain=_MS,
        )
        down = matmul(
            activated,
            linear(f"{prefix}.output.dense"),
            f"{prefix}.down",
            GELU_OUTLIERS[index] if split_outliers else (),
        )
        hidden = add_layer_norm(
            down,
            f"{prefix}.down.bias",
            weight(f"{prefix}.output.dense.bias"),
            attended,
            f"{prefix}.output_norm",
            weight(f"{prefix}.output.LayerNorm.weight"),
            weight(f"{prefix}.output.LayerNorm.bias"),
            f"{prefix}.output",
        )

    # Mean pooling over the real tokens: (batch, tokens, 1) mask, summed hidden states over
    # the token count, then unit length (sentence-transformers' Normalize, eps 1e-12).
    mask = node("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)
    mask = node("Unsqueeze", [mask, constant("axis_2", [2], numpy.int64)], "mask_column")
    summed = node(
        "ReduceSum",
        [node("Mul", [hidden, mask], "masked_hidden"), constant("axis_1", [1], numpy.int64)],
        "summed",
        keepdims=0,
    )
    counts = node("ReduceSum", [mask, "axis_1"], "token_counts", keepdims=0)
    counts = node("Max", [counts, constant("min_count", 1e-9)], "token_counts_safe")
    pooled = node("Div", [summed, counts], "pooled")
    norm = node("ReduceL2", [pooled, constant("axis_last", [-1], numpy.int64)], "norm", keepdims=1)
    norm = node("Max", [norm, constant("min_norm", 1e-12)], "norm_safe")
    node("Div", [pooled, norm], "embeddings")

    batch_tokens = ["batch", "tokens"]
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT32, batch_tokens),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT32, batch_tokens),
        ],
        outputs=[helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", HIDDEN])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(_MS, 1)],
        producer_name="apiary",
        producer_version=str(GRAPH_VERSION),
    )
    model.ir_version = 8  # what ONNX Runtime 1.20+ reads; onnx's newest may be ahead of it
    return model


def quantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (built with `split_outliers=True`) with int8 weights (one scale per output
    channel) in its Attention projections and MatMuls, activations quantized to uint8 per
    run over the whole batch (ONNX Runtime's dynamic quantization). Only the products over
    the GELU outlier channels stay float32.

    Against the float32 graph on the knowledge test corpus's chunks and questions, every
    vector's cosine was at least 0.9966 with both kinds of outlier in float32 products, and
    0.997 with the residual ones spread (at 0.9x the time); quantizing every product whole
    gave 0.985, and keeping the down projections whole in float32 (an earlier way) 0.994 at
    1.4x the time. Per-tensor weight scales went down to 0.87.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_float = [node.name for node in model.graph.node if node.name.endswith(OUTLIER_SUFFIX)]

    with tempfile.TemporaryDirectory(prefix="apiary-minilm-") as scratch:
        output = Path(scratch) / "quantized.onnx"
        quantize_dynamic(
            model,
            output,
            op_types_to_quantize=["MatMul", "Attention"],
            nodes_to_exclude=keep_float,
            per_channel=True,
            weight_type=QuantType.QInt8,
            # Shape inference does not know the com.microsoft operators' output types.
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
        return onnx.load(str(output))

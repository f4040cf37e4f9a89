"""all-MiniLM-L6-v2 as an ONNX graph, built from the bundled `model.safetensors` with `onnx`.

No exporter and no download: the graph is written node by node from the same weights the
numpy reference (`minilm_numpy.py`) reads, with ONNX Runtime's fused transformer operators
(the `com.microsoft` domain, what its own BERT optimizer emits), so nothing depends on the
runtime recognising patterns at load time:

    EmbedLayerNormalization  word + position (+ segment A, folded into position) embeddings,
                             LayerNorm, and each row's token count (the attention mask index)
    6 x  Attention           fused Q/K/V projection, 12 heads, softmax over the unpadded keys
         MatMul + SkipLayerNormalization     output projection, residual, LayerNorm
         MatMul + BiasGelu                   feed-forward up, exact erf GELU
         MatMul + SkipLayerNormalization     feed-forward down, residual, LayerNorm
    mean pooling over the attention mask, then L2 normalisation (sentence-transformers' own)

Inputs: `input_ids` and `attention_mask`, int32 (batch, tokens), right-padded. Output:
`embeddings`, float32 (batch, 384), unit rows. `quantize` turns the dense layers' and the
attention projections' weights into int8 (activations are quantized per run, dynamically).
The building is deterministic: the same weights give byte-identical files.
"""

from __future__ import annotations

import tempfile
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
# Bumped whenever the graph built from the same weights changes: it is part of the cache key.
GRAPH_VERSION = 1

_MS = "com.microsoft"


def build(weights: Path) -> onnx.ModelProto:
    """The fp32 graph from a BERT `model.safetensors` (all-MiniLM-L6-v2's layout)."""
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
        qkv_weight = numpy.concatenate(
            [linear(f"{attention}.{part}") for part in ("query", "key", "value")], axis=1
        )
        qkv_bias = numpy.concatenate(
            [weight(f"{attention}.{part}.bias") for part in ("query", "key", "value")]
        )
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
        attended = node(
            "SkipLayerNormalization",
            [
                projected,
                hidden,
                constant(
                    f"{prefix}.attention_norm.weight",
                    weight(f"{prefix}.attention.output.LayerNorm.weight"),
                ),
                constant(
                    f"{prefix}.attention_norm.bias",
                    weight(f"{prefix}.attention.output.LayerNorm.bias"),
                ),
                constant(
                    f"{prefix}.attention_out.bias", weight(f"{prefix}.attention.output.dense.bias")
                ),
            ],
            f"{prefix}.attended",
            domain=_MS,
            epsilon=LAYER_NORM_EPS,
        )
        up = node(
            "MatMul",
            [attended, constant(f"{prefix}.up.weight", linear(f"{prefix}.intermediate.dense"))],
            f"{prefix}.up",
        )
        activated = node(
            "BiasGelu",
            [up, constant(f"{prefix}.up.bias", weight(f"{prefix}.intermediate.dense.bias"))],
            f"{prefix}.gelu",
            domain=_MS,
        )
        down = node(
            "MatMul",
            [activated, constant(f"{prefix}.down.weight", linear(f"{prefix}.output.dense"))],
            f"{prefix}.down",
        )
        hidden = node(
            "SkipLayerNormalization",
            [
                down,
                attended,
                constant(
                    f"{prefix}.output_norm.weight", weight(f"{prefix}.output.LayerNorm.weight")
                ),
                constant(f"{prefix}.output_norm.bias", weight(f"{prefix}.output.LayerNorm.bias")),
                constant(f"{prefix}.down.bias", weight(f"{prefix}.output.dense.bias")),
            ],
            f"{prefix}.output",
            domain=_MS,
            epsilon=LAYER_NORM_EPS,
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
    """The graph with int8 weights (one scale per output channel) in its Attention
    projections and MatMuls, activations quantized to uint8 per run over the whole batch
    (ONNX Runtime's dynamic quantization).

    The feed-forward down projections stay float32: their input, GELU's output, has a few
    channels far larger than the rest, and one uint8 scale for all of them cost the most
    accuracy. Measured against the float32 graph on the knowledge test corpus (300 chunks of
    800 characters and its 55 questions): every vector within cosine 0.993 with them kept,
    down to 0.985 with them quantized too; per-tensor weight scales went down to 0.87.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_float = [node.name for node in model.graph.node if node.name.endswith(".down")]

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

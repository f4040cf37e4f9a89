"""all-MiniLM-L6-v2 sentence embeddings in numpy: the reference the ONNX Runtime embedder
(`minilm.py`) is checked and benchmarked against.

It reads the same bundled weights and tokenizer as `minilm.py` (see there). The pipeline is
sentence-transformers' own for this model: BERT tokenization truncated to 256 word pieces,
the 6-layer BERT encoder (12 heads, hidden 384, exact erf GELU, LayerNorm eps 1e-12), mean
pooling over the attention mask, then L2 normalisation. Texts are sorted by length and run
in padded batches so short texts do not pay for long ones, spread over one worker thread per
core (numpy releases the GIL in its heavy parts). The model loads lazily, once per process,
behind a lock, and sets the process's BLAS to one thread (see `_load_once`); after that
`embed` is safe to call from many threads at once. This was the product's embedder until
ONNX Runtime replaced it (docs/architecture.md, "Embeddings"); tests/embeddings compares the
two, and bench/knowledge.py times them side by side.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy
import numpy.typing as npt
from safetensors.numpy import load_file
from threadpoolctl import threadpool_limits
from tokenizers import Encoding, Tokenizer

from apiary.embeddings.minilm import cpu_count, load_tokenizer, model_dir

_HIDDEN = 384
_HEADS = 12
_LAYERS = 6
_LAYER_NORM_EPS = 1e-12
_BATCH_SIZE = 32
# Padded keys get this added to their attention score, so softmax gives them exactly zero.
_MASKED_SCORE = numpy.float32(-1e9)

Float32Array = npt.NDArray[numpy.float32]


@dataclass(frozen=True, slots=True)
class _EncoderLayer:
    qkv_weight: Float32Array  # (384, 1152): query, key and value projections side by side
    qkv_bias: Float32Array
    attention_out_weight: Float32Array  # (384, 384)
    attention_out_bias: Float32Array
    attention_norm_weight: Float32Array
    attention_norm_bias: Float32Array
    intermediate_weight: Float32Array  # (384, 1536)
    intermediate_bias: Float32Array
    output_weight: Float32Array  # (1536, 384)
    output_bias: Float32Array
    output_norm_weight: Float32Array
    output_norm_bias: Float32Array


@dataclass(frozen=True, slots=True)
class _Model:
    tokenizer: Tokenizer
    word_embeddings: Float32Array
    position_embeddings: Float32Array
    token_type_embedding: Float32Array  # row 0: every token of a single text is segment A
    embedding_norm_weight: Float32Array
    embedding_norm_bias: Float32Array
    layers: tuple[_EncoderLayer, ...]


def _load_model(folder: Path) -> _Model:
    tensors = load_file(str(folder / "model.safetensors"))

    def vector(name: str) -> Float32Array:
        return numpy.ascontiguousarray(tensors[name], dtype=numpy.float32)

    def linear(name: str) -> Float32Array:
        # Stored as torch's (out, in); kept as (in, out) so a forward pass is `x @ w`.
        return numpy.ascontiguousarray(tensors[f"{name}.weight"].T, dtype=numpy.float32)

    # Attention scores are scaled by 1/sqrt(head size); doing it to the query weights and bias
    # here saves a pass over every score matrix.
    query_scale = numpy.float32(1 / math.sqrt(_HIDDEN // _HEADS))
    layers = []
    for index in range(_LAYERS):
        prefix = f"encoder.layer.{index}"
        attention = f"{prefix}.attention.self"
        layers.append(
            _EncoderLayer(
                qkv_weight=numpy.concatenate(
                    [
                        linear(f"{attention}.query") * query_scale,
                        linear(f"{attention}.key"),
                        linear(f"{attention}.value"),
                    ],
                    axis=1,
                ),
                qkv_bias=numpy.concatenate(
                    [
                        vector(f"{attention}.query.bias") * query_scale,
                        vector(f"{attention}.key.bias"),
                        vector(f"{attention}.value.bias"),
                    ]
                ),
                attention_out_weight=linear(f"{prefix}.attention.output.dense"),
                attention_out_bias=vector(f"{prefix}.attention.output.dense.bias"),
                attention_norm_weight=vector(f"{prefix}.attention.output.LayerNorm.weight"),
                attention_norm_bias=vector(f"{prefix}.attention.output.LayerNorm.bias"),
                intermediate_weight=linear(f"{prefix}.intermediate.dense"),
                intermediate_bias=vector(f"{prefix}.intermediate.dense.bias"),
                output_weight=linear(f"{prefix}.output.dense"),
                output_bias=vector(f"{prefix}.output.dense.bias"),
                output_norm_weight=vector(f"{prefix}.output.LayerNorm.weight"),
                output_norm_bias=vector(f"{prefix}.output.LayerNorm.bias"),
            )
        )

    return _Model(
        tokenizer=load_tokenizer(folder),
        word_embeddings=vector("embeddings.word_embeddings.weight"),
        position_embeddings=vector("embeddings.position_embeddings.weight"),
        token_type_embedding=vector("embeddings.token_type_embeddings.weight")[0].copy(),
        embedding_norm_weight=vector("embeddings.LayerNorm.weight"),
        embedding_norm_bias=vector("embeddings.LayerNorm.bias"),
        layers=tuple(layers),
    )


def _layer_norm_(x: Float32Array, weight: Float32Array, bias: Float32Array) -> Float32Array:
    """LayerNorm over the last axis, computed in place in `x` (which it returns)."""
    x -= x.mean(axis=-1, keepdims=True)
    variance = numpy.mean(numpy.square(x), axis=-1, keepdims=True)
    variance += numpy.float32(_LAYER_NORM_EPS)
    x /= numpy.sqrt(variance, out=variance)
    x *= weight
    x += bias
    return x


# Abramowitz & Stegun 7.1.26: |erf error| < 1.5e-7, below float32's resolution near 1.
_ERF_P = numpy.float32(0.3275911)
_ERF_A1, _ERF_A2, _ERF_A3, _ERF_A4, _ERF_A5 = (
    numpy.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)
_SQRT_HALF = numpy.float32(1 / math.sqrt(2))


def _gelu_(x: Float32Array) -> Float32Array:
    """BERT's exact GELU, x * Phi(x) (not the tanh approximation), in place in `x`."""
    z = x * _SQRT_HALF
    magnitude = numpy.abs(z)
    t = magnitude * _ERF_P
    t += 1
    numpy.reciprocal(t, out=t)
    tail = t * _ERF_A5  # becomes 1 - erf(|z|) = poly(t) * exp(-z^2)
    for coefficient in (_ERF_A4, _ERF_A3, _ERF_A2, _ERF_A1):
        tail += coefficient
        tail *= t
    numpy.square(magnitude, out=magnitude)
    numpy.negative(magnitude, out=magnitude)
    tail *= numpy.exp(magnitude, out=magnitude)
    # 1 + erf(z) = 1 + sign(z) * (1 - tail)
    numpy.subtract(1, tail, out=tail)
    tail *= numpy.copysign(numpy.float32(1), z, out=z)
    tail += 1
    x *= tail
    x *= numpy.float32(0.5)
    return x


def _softmax_(scores: Float32Array) -> Float32Array:
    """Softmax over the last axis, in place."""
    scores -= scores.max(axis=-1, keepdims=True)
    numpy.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


# Work is cut into blocks that stay in cache: elementwise passes over a few MB are several
# times faster than over the whole batch, and the matmuls are still large enough for BLAS.
_ROW_BLOCK = 256  # token rows per feed-forward block
_SCORE_BLOCK = 1 << 20  # attention scores (float32) per block of sequences


def _encode(model: _Model, token_ids: npt.NDArray[numpy.int64], mask: Float32Array) -> Float32Array:
    """BERT's last hidden state, (batch, tokens, 384), for a right-padded batch."""
    batch, length = token_ids.shape
    hidden_size = model.word_embeddings.shape[1]
    head_size = hidden_size // _HEADS
    hidden = model.word_embeddings[token_ids]
    hidden += model.position_embeddings[:length]
    hidden += model.token_type_embedding
    hidden = _layer_norm_(hidden, model.embedding_norm_weight, model.embedding_norm_bias)
    hidden = hidden.reshape(batch * length, hidden_size)
    # (batch, 1, 1, keys): broadcast over heads and queries.
    score_bias = ((numpy.float32(1.0) - mask) * _MASKED_SCORE)[:, None, None, :]
    sequences_per_block = max(1, _SCORE_BLOCK // (_HEADS * length * length))
    context = numpy.empty((batch, length, _HEADS, head_size), dtype=numpy.float32)

    for layer in model.layers:
        qkv = hidden @ layer.qkv_weight
        qkv += layer.qkv_bias
        heads = qkv.reshape(batch, length, 3, _HEADS, head_size)
        for first in range(0, batch, sequences_per_block):
            block = slice(first, first + sequences_per_block)
            query = heads[block, :, 0].transpose(0, 2, 1, 3)  # (seq, heads, tokens, head)
            key = heads[block, :, 1].transpose(0, 2, 3, 1)  # (seq, heads, head, tokens)
            value = heads[block, :, 2].transpose(0, 2, 1, 3)
            scores = query @ key  # the 1/sqrt(head_size) scale is folded into the query
            scores += score_bias[block]
            context[block] = (_softmax_(scores) @ value).transpose(0, 2, 1, 3)
        flat_context = context.reshape(batch * length, hidden_size)
        for first in range(0, batch * length, _ROW_BLOCK):
            rows = slice(first, first + _ROW_BLOCK)
            attended = flat_context[rows] @ layer.attention_out_weight
            attended += layer.attention_out_bias
            attended += hidden[rows]
            attended = _layer_norm_(
                attended, layer.attention_norm_weight, layer.attention_norm_bias
            )
            intermediate = attended @ layer.intermediate_weight
            intermediate += layer.intermediate_bias
            output = _gelu_(intermediate) @ layer.output_weight
            output += layer.output_bias
            output += attended
            hidden[rows] = _layer_norm_(output, layer.output_norm_weight, layer.output_norm_bias)

    return hidden.reshape(batch, length, hidden_size)


def _embed_batch(model: _Model, encodings: Sequence[Encoding]) -> Float32Array:
    """Unit-length mean-pooled vectors for one batch, padded to its longest text."""
    lengths = numpy.array([len(encoding.ids) for encoding in encodings])
    width = int(lengths.max())
    token_ids = numpy.zeros((len(encodings), width), dtype=numpy.int64)
    for slot, encoding in enumerate(encodings):
        token_ids[slot, : lengths[slot]] = encoding.ids
    mask = (numpy.arange(width) < lengths[:, None]).astype(numpy.float32)
    hidden = _encode(model, token_ids, mask)
    pooled: Float32Array = numpy.einsum("btd,bt->bd", hidden, mask)
    pooled /= numpy.maximum(mask.sum(axis=1, keepdims=True), numpy.float32(1e-9))
    pooled /= numpy.maximum(numpy.linalg.norm(pooled, axis=1, keepdims=True), numpy.float32(1e-12))
    return pooled


@dataclass(frozen=True, slots=True)
class _LoadedModel:
    model: _Model
    workers: ThreadPoolExecutor
    threads: int


_loaded: _LoadedModel | None = None
_runtime_lock = threading.Lock()


def _load_once() -> _LoadedModel:
    """The model and its worker threads, made once per process on first use."""
    global _loaded
    loaded = _loaded
    if loaded is None:
        with _runtime_lock:
            loaded = _loaded
            if loaded is None:
                model = _load_model(model_dir())
                # OpenBLAS's own threads spin-wait for each other; on a busy 2-core machine that
                # made this model's many mid-sized matmuls 3-4x slower than one BLAS thread.
                # So BLAS runs single-threaded (for the whole process: OpenBLAS has one
                # setting) and we use the cores ourselves, one batch per worker thread, which
                # also spreads the elementwise work numpy would run on one core.
                threadpool_limits(limits=1, user_api="blas")
                threads = cpu_count()
                loaded = _loaded = _LoadedModel(
                    model=model,
                    workers=ThreadPoolExecutor(max_workers=threads, thread_name_prefix="minilm"),
                    threads=threads,
                )
    return loaded


class NumpyMiniLMEmbedder:
    """all-MiniLM-L6-v2 in numpy: 384 float32 dimensions, unit length (the reference)."""

    dimensions = _HIDDEN
    name = "all-minilm-l6-v2"

    def __init__(self, *, batch_size: int = _BATCH_SIZE) -> None:
        self._batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> Float32Array:
        """One unit-length row per text, in the order given; longer texts are truncated."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        loaded = _load_once()
        result = numpy.zeros((len(texts), self.dimensions), dtype=numpy.float32)
        if not texts:
            return result
        encodings = loaded.model.tokenizer.encode_batch(list(texts))
        lengths = numpy.array([len(encoding.ids) for encoding in encodings])
        # Longest first, like sentence-transformers: each batch pads to near its own length.
        # Batches are small enough that every worker thread gets one.
        order = numpy.argsort(-lengths, kind="stable")
        per_batch = max(1, min(self._batch_size, -(-len(texts) // loaded.threads)))
        batches = [order[start : start + per_batch] for start in range(0, len(order), per_batch)]

        def run(rows: npt.NDArray[numpy.intp]) -> Float32Array:
            return _embed_batch(loaded.model, [encodings[row] for row in rows])

        if len(batches) == 1:
            result[batches[0]] = run(batches[0])
        else:
            for rows, vectors in zip(batches, loaded.workers.map(run, batches), strict=True):
                result[rows] = vectors
        return result

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """The word pieces each text is embedded from (special tokens included, at most 256:
        longer texts are truncated, as `embed` does)."""
        loaded = _load_once()
        return [len(encoding.ids) for encoding in loaded.model.tokenizer.encode_batch(list(texts))]

    async def embed_async(self, texts: Sequence[str]) -> Float32Array:
        """`embed` on a worker thread, so the event loop keeps serving while numpy works."""
        return await asyncio.to_thread(self.embed, texts)

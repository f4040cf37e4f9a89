"""/v1/embeddings on the bundled MiniLM (`local/minilm`) with no provider configured, driven
by the openai SDK and LangChain's OpenAIEmbeddings."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import httpx2
import numpy
import openai
import pytest
from fastapi import FastAPI
from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from apiary.authz.permissions import Role
from apiary.embeddings.minilm import MiniLMEmbedder
from apiary.kit import tokens
from apiary.runtime import Runtime
from tests.factories import make_api_key, make_tenant


@dataclass
class Local:
    key: str
    sdk: openai.AsyncOpenAI
    transport: httpx2.ASGITransport


@pytest.fixture
async def local(app: FastAPI, client: httpx.AsyncClient, runtime: Runtime) -> AsyncIterator[Local]:
    assert [p.kind for p in runtime.providers.config.providers] == ["local"]
    tenant = await make_tenant(runtime, client, "acme")
    key = await make_api_key(runtime, tenant, Role.DEVELOPER)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://apiary.test") as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://apiary.test/v1", api_key=key.token, max_retries=0, http_client=http
        )
        yield Local(key.token, sdk, transport)


def minilm(*texts: str) -> numpy.typing.NDArray[numpy.float32]:
    return MiniLMEmbedder().embed(list(texts))


async def test_minilm_is_listed_and_embeds_through_the_sdk(
    local: Local, client: httpx.AsyncClient
) -> None:
    models = [model.id async for model in local.sdk.models.list()]
    assert "local/minilm" in models
    raw = await local.sdk.embeddings.with_raw_response.create(
        model="local/minilm", input=["the cat sat", "a dog ran"]
    )
    # The SDK asks for base64 unless told otherwise, and decodes it.
    assert b'"encoding_format":"base64"' in raw.http_request.read()
    result = raw.parse()
    assert result.model == "minilm"
    vectors = numpy.array([item.embedding for item in result.data], dtype=numpy.float32)
    assert vectors.shape == (2, 384)
    assert numpy.allclose(vectors, minilm("the cat sat", "a dog ran"), atol=1e-6)
    assert result.usage.prompt_tokens == sum(
        MiniLMEmbedder().token_counts(["the cat sat", "a dog ran"])
    )
    assert raw.headers["x-apiary-provider"] == "local"
    assert raw.headers["x-apiary-cost-usd"] == "0.00000000"


async def test_float_and_base64_encodings_carry_the_same_vector(local: Local) -> None:
    as_float = await local.sdk.embeddings.create(
        model="local/minilm", input="hello world", encoding_format="float"
    )
    async with httpx2.AsyncClient(transport=local.transport, base_url="http://apiary.test") as http:
        response = await http.post(
            "/v1/embeddings",
            headers={"authorization": f"Bearer {local.key}"},
            json={"model": "local/minilm", "input": "hello world", "encoding_format": "base64"},
        )
    assert response.status_code == 200
    encoded = response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = numpy.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert decoded.tolist() == as_float.data[0].embedding


async def test_token_arrays_are_cl100k_ids(local: Local) -> None:
    encoding = tokens.get_encoding("cl100k_base")
    one = encoding.encode("a quiet harbour at dawn")
    two = encoding.encode("stock prices fell sharply")
    single = await local.sdk.embeddings.create(model="local/minilm", input=one)
    several = await local.sdk.embeddings.create(model="local/minilm", input=[one, two])
    expected = minilm("a quiet harbour at dawn", "stock prices fell sharply")
    assert numpy.allclose(single.data[0].embedding, expected[0], atol=1e-6)
    assert numpy.allclose([d.embedding for d in several.data], expected, atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"dimensions": 128}, "dimensions: local/minilm has a fixed 384 dimensions"),
        (
            {"input": [[1, 2], [200000000]]},
            "input.1: token id 200000000 is not a cl100k_base token",
        ),
        ({"input": []}, "input: must be a string, a list of strings or token arrays"),
        ({"encoding_format": "int8"}, "encoding_format: must be 'float' or 'base64'"),
        ({"model": "local/smollm2"}, "local/smollm2 is a chat model and does not embed"),
    ],
)
async def test_what_minilm_cannot_do_is_a_400(
    local: Local, extra: dict[str, object], message: str
) -> None:
    body: dict[str, object] = {"model": "local/minilm", "input": "x", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        await local.sdk.embeddings.create(**body)  # type: ignore[arg-type]
    assert message in caught.value.message


async def test_minilm_does_not_chat_and_is_not_in_the_default_chain(
    local: Local, runtime: Runtime
) -> None:
    decision = runtime.providers.router.decide("default", {"messages": []})
    assert [target.key for target in decision.chain] == ["local/smollm2"]
    with pytest.raises(openai.BadRequestError) as caught:
        await local.sdk.chat.completions.create(
            model="local/minilm", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert "local/minilm is an embedding model" in caught.value.message


@pytest.mark.parametrize("check_ctx_length", [True, False])
async def test_langchain_openai_embeddings(local: Local, check_ctx_length: bool) -> None:
    """LangChain's default (`check_embedding_ctx_length=True`) tokenizes with tiktoken
    (cl100k_base for a model it does not know) and sends token arrays; with False it sends
    the strings. Either way the vectors are MiniLM's of the texts."""
    tokens.install_offline_encodings()  # tiktoken offline, for LangChain's own tokenizing
    sent: list[bytes] = []

    async def record(request: httpx2.Request) -> None:
        sent.append(request.read())

    http = httpx2.AsyncClient(
        transport=local.transport,
        base_url="http://apiary.test",
        event_hooks={"request": [record]},
    )
    embeddings = OpenAIEmbeddings(
        model="local/minilm",
        openai_api_base="http://apiary.test/v1",
        openai_api_key=SecretStr(local.key),
        http_async_client=http,
        check_embedding_ctx_length=check_ctx_length,
        max_retries=0,
    )
    texts = ["retrieval augmented generation", "the bundled model embeds offline"]
    vectors = await embeddings.aembed_documents(texts)
    query = await embeddings.aembed_query("what embeds offline?")
    await http.aclose()
    assert numpy.allclose(vectors, minilm(*texts), atol=1e-5)
    assert numpy.allclose(query, minilm("what embeds offline?")[0], atol=1e-5)
    first = sent[0]
    if check_ctx_length:
        assert b'"input":[[' in first  # token arrays
    else:
        assert b'"input":["retrieval' in first

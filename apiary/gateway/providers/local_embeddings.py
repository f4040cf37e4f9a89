"""`/v1/embeddings` on the bundled MiniLM (`local/minilm`), in OpenAI's embeddings format.

The input is what OpenAI takes: a string, a list of strings, or token arrays (a list of
ints, or a list of them). Token arrays are tiktoken `cl100k_base` ids, what the OpenAI
ecosystem sends (LangChain's `OpenAIEmbeddings` tokenizes with it for any model it does not
know): they are decoded to text, which MiniLM then reads with its own tokenizer.
`encoding_format: base64` returns each vector as little-endian float32 bytes, as OpenAI
does. MiniLM has a fixed 384 dimensions: `dimensions` other than 384 is a 400, and so is
anything else the model cannot honour. Texts over 256 word pieces are truncated, as
sentence-transformers does with this model; usage counts the word pieces embedded.
"""

from __future__ import annotations

import base64
from typing import Any, Final

import orjson

from apiary.gateway.providers.base import JSON, Completion, ProviderError, Usage

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
TOKEN_ENCODING: Final = "cl100k_base"  # noqa: S105 - an encoding name


def _refused(message: str) -> ProviderError:
    return ProviderError("client", message, status=400)


def _texts(value: Any) -> list[str]:
    """The input as texts; token arrays decoded from `cl100k_base`."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise _refused("input: must be a string, a list of strings or token arrays, not empty")
    if len(value) > MAX_INPUTS:
        raise _refused(f"input: at most {MAX_INPUTS} inputs per request, not {len(value)}")
    if all(type(item) is int for item in value):
        return [_decode(value, "input")]
    texts = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and item and all(type(token) is int for token in item):
            texts.append(_decode(item, f"input.{index}"))
        else:
            raise _refused(
                f"input.{index}: must be a string or a non-empty list of token ids, "
                "and every input of one kind"
            )
    return texts


def _decode(token_ids: list[int], where: str) -> str:
    from apiary.kit import tokens

    encoding = tokens.get_encoding(TOKEN_ENCODING)
    bad = next((t for t in token_ids if not 0 <= t < encoding.n_vocab), None)
    if bad is not None:
        raise _refused(f"{where}: token id {bad} is not a {TOKEN_ENCODING} token")
    try:
        return encoding.decode(token_ids, errors="replace")
    except KeyError as error:  # an id inside the range that names no token
        raise _refused(f"{where}: token id {error} is not a {TOKEN_ENCODING} token") from None


async def embed(request: JSON, model: str) -> Completion:
    from apiary.embeddings.minilm import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    dimensions = request.get("dimensions")
    if dimensions is not None and dimensions != embedder.dimensions:
        raise _refused(
            f"dimensions: local/{model} has a fixed {embedder.dimensions} dimensions "
            "(leave dimensions out)"
        )
    encoding_format = request.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise _refused("encoding_format: must be 'float' or 'base64'")
    texts = _texts(request.get("input"))
    vectors = await embedder.embed_async(texts)
    counted = sum(embedder.token_counts(texts))
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": base64.b64encode(vector.astype("<f4").tobytes()).decode()
            if encoding_format == "base64"
            else vector.tolist(),
        }
        for index, vector in enumerate(vectors)
    ]
    document = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": counted, "total_tokens": counted},
    }
    return Completion(body=orjson.dumps(document), usage=Usage(prompt_tokens=counted), model=model)

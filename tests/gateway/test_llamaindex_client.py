"""LlamaIndex's `OpenAILike` with its defaults (`is_chat_model=False`: the legacy
`/v1/completions`), run in a venv of its own (tests/client_venvs.py) against a real
server: what evaluation harnesses and LlamaIndex apps send."""

from __future__ import annotations

import asyncio
import json

from tests.client_venvs import client_python
from tests.gateway.conftest import Gateway
from tests.serving import serving

LLAMA_INDEX = ["llama-index-llms-openai-like==0.6.0"]

_SCRIPT = """
import json, sys
from llama_index.llms.openai_like import OpenAILike

llm = OpenAILike(model="oai/gpt-4o-mini", api_base=sys.argv[1], api_key=sys.argv[2], max_tokens=32)
done = llm.complete("Once upon a time")
streamed = "".join(part.delta for part in llm.stream_complete("A streamed tale"))
print(json.dumps({"text": done.text, "streamed": streamed}))
"""


async def test_llamaindex_openai_like_completes_and_streams_with_its_defaults(
    gateway: Gateway,
) -> None:
    python = await asyncio.to_thread(client_python, "llamaindex", LLAMA_INDEX)
    async with serving(gateway.app) as url:
        process = await asyncio.create_subprocess_exec(
            str(python),
            "-c",
            _SCRIPT,
            f"{url}/v1",
            gateway.key,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()[-3000:]
    answer = json.loads(out)
    assert answer == {"text": "echo: Once upon a time", "streamed": "echo: A streamed tale"}
    paths = [request.path for request in gateway.upstream.requests]
    assert len(paths) == 2, paths
    assert all(path.endswith("/chat/completions") for path in paths), paths
    assert [entry.provider for entry in await gateway.ledger()] == ["oai", "oai"]

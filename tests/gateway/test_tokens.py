"""Offline token counting: published counts, message overhead, and a run with no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from apiary.kit import tokens
from apiary.kit.tokens import count_messages, count_text, encoding_for_model

REPO = Path(__file__).resolve().parents[2]

# OpenAI cookbook, "How to count tokens with tiktoken": 129 prompt tokens for gpt-4 and 124
# for gpt-4o, as counted by the API.
COOKBOOK_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate"
        " jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities"
        " for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client"
        " deliverable.",
    },
]


def test_published_string_counts() -> None:
    assert count_text("hello world", encoding="cl100k_base") == 2
    assert tokens.get_encoding("cl100k_base").encode("tiktoken is great!") == [
        83, 1609, 5963, 374, 2294, 0,
    ]  # fmt: skip
    assert count_text("お誕生日おめでとう", encoding="cl100k_base") == 9
    assert count_text("お誕生日おめでとう", encoding="o200k_base") == 8
    assert count_text("") == 0


def test_special_token_markers_count_as_text() -> None:
    assert count_text("<|endoftext|>", encoding="cl100k_base") > 1


def test_cookbook_conversation_matches_the_api_counts() -> None:
    assert count_messages(COOKBOOK_MESSAGES, encoding="cl100k_base") == 129
    assert count_messages(COOKBOOK_MESSAGES, encoding="o200k_base") == 124


def test_message_overhead() -> None:
    text = count_text("hello world")
    one = count_messages([{"role": "user", "content": "hello world"}])
    assert one == 3 + count_text("user") + text + 3
    two = count_messages(
        [{"role": "user", "content": "hello world"}, {"role": "user", "content": "hello world"}]
    )
    assert two - one == 3 + count_text("user") + text
    named = count_messages([{"role": "user", "name": "ada", "content": "hello world"}])
    assert named - one == count_text("ada") + 1
    assert count_messages([]) == 3


def test_content_parts() -> None:
    as_string = count_messages([{"role": "user", "content": "describe this picture"}])
    as_parts = count_messages(
        [{"role": "user", "content": [{"type": "text", "text": "describe this picture"}]}]
    )
    assert as_parts == as_string
    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}}
    with_image = count_messages(
        [{"role": "user", "content": [{"type": "text", "text": "describe this picture"}, image]}]
    )
    assert with_image - as_string == 85
    image["image_url"] = {"url": "https://x.test/a.png"}
    with_big_image = count_messages([{"role": "user", "content": [image]}])
    assert with_big_image == count_messages([{"role": "user", "content": []}]) + 765


def test_tool_calls_and_tool_results_count() -> None:
    arguments = json.dumps({"city": "Paris", "unit": "celsius"})
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": arguments},
    }
    bare = count_messages([{"role": "assistant", "content": None}])
    with_call = count_messages([{"role": "assistant", "content": None, "tool_calls": [call]}])
    assert with_call - bare == 3 + count_text("weather") + count_text(arguments)
    result = count_messages([{"role": "tool", "tool_call_id": "call_1", "content": "21C"}])
    assert result == 3 + count_text("tool") + count_text("call_1") + count_text("21C") + 3


def test_encoding_for_model() -> None:
    assert encoding_for_model("gpt-4o-mini") == "o200k_base"
    assert encoding_for_model("gpt-4.1") == "o200k_base"
    assert encoding_for_model("o3") == "o200k_base"
    assert encoding_for_model("gpt-4-0613") == "cl100k_base"
    assert encoding_for_model("gpt-35-turbo") == "cl100k_base"
    assert encoding_for_model("text-embedding-3-small") == "cl100k_base"
    assert encoding_for_model("claude-sonnet-4-5") == "o200k_base"


def test_counting_a_10k_token_prompt_takes_a_few_ms() -> None:
    paragraph = (
        "The gateway routes each request to a provider, falls back when one fails, caches"
        " answers and accounts the cost to a tenant. "
    )
    text = paragraph * 450
    assert 9_000 < count_text(text) < 12_000
    best = min(_timed(lambda: count_text(text)) for _ in range(5))
    assert best < 0.02, f"{best * 1000:.1f} ms"
    messages = [{"role": "user", "content": text}]
    assert min(_timed(lambda: count_messages(messages)) for _ in range(5)) < 0.02


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# A child Python with no way out: proxies to a closed port and every socket refused.
_NO_NETWORK = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""

_COUNT = """
import json, os
from apiary.kit import tokens
folder = tokens.install_offline_encodings()
print(json.dumps({
    "hello": tokens.count_text("hello world", encoding="cl100k_base"),
    "o200k": tokens.count_text("お誕生日おめでとう"),
    "folder": str(folder),
    "env": os.environ.get("TIKTOKEN_CACHE_DIR"),
}))
"""

_PLAIN_TIKTOKEN = """
import tiktoken
tiktoken.get_encoding("cl100k_base")
"""


def _offline_python(
    code: str, *, tmp_path: Path, cache_dir: str
) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}
    }
    env.update(
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        TIKTOKEN_CACHE_DIR=cache_dir,
        TMPDIR=str(tmp_path / "tmp"),
    )
    env.pop("DATA_GYM_CACHE_DIR", None)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", _NO_NETWORK + code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_plain_tiktoken_cannot_load_in_the_sandbox(tmp_path: Path) -> None:
    """The control: without our shipped files, tiktoken needs the network and fails here."""
    result = _offline_python(_PLAIN_TIKTOKEN, tmp_path=tmp_path, cache_dir=str(tmp_path / "c"))
    assert result.returncode != 0
    assert "network disabled" in result.stderr or "ProxyError" in result.stderr


def test_counts_offline_from_a_fresh_cache(tmp_path: Path) -> None:
    cache = tmp_path / "fresh-cache"
    result = _offline_python(_COUNT, tmp_path=tmp_path, cache_dir=str(cache))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert (output["hello"], output["o200k"]) == (2, 8)
    assert output["folder"] == str(cache)
    assert tokens.cache_file(cache, "cl100k_base").is_file()
    assert tokens.cache_file(cache, "o200k_base").is_file()


def test_a_corrupt_cached_file_is_replaced_offline(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    tokens.cache_file(cache, "cl100k_base").write_bytes(b"not an encoding")
    result = _offline_python(_COUNT, tmp_path=tmp_path, cache_dir=str(cache))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hello"] == 2


def test_a_disabled_tiktoken_cache_falls_back_to_our_own_folder(tmp_path: Path) -> None:
    result = _offline_python(_COUNT, tmp_path=tmp_path, cache_dir="")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["hello"] == 2
    assert output["env"] == output["folder"]
    assert Path(output["folder"]).is_relative_to(tmp_path)


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_shipped_files_exist(name: str) -> None:
    assert (tokens.shipped_encodings_dir() / f"{name}.tiktoken.gz").is_file()

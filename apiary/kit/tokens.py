"""Offline token counting: tiktoken's `cl100k_base` and `o200k_base`, with the encoding files
shipped in `apiary/kit/encodings/` instead of downloaded.

tiktoken fetches its encoding files from the internet at first use and fails offline. This
package carries the same files, gzipped (2.4 MB; their sha256 once unpacked is the hash
tiktoken pins, checked on every unpack; see encodings/README.md for where they come from).
On first use in a process `install_offline_encodings` unpacks them into the folder
tiktoken reads its cache from (`TIKTOKEN_CACHE_DIR`, else `DATA_GYM_CACHE_DIR`, else
`<tmp>/data-gym-cache`) under the names tiktoken looks for, so tiktoken, and every other
tiktoken user in the process (LangChain's counters too), loads them from disk and never
reaches for the network.

Chat messages are counted the way OpenAI's cookbook documents for its chat models: 3 tokens
per message, the tokens of every string field, 1 more for a `name`, and 3 to prime the
reply. Content parts count their text; an image counts 85 tokens at `detail: low`, else
765 (a 1024x1024 image at high detail: 85 + 170 per 512px tile; the true figure depends on
the image's size, which we do not fetch); audio and file parts are not counted. A tool
call counts its function name and arguments plus 3. For non-OpenAI models these counts are
close estimates, which is what routing by context length needs.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import Any, Literal

import tiktoken

EncodingName = Literal["cl100k_base", "o200k_base"]

# tiktoken names its cache file after the sha1 of the URL, and checks the sha256 of the data.
_FILES: dict[EncodingName, tuple[str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMER = 3  # <|start|>assistant<|message|>
TOKENS_PER_TOOL_CALL = 3
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_HIGH = 765
_UNCOUNTED_PARTS = frozenset({"input_audio", "file"})

_install_lock = threading.Lock()
_installed: Path | None = None


def shipped_encodings_dir() -> Path:
    """The folder of gzipped `.tiktoken` files shipped inside this package."""
    return Path(__file__).with_name("encodings")


def cache_file(directory: Path, name: EncodingName) -> Path:
    """Where tiktoken looks for encoding `name` in its cache folder `directory`."""
    url = _FILES[name][0]
    return directory / hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()


def _seed(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (_, sha256) in _FILES.items():
        target = cache_file(directory, name)
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            continue
        data = gzip.decompress((shipped_encodings_dir() / f"{name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"the shipped {name} file does not match tiktoken's hash")
        # Write then rename, so a concurrent process never reads half a file.
        partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, target)


def _tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken will read, or None when its cache is disabled (set to "")."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return Path(os.environ[variable]) if os.environ[variable] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def install_offline_encodings() -> Path:
    """Put the shipped encodings where tiktoken looks; returns that folder. Idempotent."""
    global _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        directory = _tiktoken_cache_dir()
        try:
            if directory is None:
                raise OSError("tiktoken's cache is disabled")
            _seed(directory)
        except OSError:
            # Disabled or not writable: use a folder of our own and point tiktoken at it.
            directory = Path(tempfile.gettempdir()) / f"apiary-tiktoken-{os.getuid()}"
            _seed(directory)
            os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
        _installed = directory
        return directory


@cache
def get_encoding(name: EncodingName = "o200k_base") -> tiktoken.Encoding:
    install_offline_encodings()
    return tiktoken.get_encoding(name)


def encoding_for_model(model: str) -> EncodingName:
    """`cl100k_base` for GPT-4, GPT-3.5 and the embedding models, `o200k_base` otherwise."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5")):
        return "o200k_base"
    if name.startswith(("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-")):
        return "cl100k_base"
    return "o200k_base"


def count_text(text: str, *, encoding: EncodingName = "o200k_base") -> int:
    """Tokens in `text`; special-token markers in it count as ordinary text."""
    return len(get_encoding(encoding).encode_ordinary(text))


def count_messages(messages: list[dict[str, Any]], *, encoding: EncodingName = "o200k_base") -> int:
    """Prompt tokens of an OpenAI chat `messages` list, including the reply primer."""
    encoder = get_encoding(encoding)
    total = REPLY_PRIMER
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                total += len(encoder.encode_ordinary(value))
                if key == "name":
                    total += TOKENS_PER_NAME
            elif key == "content" and isinstance(value, list):
                total += sum(_count_part(encoder, part) for part in value)
            elif key == "tool_calls" and isinstance(value, list):
                total += sum(_count_call(encoder, call.get("function")) for call in value)
            elif key == "function_call":  # the legacy single call
                total += _count_call(encoder, value)
    return total


def _count_part(encoder: tiktoken.Encoding, part: Any) -> int:
    if isinstance(part, str):
        return len(encoder.encode_ordinary(part))
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        detail = image.get("detail") if isinstance(image, dict) else None
        return IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS_HIGH
    if kind in _UNCOUNTED_PARTS:
        return 0
    # text, refusal and any other textual part: its string fields.
    return sum(
        len(encoder.encode_ordinary(value))
        for key, value in part.items()
        if key != "type" and isinstance(value, str)
    )


def _count_call(encoder: tiktoken.Encoding, function: Any) -> int:
    if not isinstance(function, dict):
        return 0
    return TOKENS_PER_TOOL_CALL + sum(
        len(encoder.encode_ordinary(value))
        for key in ("name", "arguments")
        if isinstance(value := function.get(key), str)
    )

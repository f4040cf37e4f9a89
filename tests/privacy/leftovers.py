"""Looking for what a deletion left behind: every table (walked from the metadata, so a
table added later is searched too), every point of the vector store, every Redis key.

A needle is a tenant id, a user id or an email; an id is searched in each form a store
may hold it (with dashes, and as 32 hex digits, SQLite's form of a UUID column).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from qdrant_client import QdrantClient
from redis.asyncio import Redis
from sqlalchemy import select

from apiary.models import Base
from apiary.runtime import Runtime


def _forms(needle: str) -> list[str]:
    try:
        value = uuid.UUID(needle)
    except ValueError:
        return [needle.lower()]
    return [str(value), value.hex]


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace").lower()
    if isinstance(value, uuid.UUID):
        return f"{value} {value.hex}"
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=str).decode().lower()
    return str(value).lower()


async def rows_naming(runtime: Runtime, needle: str) -> dict[str, list[dict[str, Any]]]:
    """Every row, in every table, with a column holding `needle`: {table: [rows]}."""
    forms = _forms(needle)
    found: dict[str, list[dict[str, Any]]] = {}
    async with runtime.session_factory() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).mappings():
                if any(form in _text(value) for value in row.values() for form in forms):
                    found.setdefault(table.name, []).append(dict(row))
    return found


async def points_naming(runtime: Runtime, needle: str) -> int:
    """Points, in every collection, whose payload holds `needle` anywhere."""
    forms = _forms(needle)

    def scan(client: QdrantClient) -> int:
        count = 0
        for collection in client.get_collections().collections:
            offset = None
            while True:
                points, offset = client.scroll(
                    collection.name, limit=256, offset=offset, with_payload=True
                )
                for point in points:
                    text = _text(point.payload or {}) + str(point.id)
                    count += any(form in text for form in forms)
                if offset is None:
                    break
        return count

    # The store's own thread: local mode lets one client hold the folder.
    return await runtime.vectors._call(scan)


async def keys_naming(redis: Redis, needle: str) -> list[bytes]:
    """Redis keys whose name or value holds `needle`."""
    forms = [form.encode() for form in _forms(needle)]
    found = []
    async for key in redis.scan_iter(count=1000):
        kind = _raw(await redis.type(key)).decode()
        value: object
        if kind == "string":
            value = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1)
        elif kind == "stream":
            value = await redis.xrange(key)
        else:
            value = None
        haystack = (_raw(key) + b" " + _raw(value)).lower()
        if any(form in haystack for form in forms):
            found.append(_raw(key))
    return found


def _raw(value: object) -> bytes:
    """Everything Redis answered, as bytes to search (bytes nested in lists and maps too)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return b" ".join(_raw(k) + b"=" + _raw(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return b" ".join(_raw(item) for item in value)
    return repr(value).encode()

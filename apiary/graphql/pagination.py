"""Relay-style cursor connections over the services' offset pages.

A cursor is an opaque position in the list (the offset of its item, base64-encoded), so a
client pages with `first` and `after` as the Relay spec has it; the services keep their
one way of paging (`PageParams`), shared with REST.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

import strawberry

from apiary.errors import Unprocessable
from apiary.graphql import fields
from apiary.kit.schemas import INT64_MAX, PageParams

NodeT = TypeVar("NodeT")
RowT = TypeVar("RowT")

DEFAULT_FIRST = 50
MAX_FIRST = 200  # as REST's `limit`
_PREFIX = "offset:"


def cursor_of(offset: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{offset}".encode()).decode()


def offset_of(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise Unprocessable(f"after: {cursor!r} is not a cursor this API gave") from None
    if not text.startswith(_PREFIX) or not text[len(_PREFIX) :].isdigit():
        raise Unprocessable(f"after: {cursor!r} is not a cursor this API gave")
    offset = int(text[len(_PREFIX) :])
    if offset >= INT64_MAX:
        raise Unprocessable(f"after: {cursor!r} is past any list")
    return offset


def page_params(first: int | None, after: str | None) -> PageParams:
    """The page `first` items after the cursor `after` (the list's start without one)."""
    limit = DEFAULT_FIRST if first is None else first
    if not 1 <= limit <= MAX_FIRST:
        raise Unprocessable(f"first: must be between 1 and {MAX_FIRST}, got {limit}")
    return PageParams(limit=limit, offset=0 if after is None else offset_of(after) + 1)


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeT]):
    cursor: str
    node: NodeT


@strawberry.type
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    page_info: PageInfo
    total_count: int

    @fields.field("The nodes of the edges, for clients that need no cursors")
    def nodes(self) -> list[NodeT]:
        return [edge.node for edge in self.edges]


def connection(
    rows: Iterable[RowT], total: int, page: PageParams, node: Callable[[RowT], NodeT]
) -> Connection[NodeT]:
    items: Sequence[RowT] = list(rows)
    edges = [
        Edge(cursor=cursor_of(page.offset + index), node=node(row))
        for index, row in enumerate(items)
    ]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.offset + len(items) < total,
            has_previous_page=page.offset > 0,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )

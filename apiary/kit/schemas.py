"""The base for every API schema, and the page envelope every list endpoint returns."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import AfterValidator, BaseModel, ConfigDict

_EMAIL = re.compile(
    r"^[^@\s]{1,64}@(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


# Zero-width (non-)joiners: invisible, but some scripts and emoji sequences are written with
# them, so a person's name may keep them.
NAME_JOINERS = "\u200c\u200d"


def visible_text(value: str, *, keep: str = "") -> str:
    """`value`, unless it holds a control character (NUL, newline, escape: PostgreSQL refuses
    NUL, logs split on newlines), a lone surrogate (no encoding takes it) or an invisible
    format character (zero-width space, right-to-left override: they make one name look like
    another). `keep` lets some format characters through (a name may need a zero-width
    joiner)."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs") and char not in keep:
            raise ValueError(
                f"must not contain control or invisible characters (found U+{ord(char):04X})"
            )
    return value


def _email(value: str) -> str:
    # Syntax only: self-hosted installs use internal domains (.local, .internal, .test) that
    # a public-deliverability check would refuse.
    normalized = visible_text(value.strip().lower())
    if not _EMAIL.match(normalized):
        raise ValueError("not a valid email address")
    return normalized


Email = Annotated[str, AfterValidator(_email)]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    total: int
    limit: int
    offset: int


class PageParams(BaseModel):
    limit: int
    offset: int


SchemaT = TypeVar("SchemaT", bound=BaseModel)


def page_of(
    schema: type[SchemaT], rows: Iterable[object], total: int, page: PageParams
) -> Page[SchemaT]:
    """The page envelope of a list endpoint: `rows` (ORM objects) shown as `schema`."""
    return Page(
        items=[schema.model_validate(row) for row in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


def _page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, description="Items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(_page_params)]

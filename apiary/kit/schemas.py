"""The base for every API schema, and the page envelope every list endpoint returns."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

from fastapi import Depends, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

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

# The widest integers the stores take: PostgreSQL's INTEGER is 32 bits, its BIGINT, SQLite's
# INTEGER and orjson stop at 64, and Python's ints do not. Every integer a client sends is
# bounded by the column or query it reaches, so one past it is a 422 naming the field,
# never a 500 from the driver (tests/test_openapi_spec.py checks that every integer in the
# spec has a 64-bit bound; the fuzzer's boundary values find a 32-bit column left at 64).
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

# How deep a free-form JSON value a client sends (an execution's inputs) may nest.
JSON_MAX_DEPTH = 32


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    """A free-form JSON object stored as it came: its integers fit in 64 bits, its floats
    are finite (Python's JSON parser reads NaN and Infinity, which JSON columns refuse), its
    strings hold no NUL (PostgreSQL text refuses it) and it nests at most JSON_MAX_DEPTH."""
    stack: list[tuple[object, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if depth > JSON_MAX_DEPTH:
            raise ValueError(f"nests deeper than {JSON_MAX_DEPTH} levels at {path or 'the top'}")
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not -INT64_MAX - 1 <= item <= INT64_MAX:
            raise ValueError(f"{path}: integers must fit in 64 bits (at most {INT64_MAX})")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{path}: numbers must be finite")
        if isinstance(item, str) and "\x00" in item:
            raise ValueError(f"{path}: text may not contain NUL characters")
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    raise ValueError(f"{path}: keys may not contain NUL characters")
                stack.append((child, depth + 1, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, f"{path}[{index}]") for index, child in enumerate(item))
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_storable_json)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


# A one-line name people read (a key, an agent's model, a knowledge base): no control or
# invisible characters (see visible_text). Free text (a task, a prompt) only refuses NUL.
PlainLine = Annotated[str, AfterValidator(visible_text)]
Text = Annotated[str, AfterValidator(_no_nul)]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class UpdateSchema(Schema):
    """The body of a PATCH: every field optional, and one left out stays as it is. Null
    clears a field only where the schema names it in `nullable`; anywhere else it is refused
    by name, never stored into a column that cannot hold it nor silently ignored."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _null_only_where_it_clears(self) -> Self:
        refused = sorted(
            name
            for name in self.model_fields_set
            if getattr(self, name) is None and name not in self.nullable
        )
        if refused:
            raise ValueError(
                f"{', '.join(refused)} may not be null (leave a field out to keep its value)"
            )
        return self


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
    offset: Annotated[int, Query(ge=0, le=INT64_MAX, description="Items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(_page_params)]

"""Strawberry's field decorators, typed for mypy strict.

Called with arguments (`strawberry.field(description=...)`) Strawberry's decorators are
untyped to mypy, which would make every resolver untyped; these keep the resolver's own
signature, which is what the resolver is called with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import strawberry

ResolverT = TypeVar("ResolverT", bound=Callable[..., Any])


def field(description: str) -> Callable[[ResolverT], ResolverT]:
    return cast(Callable[[ResolverT], ResolverT], strawberry.field(description=description))


def mutation(description: str) -> Callable[[ResolverT], ResolverT]:
    return cast(Callable[[ResolverT], ResolverT], strawberry.mutation(description=description))


def subscription(description: str) -> Callable[[ResolverT], ResolverT]:
    return cast(Callable[[ResolverT], ResolverT], strawberry.subscription(description=description))

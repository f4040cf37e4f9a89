"""Routes under /v1/responses/{id}: read a stored response, its input items, or delete it.

Creating one (`POST /v1/responses`) is on the gateway's hot path, in
apiary/gateway/responses_api.py. Errors take OpenAI's shape, as everywhere under /v1.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.responses.service import response_service
from apiary.runtime import RuntimeDep

router = APIRouter(prefix="/v1/responses", tags=["openai-compatible"])
Caller = Annotated[AuthContext, authorize(Permission.GATEWAY_CALL)]


def _json(document: dict[str, Any]) -> Response:
    return Response(orjson.dumps(document), media_type="application/json")


@router.get("/{response_id}", summary="A stored response (OpenAI Responses API)")
async def get_response(
    response_id: str, auth: Caller, session: DbSession, runtime: RuntimeDep
) -> Response:
    row = await response_service.get(session, runtime, auth, response_id)
    return _json(row.document)


@router.delete("/{response_id}", summary="Delete a stored response")
async def delete_response(
    response_id: str, auth: Caller, session: DbSession, runtime: RuntimeDep
) -> Response:
    await response_service.delete(session, runtime, auth, response_id)
    return _json({"id": response_id, "object": "response", "deleted": True})


@router.get(
    "/{response_id}/input_items",
    summary="The input items a stored response answered, earlier turns' included",
)
async def list_input_items(
    response_id: str,
    auth: Caller,
    session: DbSession,
    runtime: RuntimeDep,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    items, more = await response_service.input_items(
        session, runtime, auth, response_id, order=order, after=after, limit=limit
    )
    return _json(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": more,
        }
    )

"""Routes under /api/v1/api-keys: create (secret shown once), list, get, revoke."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, status

from apiary.api_keys.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated
from apiary.api_keys.service import api_key_service
from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.kit.schemas import Page, Paging, page_of

router = APIRouter(prefix="/api-keys", tags=["api keys"])

Reader = Annotated[AuthContext, authorize(Permission.API_KEYS_READ)]
Writer = Annotated[AuthContext, authorize(Permission.API_KEYS_WRITE)]


@router.get("", summary="List API keys (never their secrets)")
async def list_keys(auth: Reader, session: DbSession, page: Paging) -> Page[ApiKey]:
    rows, total = await api_key_service.list(session, auth, page)
    return page_of(ApiKey, rows, total, page)


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create an API key")
async def create_key(auth: Writer, session: DbSession, body: ApiKeyCreate) -> ApiKeyCreated:
    return await api_key_service.create(session, auth, body)


@router.get("/{key_id}", summary="Get an API key")
async def get_key(auth: Reader, session: DbSession, key_id: uuid.UUID) -> ApiKey:
    return ApiKey.model_validate(await api_key_service.get(session, auth, key_id))


@router.delete("/{key_id}", summary="Revoke an API key (it stops working at once)")
async def revoke_key(auth: Writer, session: DbSession, key_id: uuid.UUID) -> ApiKey:
    return ApiKey.model_validate(await api_key_service.revoke(session, auth, key_id))

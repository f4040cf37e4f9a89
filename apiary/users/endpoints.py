"""Routes under /api/v1/members: the caller's tenant's members and their roles."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, status

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.errors import documented
from apiary.kit.schemas import Page, Paging
from apiary.users.schemas import Member, MemberCreate, MemberCreated, MemberUpdate
from apiary.users.service import member_service

router = APIRouter(prefix="/members", tags=["members"])

Reader = Annotated[AuthContext, authorize(Permission.MEMBERS_READ)]
Writer = Annotated[AuthContext, authorize(Permission.MEMBERS_WRITE)]


@router.get("", summary="List members")
async def list_members(auth: Reader, session: DbSession, page: Paging) -> Page[Member]:
    items, total = await member_service.list(session, auth, page)
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add a member (creating the user)",
    responses=documented(409),
)
async def add_member(auth: Writer, session: DbSession, body: MemberCreate) -> MemberCreated:
    return await member_service.add(session, auth, body)


@router.get("/{membership_id}", summary="Get a member")
async def get_member(auth: Reader, session: DbSession, membership_id: uuid.UUID) -> Member:
    return await member_service.get(session, auth, membership_id)


@router.patch("/{membership_id}", summary="Change a member's role", responses=documented(409))
async def change_role(
    auth: Writer, session: DbSession, membership_id: uuid.UUID, body: MemberUpdate
) -> Member:
    return await member_service.change_role(session, auth, membership_id, body)


@router.delete(
    "/{membership_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member",
    responses=documented(409),
)
async def remove_member(auth: Writer, session: DbSession, membership_id: uuid.UUID) -> None:
    await member_service.remove(session, auth, membership_id)

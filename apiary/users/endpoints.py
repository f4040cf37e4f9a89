"""Routes under /api/v1/members: the caller's tenant's members, their roles and the
invitations it sent; and under /api/v1/invitations: the signed-in account's own invitations."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, status

from apiary.auth.context import AuthContext
from apiary.auth.dependencies import DbSession, authorize
from apiary.authz.permissions import Permission
from apiary.errors import documented
from apiary.kit.schemas import Page, Paging
from apiary.users.schemas import (
    Invitation,
    InvitationCreate,
    InvitationReceived,
    Joined,
    Member,
    MemberCreate,
    MemberCreated,
    MemberUpdate,
)
from apiary.users.service import invitation_service, member_service

router = APIRouter(prefix="/members", tags=["members"])
invitations_router = APIRouter(prefix="/invitations", tags=["invitations"])

Reader = Annotated[AuthContext, authorize(Permission.MEMBERS_READ)]
Writer = Annotated[AuthContext, authorize(Permission.MEMBERS_WRITE)]
Invitee = Annotated[AuthContext, authorize(Permission.INVITATIONS_RESPOND)]


@router.get("", summary="List members")
async def list_members(auth: Reader, session: DbSession, page: Paging) -> Page[Member]:
    items, total = await member_service.list(session, auth, page)
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add a new person as a member",
    responses=documented(402, 409),
)
async def add_member(auth: Writer, session: DbSession, body: MemberCreate) -> MemberCreated:
    """Creates the account. An email that already has an account answers 409: invite it
    (`POST /members/invitations`), and it joins when it accepts."""
    return await member_service.add(session, auth, body)


# Declared before /{membership_id}, which would otherwise take "invitations" for an id.
@router.get("/invitations", summary="List the invitations this tenant is waiting on")
async def list_invitations(auth: Reader, session: DbSession, page: Paging) -> Page[Invitation]:
    items, total = await invitation_service.pending(session, auth, page)
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/invitations",
    status_code=status.HTTP_201_CREATED,
    summary="Invite an existing account (it joins when it accepts)",
    responses=documented(404, 409),
)
async def invite(auth: Writer, session: DbSession, body: InvitationCreate) -> Invitation:
    return await invitation_service.invite(session, auth, body)


@router.delete(
    "/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Cancel an invitation",
)
async def cancel_invitation(auth: Writer, session: DbSession, invitation_id: uuid.UUID) -> None:
    await invitation_service.cancel(session, auth, invitation_id)


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


@invitations_router.get("", summary="Your pending invitations to tenants")
async def my_invitations(auth: Invitee, session: DbSession) -> list[InvitationReceived]:
    return await invitation_service.received(session, auth)


@invitations_router.post(
    "/{invitation_id}/accept",
    summary="Accept an invitation: join that tenant",
    responses=documented(402),
)
async def accept_invitation(auth: Invitee, session: DbSession, invitation_id: uuid.UUID) -> Joined:
    return await invitation_service.accept(session, auth, invitation_id)


@invitations_router.post(
    "/{invitation_id}/decline",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Decline an invitation",
)
async def decline_invitation(auth: Invitee, session: DbSession, invitation_id: uuid.UUID) -> None:
    await invitation_service.decline(session, auth, invitation_id)

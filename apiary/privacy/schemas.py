from __future__ import annotations

import uuid

from pydantic import Field

from apiary.kit.schemas import Schema


class ErasureReport(Schema):
    """What erasing a person removed, and what it kept by reference."""

    user_id: uuid.UUID
    already_erased: bool = Field(
        description="The account was erased before: nothing more was done (and nothing audited)"
    )
    memberships_removed: int
    invitations_removed: int
    sessions_ended: int
    refresh_tokens_removed: int
    api_keys_revoked: int = Field(description="Keys the person created, revoked (rows kept)")
    audit_entries_kept: int = Field(
        description="Audit entries naming the person's id, kept unchanged: the id now "
        "resolves to an anonymous account, so the hash chain still verifies"
    )


class TenantDeletionReport(Schema):
    """What deleting a tenant removed, per table and per store."""

    tenant_id: uuid.UUID
    name: str
    tables: dict[str, int] = Field(description="Rows deleted, per table")
    vectors: int = Field(description="Points deleted from the vector store")
    memory_threads: int = Field(description="Conversation threads forgotten")
    cache_entries: int = Field(description="Gateway cache entries deleted from Redis")
    counters: int = Field(description="Rate-limit, budget and spend counters deleted")
    other_keys: int = Field(description="Other Redis keys naming the tenant (swarm slots, ...)")
    users_erased: int = Field(
        description="Members who belonged to no other tenant, erased with it (their rows "
        "kept anonymous, as for an erasure)"
    )
    audit_entries_kept: int = Field(
        description="The tenant's audit entries, kept for the retention period; they name only ids"
    )

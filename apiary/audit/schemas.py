from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from apiary.kit.schemas import Schema


class AuditEntry(Schema):
    seq: int
    tenant_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    details: dict[str, Any]
    created_at: datetime
    hash: str

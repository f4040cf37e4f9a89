"""The `responses` table: one row per stored Responses API answer, owned by a tenant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from apiary.authz.scope import TenantOwned
from apiary.db import Base, IdMixin


class StoredResponse(IdMixin, TenantOwned, Base):
    """A response as answered, and the conversation it closes, so a later request can
    continue it with `previous_response_id`. The id is the response's (`resp_<hex>`)."""

    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_expires_at", "expires_at"),)

    # Past this time the row is never served, and the retention sweep deletes it.
    expires_at: Mapped[datetime]
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    # No foreign key: the previous response may be deleted or expire before this one.
    previous_response_id: Mapped[uuid.UUID | None]
    # The `response` object as the client received it.
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Every input item of the conversation up to this response (earlier turns' inputs and
    # outputs, then this request's input), oldest first; instructions are not carried over.
    context: Mapped[list[Any]] = mapped_column(JSON)

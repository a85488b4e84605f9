"""The audit log: destructive or billable operator actions (delete, retention, clone,
resubmit), with who and when. Written in the same transaction as the action itself, so
an action is never done without its entry nor logged without being done."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine

from core.db import transaction
from core.db.queries import q

RETENTION_ACTOR = "retention (JOB_RETENTION_DAYS)"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    job_id: UUID | None
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "actor": self.actor,
                "action": self.action, "job_id": str(self.job_id) if self.job_id else None,
                "detail": self.detail}


def record(conn: Connection, *, actor: str, action: str, job_id: UUID | None,
           detail: dict[str, Any] | None = None) -> None:
    conn.execute(q("audit_insert"), {"actor": actor, "action": action, "job_id": job_id,
                                     "detail": json.dumps(detail or {}, default=str)})


def entries(*, job_id: UUID | None = None, limit: int = 100,
            engine: Engine | None = None) -> list[AuditEntry]:
    with transaction(engine) as conn:
        rows = conn.execute(q("audit_entries"), {"job_id": job_id, "limit": limit}).all()
    return [AuditEntry(**dict(r._mapping)) for r in rows]

"""Paused or running, per queue, kept in PostgreSQL so every process agrees."""

from __future__ import annotations

from sqlalchemy import Engine

from core.db import transaction
from core.db.queries import q


def is_paused(queue_name: str, engine: Engine | None = None) -> bool:
    with transaction(engine) as conn:
        value = conn.execute(q("queue_paused"), {"queue_name": queue_name}).scalar()
    return bool(value)


def set_paused(queue_name: str, paused: bool, engine: Engine | None = None) -> None:
    with transaction(engine) as conn:
        conn.execute(q("set_queue_paused"), {"queue_name": queue_name, "paused": paused})

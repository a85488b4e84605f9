"""SQLAlchemy models of sql/init_db.sql, column for column.

The SQL file is the source of truth (it is what production runs through psql); these
models exist for typed reads and are checked against the live schema by a test.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class GenerationJob(Base):
    __tablename__ = "generation_jobs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    total_tasks: Mapped[int] = mapped_column(Integer, nullable=False)
    completed_tasks: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    failed_tasks: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cancelled_tasks: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    style: Mapped[str] = mapped_column(Text, nullable=False)
    count_per_prompt: Mapped[int] = mapped_column(Integer, nullable=False)
    provider: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False)
    size: Mapped[str] = mapped_column(Text, nullable=False)
    quality: Mapped[str] = mapped_column(Text, nullable=False)
    estimated_cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # version 5: batch mode and image options
    mode: Mapped[str] = mapped_column(Text, nullable=False, server_default="realtime")
    batch_fallback: Mapped[str] = mapped_column(Text, nullable=False, server_default="batch")
    output_format: Mapped[str | None] = mapped_column(Text)
    output_compression: Mapped[int | None] = mapped_column(Integer)
    background: Mapped[str | None] = mapped_column(Text)
    moderation: Mapped[str | None] = mapped_column(Text)
    # version 7
    name: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    submitted_by: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # version 8: priority and spend limits (core/dispatch/fair.py, core/billing/spend.py)
    priority: Mapped[str] = mapped_column(Text, nullable=False, server_default="normal")
    max_cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    spent_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    spent_tasks: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    spend_unit_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 8))


class GenerationTask(Base):
    __tablename__ = "generation_tasks"
    __table_args__ = (
        UniqueConstraint(
            "job_id", "prompt_index", "image_index", name="generation_tasks_position_key"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("generation_jobs.id", ondelete="CASCADE"), nullable=False
    )
    prompt_index: Mapped[int] = mapped_column(Integer, nullable=False)
    image_index: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    style: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    dispatch_generation: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error_code: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    image_path: Mapped[str | None] = mapped_column(Text)
    thumbnail_path: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cloud_task_name: Mapped[str | None] = mapped_column(Text)
    # version 5: the batch the task waits in, how it was billed, image input tokens
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("openai_batches.id", ondelete="SET NULL"))
    billed_mode: Mapped[str | None] = mapped_column(Text)
    input_image_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # version 2: owned leases (see sql/init_db.sql)
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_boot: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    crashes: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    free_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    rate_limited_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # version 3 (Cloud Tasks hand-over outbox, core/dispatch/cloudtasks/handover.py)
    handover_generation: Mapped[int | None] = mapped_column(Integer)
    handover_marked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # version 4: deliveries that never reached the handler (core.dispatch.undeliverable).
    undeliverable_tries: Mapped[int] = mapped_column(Integer, nullable=False,
                                                     server_default="0")
    # version 7: the refused task an edited prompt replaces (core.jobs.edit)
    resubmitted_from: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))


class OpenAIBatch(Base):
    """One OpenAI batch (one input file) of a batch-mode job (version 5)."""

    __tablename__ = "openai_batches"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("generation_jobs.id", ondelete="CASCADE"), nullable=False
    )
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default="preparing")
    openai_status: Mapped[str | None] = mapped_column(Text)
    task_count: Mapped[int] = mapped_column(Integer, nullable=False)
    input_file_id: Mapped[str | None] = mapped_column(Text)
    openai_batch_id: Mapped[str | None] = mapped_column(Text, unique=True)
    output_file_id: Mapped[str | None] = mapped_column(Text)
    error_file_id: Mapped[str | None] = mapped_column(Text)
    request_total: Mapped[int | None] = mapped_column(Integer)
    request_completed: Mapped[int | None] = mapped_column(Integer)
    request_failed: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False,
                                                   server_default="false")
    polls: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QueueState(Base):
    __tablename__ = "queue_state"

    queue_name: Mapped[str] = mapped_column(Text, primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    updated_at: Mapped[datetime] = _now()


class SpendHold(Base):
    """version 8: a budget reached (core/billing/spend.py); the claim starts nothing it covers."""

    __tablename__ = "spend_holds"

    scope: Mapped[str] = mapped_column(Text, primary_key=True)
    held: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    spent_usd: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False,
                                               server_default="0")
    limit_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    updated_at: Mapped[datetime] = _now()


class DeliveryProblem(Base):
    """version 4: one row per cause of undeliverable deliveries."""

    __tablename__ = "delivery_problems"

    cause: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    occurrences: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    first_seen: Mapped[datetime] = _now()
    last_seen: Mapped[datetime] = _now()


class SchemaMigration(Base):
    __tablename__ = "schema_migrations"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = _now()


class JobNotification(Base):
    __tablename__ = "job_notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("generation_jobs.id", ondelete="CASCADE"), nullable=False
    )
    job_status: Mapped[str] = mapped_column(Text, nullable=False)
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = _now()
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    detail: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False,
                                                      server_default="{}")

"""Find jobs by name, tag or prompt text, and filter them by tag, submitter and status.

Prompt text is matched as a case-insensitive substring through a pg_trgm GIN index on
generation_tasks.prompt (sql/init_db.sql, version 7): a trigram index answers a
substring match (ILIKE on "%teapot%") without reading every task; a tsvector index would
not find parts of words. A server without pg_trgm (the embedded demo server) still answers, by
scanning; that is said once in the log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import Engine, text

from core.db import get_engine, transaction
from core.db.queries import q
from core.errors import InvalidInput
from core.jobs.meta import MAX_SUBMITTER_CHARS, clean_tag
from core.jobs.views import MAX_PAGE, JobView
from core.jobs.views import job_view as _job
from core.status import JOB_STATUSES

log = logging.getLogger(__name__)

# Trigrams need three characters: a shorter text would read every task.
MIN_TEXT_CHARS = 3
MAX_TEXT_CHARS = 200
_checked_index: set[int] = set()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class SearchQuery:
    text: str | None = None
    tag: str | None = None
    submitted_by: str | None = None
    status: str | None = None
    # The dashboard's filters: several statuses and a creation window.
    statuses: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None

    @classmethod
    def of(cls, *, text: str | None = None, tag: str | None = None,
           submitted_by: str | None = None, status: str | None = None,
           statuses: Sequence[str] = (), created_after: datetime | None = None,
           created_before: datetime | None = None) -> SearchQuery:
        """Validated; errors name the API's query parameter."""
        cleaned = (text or "").strip()
        # PostgreSQL text cannot hold NUL, and no name or prompt holds control characters.
        if _CONTROL.search(cleaned):
            raise InvalidInput("q", "must not contain control characters")
        if cleaned and len(cleaned) < MIN_TEXT_CHARS:
            raise InvalidInput("q", f"at least {MIN_TEXT_CHARS} characters")
        if len(cleaned) > MAX_TEXT_CHARS:
            raise InvalidInput("q", f"at most {MAX_TEXT_CHARS} characters")
        who = (submitted_by or "").strip()
        if _CONTROL.search(who):
            raise InvalidInput("submitted_by", "must not contain control characters")
        if len(who) > MAX_SUBMITTER_CHARS:
            raise InvalidInput("submitted_by", f"at most {MAX_SUBMITTER_CHARS} characters")
        for one in (status, *statuses):
            if one is not None and one not in JOB_STATUSES:
                raise InvalidInput("status", f"must be one of {', '.join(JOB_STATUSES)}")
        return cls(text=cleaned or None,
                   tag=clean_tag(tag, "tag") if tag and tag.strip() else None,
                   submitted_by=who or None, status=status, statuses=tuple(statuses),
                   created_after=created_after, created_before=created_before)

    @property
    def searching(self) -> bool:
        """Whether this asks for more than the plain job list (text, tag or submitter)."""
        return bool(self.text or self.tag or self.submitted_by)


@dataclass(frozen=True)
class SearchResult:
    jobs: list[JobView]
    more: bool  # another page exists


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's own characters taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_jobs(query: SearchQuery, *, limit: int = 50, offset: int = 0,
                engine: Engine | None = None) -> SearchResult:
    """Jobs newest first whose name or a prompt contains the text, or that carry it as a
    tag; then the filters. One page, plus whether another follows (no full count: that
    would visit every match of a common word)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("limit", f"must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise InvalidInput("offset", "must be >= 0")
    eng = engine or get_engine()
    statuses = [*query.statuses, *([query.status] if query.status else [])]
    binds: dict[str, object] = {"statuses": statuses or None, "tag": query.tag,
                                "created_after": query.created_after,
                                "created_before": query.created_before,
                                "submitted_by": query.submitted_by,
                                "limit": limit + 1, "offset": offset}
    name = "search_jobs_filter"
    if query.text:
        _warn_without_index(eng)
        name = "search_jobs_text"
        binds |= {"pattern": like_pattern(query.text), "word": query.text.lower()}
    with transaction(eng) as conn:
        if query.text:
            # A generic plan would pick one strategy for every word (see search.sql).
            conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        rows = conn.execute(q(name), binds).all()
    return SearchResult(jobs=[_job(r) for r in rows[:limit]], more=len(rows) > limit)


@dataclass(frozen=True)
class JobLabel:
    name: str | None
    tags: list[str]
    submitted_by: str | None


def job_labels(job_ids: Sequence[UUID], *, engine: Engine | None = None
               ) -> dict[UUID, JobLabel]:
    if not job_ids:
        return {}
    with transaction(engine) as conn:
        rows = conn.execute(q("job_labels"), {"job_ids": [UUID(str(j)) for j in job_ids]})
        return {r.id: JobLabel(r.name, list(r.tags or []), r.submitted_by) for r in rows}


def submitters(*, engine: Engine | None = None) -> list[str]:
    with transaction(engine) as conn:
        return [r.submitted_by for r in conn.execute(q("submitters"))]


def prompt_index_present(engine: Engine | None = None) -> bool:
    with transaction(engine) as conn:
        return bool(conn.execute(q("prompt_index_exists")).scalar_one())


def _warn_without_index(engine: Engine) -> None:
    if id(engine) in _checked_index:
        return
    _checked_index.add(id(engine))
    if not prompt_index_present(engine):
        log.warning("pg_trgm is not installed on this PostgreSQL: prompt search reads "
                    "every task (fine for the demo; install the contrib package, e.g. "
                    "postgresql-contrib, and rerun init-db for production)",
                    extra={"action": "search_without_index"})

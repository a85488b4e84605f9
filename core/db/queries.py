"""Named SQL: each package of core keeps its statements in .sql files beside its code,
under ``-- name: x`` headers (core/delivery/tasks.sql for the task path,
core/jobs/reports.sql for the dashboard's aggregates, ...). Loaded once; callers ask for a
query by name, so each statement is reviewable as SQL. A name defined twice, in any file,
is an error.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlalchemy import TextClause, text

# Each package keeps its named SQL beside its code: every .sql file under core/.
_SQL_DIR = Path(__file__).resolve().parent.parent
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted(_SQL_DIR.rglob("*.sql")):
        parts = _HEADER.split(path.read_text(encoding="utf-8"))
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name!r} defined twice "
                                   f"(again in {path.relative_to(_SQL_DIR)})")
            queries[name] = body.strip().rstrip(";")
    return queries


def sql(name: str) -> str:
    """The raw SQL of query ``name``."""
    return _load()[name]


@cache
def q(name: str) -> TextClause:
    """Query ``name`` as a SQLAlchemy text clause with ``:named`` binds."""
    return text(sql(name))


def names() -> list[str]:
    return sorted(_load())

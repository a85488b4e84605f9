"""Named SQL: queries live in core/*.sql files under ``-- name: x`` headers.

queries.sql holds the task path; other files group other readers (reports.sql for the
dashboard). Loaded once; callers ask for a query by name, so each statement is reviewable
as SQL. A name defined twice, in any file, is an error.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlalchemy import TextClause, text

_SQL_DIR = Path(__file__).parent
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted(_SQL_DIR.glob("*.sql")):
        parts = _HEADER.split(path.read_text(encoding="utf-8"))
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name!r} defined twice (again in {path.name})")
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

"""Named SQL: every hot query lives in core/queries.sql under a ``-- name: x`` header.

Loaded once; callers ask for a query by name, so each statement is reviewable as SQL.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlalchemy import TextClause, text

_QUERIES_FILE = Path(__file__).with_name("queries.sql")
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    source = _QUERIES_FILE.read_text(encoding="utf-8")
    parts = _HEADER.split(source)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise RuntimeError(f"query {name!r} defined twice in {_QUERIES_FILE.name}")
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

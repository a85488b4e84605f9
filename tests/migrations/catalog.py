"""What makes two databases the same schema, read from PostgreSQL's catalog as plain data:
tables, columns in their order with type, default and nullability, constraints with their
definitions (CHECKs included), indexes, functions with their bodies, triggers, sequences,
types, extensions and the versions recorded in schema_migrations. Objects an extension
owns (pg_trgm's functions and types) are the extension's, not the schema's."""

from __future__ import annotations

from typing import Any

import psycopg

Catalog = dict[str, list[tuple[Any, ...]]]

_NOT_AN_EXTENSION_MEMBER = """NOT EXISTS (
    SELECT 1 FROM pg_depend e
     WHERE e.classid = '{table}'::regclass AND e.objid = {oid} AND e.deptype = 'e')"""

QUERIES: dict[str, str] = {
    "tables": f"""
        SELECT c.relname, c.relkind, c.relpersistence, c.relrowsecurity
          FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
           AND {_NOT_AN_EXTENSION_MEMBER.format(table='pg_class', oid='c.oid')}""",
    "columns": """
        SELECT c.relname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               a.attcollation::regcollation::text
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
           AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid, true),
               condeferrable, condeferred, convalidated
          FROM pg_constraint
         WHERE connamespace = 'public'::regnamespace AND conrelid <> 0""",
    "indexes": """
        SELECT i.indrelid::regclass::text, c.relname, pg_get_indexdef(i.indexrelid)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = 'public'::regnamespace""",
    "functions": f"""
        SELECT p.oid::regprocedure::text, p.prokind, pg_get_functiondef(p.oid)
          FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
           AND {_NOT_AN_EXTENSION_MEMBER.format(table='pg_proc', oid='p.oid')}""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid, true), t.tgenabled
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal""",
    "sequences": """
        SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
               s.seqmax, s.seqmin, s.seqcache, s.seqcycle
          FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
         WHERE c.relnamespace = 'public'::regnamespace""",
    "types": f"""
        SELECT t.typname, t.typtype
          FROM pg_type t
         WHERE t.typnamespace = 'public'::regnamespace AND t.typrelid = 0 AND t.typelem = 0
           AND {_NOT_AN_EXTENSION_MEMBER.format(table='pg_type', oid='t.oid')}""",
    "extensions": "SELECT extname FROM pg_extension",
    "versions": "SELECT version FROM schema_migrations",
}


def read(url: str) -> Catalog:
    """The catalog of the database at ``url`` (libpq or SQLAlchemy form), each part sorted."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        return {part: sorted(conn.execute(query).fetchall(), key=repr)
                for part, query in QUERIES.items()}


def differences(a: Catalog, b: Catalog) -> list[str]:
    """Each row one catalog has and the other lacks, named by part and side; [] = same."""
    found: list[str] = []
    for part in QUERIES:
        left, right = set(a[part]), set(b[part])
        found += [f"{part}: only in the first: {row}" for row in sorted(left - right, key=repr)]
        found += [f"{part}: only in the second: {row}" for row in sorted(right - left, key=repr)]
    return found

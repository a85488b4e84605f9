"""``make stop``: stop the embedded PostgreSQL (core/db/embedded_pg.py), whoever started it
and whatever processes were killed while they used it.

    python -m core.db.stop_embedded [--pgdata DIR]

A module of its own (not ``python -m core.db.embedded_pg``) because the ``core.db``
package imports embedded_pg, and running an imported module as ``__main__`` makes Python
warn about it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.db import embedded_pg
from core.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stop the embedded PostgreSQL.")
    parser.add_argument("--pgdata", type=Path, default=embedded_pg.DEFAULT_PGDATA,
                        help="its data folder (default: .pgdata/ in the checkout)")
    args = parser.parse_args(argv)
    try:
        stopped = embedded_pg.stop(args.pgdata)
    except (ConfigError, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"embedded PostgreSQL {'stopped' if stopped else 'was not running'} ({args.pgdata})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

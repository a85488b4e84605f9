"""Command line: queue administration without gcloud, the schema, the sweeper.

    aiwebimage queue create            # the guide's settings: 10/s, 100 concurrent, retries
    aiwebimage queue describe
    aiwebimage queue update --max-dispatches-per-second 20 --max-concurrent-dispatches 200
    aiwebimage queue pause | resume | status
    aiwebimage jobs list | submit FILE | status ID | retry ID | cancel ID | export ID
                                       # job commands (cli/jobs.py)
    aiwebimage --version
    aiwebimage init-db                 # create or upgrade the schema (sql/, core/db/migrate.py)
    aiwebimage sweep [--grace-s 30]    # re-enqueue tasks left pending
    aiwebimage sweep --stranded [--stale-s 1800] [--limit 500]
                                       # Cloud Tasks: re-enqueue tasks the queue lost

(``python -m cli.main ...`` is the same.) Settings come from the environment and .env as
everywhere else. ``queue create/describe/update`` talk to Cloud Tasks (USE_CLOUD_TASKS);
pause/resume/status work on whichever queue is configured (locally they stop and restart
the local dispatcher through the queue_state table).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import OperationalError

from core import db, startup
from core.config import Settings
from core.dispatch import get_dispatcher
from core.dispatch.cloudtasks.dispatcher import (
    QUEUE_MAX_CONCURRENT_DISPATCHES,
    QUEUE_MAX_DISPATCHES_PER_SECOND,
    CloudTasksDispatcher,
)
from core.dispatch.cloudtasks.sweeper import (
    PENDING_GRACE_S,
    STRANDED_BATCH,
    sweep_pending,
    sweep_stranded,
)
from core.errors import AppError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiwebimage", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from cli import jobs  # here, not at the top: keeps this file's imports as they were

    jobs.add_parser(sub, parser)  # `jobs ...` and --version
    queue = sub.add_parser("queue", help="the Cloud Tasks (or local) queue")
    qsub = queue.add_subparsers(dest="action", required=True)
    create = qsub.add_parser("create", help="create (or reset) the queue with the guide's "
                                            "settings")
    create.add_argument("--max-dispatches-per-second", type=float,
                        default=QUEUE_MAX_DISPATCHES_PER_SECOND)
    create.add_argument("--max-concurrent-dispatches", type=int,
                        default=QUEUE_MAX_CONCURRENT_DISPATCHES)
    qsub.add_parser("describe", help="print the queue's settings and state as JSON")
    update = qsub.add_parser("update", help="change the rate or concurrency limit")
    update.add_argument("--max-dispatches-per-second", type=float)
    update.add_argument("--max-concurrent-dispatches", type=int)
    qsub.add_parser("pause", help="stop deliveries (tasks stay queued)")
    qsub.add_parser("resume", help="restart deliveries")
    qsub.add_parser("status", help="print paused or running")
    sub.add_parser("init-db", help="create the schema (sql/init_db.sql) or upgrade it "
                                   "(sql/migrations/); nothing when current")
    sweep = sub.add_parser("sweep", help="re-enqueue tasks left pending")
    sweep.add_argument("--grace-s", type=float, default=PENDING_GRACE_S,
                       help="leave tasks younger than this to their submitter")
    sweep.add_argument("--stranded", action="store_true",
                       help="Cloud Tasks: instead, ask the queue about tasks queued (or "
                            "running on a dead lease) for --stale-s and re-enqueue the ones "
                            "it no longer holds")
    sweep.add_argument("--stale-s", type=float, default=None,
                       help="with --stranded: default STRANDED_AFTER_S")
    sweep.add_argument("--limit", type=int, default=STRANDED_BATCH,
                       help="with --stranded: at most this many GetTask calls")
    return parser


def queue_summary(queue: Any) -> dict[str, Any]:
    """The parts of a Cloud Tasks Queue an operator checks (pure)."""
    retry = queue.retry_config
    return {
        "name": queue.name,
        "state": type(queue).State(queue.state).name,
        "max_dispatches_per_second": queue.rate_limits.max_dispatches_per_second,
        "max_concurrent_dispatches": queue.rate_limits.max_concurrent_dispatches,
        "max_attempts": retry.max_attempts,
        "min_backoff_s": retry.min_backoff.total_seconds() if retry.min_backoff else None,
        "max_backoff_s": retry.max_backoff.total_seconds() if retry.max_backoff else None,
        "max_doublings": retry.max_doublings,
    }


def _cloud(settings: Settings) -> CloudTasksDispatcher:
    if not settings.USE_CLOUD_TASKS:
        raise AppError("this command manages a Cloud Tasks queue: set USE_CLOUD_TASKS=true, "
                       "GCP_PROJECT, GCP_LOCATION and QUEUE_NAME")
    return CloudTasksDispatcher.from_settings(settings)


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "jobs":
        from cli import jobs

        return jobs.run(args, settings)
    if args.command == "init-db":
        upgrade = db.apply_schema(db.get_engine(db.resolve_database_url(settings)))
        print(f"schema applied: {upgrade.describe()}")
        return 0
    if args.command == "sweep" and args.stranded:
        return _sweep_stranded(args, settings)
    if args.command == "sweep":
        result = sweep_pending(get_dispatcher(settings), grace_s=args.grace_s)
        _print({"enqueued": result.enqueued, "already_enqueued": result.already_enqueued,
                "failed": result.failed, "errors": result.errors})
        return 1 if result.failed else 0
    action = args.action
    if action in ("pause", "resume", "status"):
        dispatcher = get_dispatcher(settings)
        if action == "pause":
            dispatcher.pause()
        elif action == "resume":
            dispatcher.resume()
        print("paused" if dispatcher.is_paused() else "running")
        return 0
    cloud = _cloud(settings)
    try:
        if action == "create":
            queue = cloud.create_queue(
                max_dispatches_per_second=args.max_dispatches_per_second,
                max_concurrent_dispatches=args.max_concurrent_dispatches)
        elif action == "describe":
            queue = cloud.describe_queue()
        else:
            if args.max_dispatches_per_second is None and args.max_concurrent_dispatches is None:
                raise AppError("queue update: give --max-dispatches-per-second and/or "
                               "--max-concurrent-dispatches")
            queue = cloud.update_limits(
                max_dispatches_per_second=args.max_dispatches_per_second,
                max_concurrent_dispatches=args.max_concurrent_dispatches)
        _print(queue_summary(queue))
    finally:
        cloud.close()
    return 0


def _sweep_stranded(args: argparse.Namespace, settings: Settings) -> int:
    cloud = _cloud(settings)
    try:
        stale_s = settings.STRANDED_AFTER_S if args.stale_s is None else args.stale_s
        swept = sweep_stranded(cloud, stale_s=stale_s, limit=args.limit)
    finally:
        cloud.close()
    _print({"skipped": swept.skipped, "checked": swept.checked, "held": swept.held,
            "unknown": swept.unknown, "requeued": swept.requeued,
            "enqueued": swept.enqueue.enqueued, "failed": swept.enqueue.failed,
            "errors": swept.enqueue.errors})
    # A paused queue is a normal reason to do nothing; an unreadable one is not.
    return 1 if swept.enqueue.failed or swept.skipped == "queue state unknown" else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = startup.checked_settings()
        # Start-up checks (core.startup): the database answers (host and port named),
        # Cloud Tasks has credentials. Queue administration alone needs no database.
        needs_db = not (args.command == "queue"
                        and args.action in ("create", "describe", "update"))
        startup.preflight(settings, database=needs_db, provider=False)
        return run(args, settings)
    except AppError as exc:
        print(f"error: {' '.join(exc.message.split())}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        # The database went away after the check: still one line, host and port only.
        print(f"error: DATABASE_URL: the database stopped answering "
              f"({type(exc.orig).__name__})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

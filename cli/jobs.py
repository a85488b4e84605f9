"""``aiwebimage jobs ...``: run batches from a terminal or a script.

    aiwebimage jobs list [--status S] [--limit N] [--offset N]
    aiwebimage jobs submit FILE [--style S] [--count N] [--model M] [--size S]
                               [--quality Q] [--header | --no-header]
    aiwebimage jobs status ID
    aiwebimage jobs retry ID [--include-refusals] [--dry-run] [--task TASK_ID ...]
    aiwebimage jobs cancel ID
    aiwebimage jobs export ID [--output FILE] [--tasks-csv]

Each prints the JSON body the admin API answers with, and fails with the API's message
(``error: prompts[2]: at most 4000 characters``, ``error: job ... not found``) and exit
status 2. FILE is read as on the dashboard's Submit page (.txt: a prompt per line; .csv:
the prompt column, comma, semicolon or tab). Registered by cli.main.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

from core.config import Settings
from core.errors import AppError, InvalidInput
from core.jobs import export, lifecycle, views
from core.jobs.validation import limits_from_settings, validate_batch
from core.status import JOB_STATUSES
from core.storage import get_storage


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("aiwebimageservice")
    except PackageNotFoundError:  # a plain checkout, not installed
        return "unknown"


def add_parser(sub: Any, root: argparse.ArgumentParser) -> None:
    """The ``jobs`` command and its actions on cli.main's sub-parsers, and ``--version``
    on its root parser."""
    root.add_argument("--version", action="version", version=f"aiwebimage {version()}")
    parser = sub.add_parser("jobs", help="list, submit, follow, retry, cancel, export jobs")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--status", choices=JOB_STATUSES)
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--offset", type=int, default=0)
    submit = actions.add_parser("submit", help="submit the prompts in FILE (.txt or .csv)")
    submit.add_argument("file", type=Path)
    submit.add_argument("--style", default="none")
    submit.add_argument("--count", type=int, default=1, help="images per prompt")
    submit.add_argument("--model")
    submit.add_argument("--size")
    submit.add_argument("--quality")
    header = submit.add_mutually_exclusive_group()
    header.add_argument("--header", dest="header", action="store_true", default=None,
                        help="the CSV's first row is a header")
    header.add_argument("--no-header", dest="header", action="store_false",
                        help="the CSV's first row is a prompt")
    for name, text in (("status", "progress of a job"),
                       ("cancel", "cancel a job (running tasks finish)")):
        actions.add_parser(name, help=text).add_argument("job_id")
    retry = actions.add_parser("retry", help="requeue a job's failed tasks")
    retry.add_argument("job_id")
    retry.add_argument("--include-refusals", action="store_true",
                       help="also moderation refusals and invalid requests")
    retry.add_argument("--dry-run", action="store_true",
                       help="only say how many would be retried and the estimated cost")
    retry.add_argument("--task", action="append", dest="tasks", metavar="TASK_ID",
                       help="only this failed task (repeatable)")
    exp = actions.add_parser("export", help="write a job's images ZIP (or task table)")
    exp.add_argument("job_id")
    exp.add_argument("--output", "-o", type=Path,
                     help="default job-<id>-images.zip (or -tasks.csv) here")
    exp.add_argument("--tasks-csv", action="store_true", help="the task table as CSV")


def _uuid(value: str, field: str = "job_id") -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidInput(field, f"not a job or task id: {value!r}") from None


def _print(body: Any) -> None:
    print(json.dumps(body, indent=2, sort_keys=True, default=str))


def run(args: argparse.Namespace, settings: Settings) -> int:
    action = args.action
    if action == "list":
        found = views.list_jobs(status=args.status, limit=args.limit, offset=args.offset)
        _print({"jobs": [j.detail() for j in found], "limit": args.limit,
                "offset": args.offset})
    elif action == "submit":
        _print(_submit(args, settings).summary())
    elif action == "status":
        _print(views.get_job(_uuid(args.job_id)).status_body())
    elif action == "cancel":
        _print(lifecycle.cancel_job(_uuid(args.job_id)).status_body())
    elif action == "retry":
        tasks = [_uuid(t, "task_ids") for t in args.tasks] if args.tasks else None
        result = lifecycle.retry_failed(_uuid(args.job_id), tasks, settings=settings,
                                   include_refusals=args.include_refusals,
                                   dry_run=args.dry_run)
        print(result.message(), file=sys.stderr)
        _print(result.body())
    else:
        _print(_export(args, settings))
    return 0


def _submit(args: argparse.Namespace, settings: Settings) -> views.JobView:
    # The Submit page's reader (pure, no Streamlit): the same file reads the same way.
    from core.jobs.uploads import UploadError, from_upload

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise InvalidInput("file", f"cannot read {args.file}: {exc.strerror}") from None
    try:
        source = from_upload(args.file.name, data, header=args.header)
    except UploadError as exc:
        raise InvalidInput("file", str(exc)) from None
    spec = validate_batch(source.prompts, args.style, args.count,
                          limits_from_settings(settings))
    options = lifecycle.options_for(settings, model=args.model, size=args.size,
                               quality=args.quality)
    return lifecycle.submit_batch(spec, options=options, settings=settings)


def _export(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    job = views.get_job(_uuid(args.job_id))
    suffix = "tasks.csv" if args.tasks_csv else "images.zip"
    target: Path = args.output or Path(f"job-{job.id}-{suffix}")
    # Written beside the target and renamed at the end: an interrupted export never
    # leaves a truncated file under the final name.
    try:
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".export-")
    except OSError as exc:
        raise AppError(f"cannot write {target}: {exc.strerror}") from None
    try:
        if args.tasks_csv:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                rows = export.write_tasks_csv(job.id, out)
            body: dict[str, Any] = {"file": str(target), "rows": rows}
        else:
            with os.fdopen(fd, "wb") as bout:
                zipped = export.write_images_zip(job.id, get_storage(settings), bout)
            body = {"file": str(target), "images": zipped.images, "missing": zipped.missing}
        os.replace(partial, target)
    except OSError as exc:
        Path(partial).unlink(missing_ok=True)
        raise AppError(f"cannot write {target}: {exc.strerror}") from None
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return body

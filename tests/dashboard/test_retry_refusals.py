""""Retry all failed" leaves refusals alone unless asked, and says beforehand how many it
will retry and what that costs: core (dry run), then the Job page's preview and button."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from core.config import Settings
from core.jobs import lifecycle, views
from tests.dashboard.conftest import open_page, seeded_job

REFUSED = "[[demo:moderation_blocked]] a forbidden thing"
INVALID = "[[demo:invalid_request]] a malformed thing"
BROKEN = "[[demo:server_error]] an unlucky thing"  # retryable, out of attempts


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    env["MAX_ATTEMPTS"] = "1"  # a server error fails the task at once
    return env


def test_dry_run_counts_and_prices_without_changing_anything(
    settings: Settings, engine: Engine
) -> None:
    job = seeded_job(settings, engine, [REFUSED, INVALID, BROKEN, "a fine chair"])
    assert job.failed_tasks == 3
    preview = lifecycle.retry_failed(job.id, dry_run=True, settings=settings, engine=engine)
    assert (preview.requeued, preview.refusals_left, preview.dry_run) == (1, 2, True)
    assert preview.estimated_cost_usd is not None  # the demo model: $0, but known
    assert preview.message().startswith("Would requeue 1 failed task(s)")
    assert views.get_job(job.id, engine=engine).failed_tasks == 3  # nothing changed
    everything = lifecycle.retry_failed(job.id, dry_run=True, include_refusals=True,
                                   settings=settings, engine=engine)
    assert (everything.requeued, everything.refusals_left) == (3, 0)

    done = lifecycle.retry_failed(job.id, settings=settings, engine=engine)
    assert (done.requeued, done.refusals_left) == (1, 2)
    left = {t.last_error_code for t in views.list_tasks(job.id, status="failed",
                                                        engine=engine)}
    assert left == {"moderation_blocked", "invalid_request"}
    again = lifecycle.retry_failed(job.id, include_refusals=True, settings=settings,
                              engine=engine)
    assert again.requeued == 2


def test_job_page_previews_and_retries_only_what_can_succeed(
    settings: Settings, engine: Engine
) -> None:
    job = seeded_job(settings, engine, [REFUSED, BROKEN, "a fine chair"])
    at = open_page("app_pages/job.py", job_id=str(job.id))
    button = at.button(key="retry_all")
    assert button.label == "Retry all failed (1)"
    captions = " ".join(c.value for c in at.caption)
    assert "1 refusal(s) left alone" in captions and "estimated $0.00" in captions
    at.checkbox(key="retry_include_refusals").check().run()
    assert at.button(key="retry_all").label == "Retry all failed (2)"
    at.checkbox(key="retry_include_refusals").uncheck().run()
    at.button(key="retry_all").click().run()
    assert not at.exception
    assert any("Requeued 1 failed task(s)" in s.value for s in at.success)
    failed = views.list_tasks(job.id, status="failed", engine=engine)
    assert [t.last_error_code for t in failed] == ["moderation_blocked"]


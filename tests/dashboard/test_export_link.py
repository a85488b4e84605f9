"""The Job page's "Images (ZIP)": a signed link to the worker's streamed export when the
dashboard knows the worker (WORKER_URL), never a ZIP built in the dashboard's memory."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from core.config import Settings
from tests.dashboard.conftest import open_page, seeded_job


@pytest.fixture
def worker_known(env: dict[str, str]) -> dict[str, str]:
    env.update(WORKER_URL="http://127.0.0.1:9", API_KEY="k-for-links")
    return env


@pytest.mark.usefixtures("worker_known")
def test_images_zip_is_a_signed_link_to_the_worker(settings: Settings, engine: Engine
                                                   ) -> None:
    """With WORKER_URL known, the ZIP is not built in the dashboard: the button links to
    the worker's streamed export, signed for this job (tests/integration/
    test_export_zip.py follows such a link)."""
    from urllib.parse import parse_qs, urlsplit

    from core.jobs import export_links

    job = seeded_job(settings, engine, ["a fine chair"])
    at = open_page("app_pages/job.py", job_id=str(job.id))
    (button,) = [b for b in at.get("link_button") if b.proto.label == "Images (ZIP)"]
    url = urlsplit(button.proto.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == (
        f"http://127.0.0.1:9/api/exports/jobs/{job.id}/images.zip")
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert export_links.link_ok(export_links.signing_key(settings), job.id,
                                int(query["expires"]), query["sig"])
    assert not [d for d in at.get("download_button") if d.proto.label == "Images (ZIP)"]

"""Who submitted what, names and tags, and search, over the real worker's HTTP API."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import WorkerProcess, wait_for

KEYS = "ci-script:key-of-the-ci-script-0123456789,alice:alice-key-abcdefghijklmnop"
DEFAULT_KEY = "the-default-key-0123456789abcdef"
BATCH = "/api/admin/generate/batch"


def _post(worker: WorkerProcess, key: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(worker.url + BATCH, json=body, headers={"X-API-Key": key}, timeout=30)


def test_named_keys_are_recorded_as_submitter_and_filterable(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(API_KEY=DEFAULT_KEY, API_KEYS=KEYS)
    by_ci = _post(worker, "key-of-the-ci-script-0123456789",
                  {"prompts": ["a green teapot, studio light"], "name": "Spring catalogue",
                   "tags": ["Catalogue", "spring", "catalogue"]})
    assert by_ci.status_code == 200, by_ci.text
    by_alice = _post(worker, "alice-key-abcdefghijklmnop", {"prompts": ["a brass lamp"]})
    by_default = httpx.post(worker.url + BATCH, json={"prompts": ["a red chair"]},
                            headers={"Authorization": f"Bearer {DEFAULT_KEY}"}, timeout=30)
    assert by_alice.status_code == by_default.status_code == 200
    assert _post(worker, "alice-key-abcdefghijklmnoq", {"prompts": ["x"]}).status_code == 401

    headers = {"X-API-Key": DEFAULT_KEY}
    detail = httpx.get(f"{worker.url}/api/admin/jobs/{by_ci.json()['id']}",
                       headers=headers).json()
    assert (detail["name"], detail["tags"], detail["submitted_by"]) == (
        "Spring catalogue", ["catalogue", "spring"], "ci-script")
    assert "webhook_url" not in detail

    def ids(**params: str) -> list[str]:
        r = httpx.get(worker.url + "/api/admin/jobs", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["jobs"]]

    assert ids(submitted_by="alice") == [by_alice.json()["id"]]
    assert ids(submitted_by="default") == [by_default.json()["id"]]
    assert ids(tag="spring") == [by_ci.json()["id"]]
    assert ids(q="TEAPOT") == [by_ci.json()["id"]]  # prompt text, any case
    assert ids(q="catalogue") == [by_ci.json()["id"]]  # name and tag
    assert ids(q="lamp", submitted_by="ci-script") == []
    assert ids(q="100%") == []  # LIKE's own characters are literal
    for job in (by_ci, by_alice, by_default):
        wait_for(lambda j=job: httpx.get(  # type: ignore[misc]
            f"{worker.url}/api/admin/jobs/{j.json()['id']}/status",
            headers=headers).json()["progress_percentage"] == 100.0, timeout_s=60)
    alice = {"X-API-Key": "alice-key-abcdefghijklmnop"}
    gone = httpx.delete(f"{worker.url}/api/admin/jobs/{by_ci.json()['id']}", headers=alice)
    assert gone.status_code == 200, gone.text
    clone = httpx.post(f"{worker.url}/api/admin/jobs/{by_alice.json()['id']}/clone",
                       headers=headers)
    assert clone.status_code == 200
    entries = httpx.get(worker.url + "/api/admin/audit", headers=headers).json()["entries"]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("clone_job", "default"), ("delete_job", "alice")]
    assert entries[1]["detail"]["submitted_by"] == "ci-script"
    assert ids(submitted_by="default") == [clone.json()["id"], by_default.json()["id"]]
    keys_in_logs = [k for k in ("key-of-the-ci-script-0123456789", DEFAULT_KEY)
                    if k in worker.logs()]
    assert keys_in_logs == []


def test_bad_name_tags_webhook_and_search_name_the_field(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(RUN_DISPATCHER="false")
    cases = [
        ({"name": "x" * 201}, "name"),
        ({"name": "two\nlines"}, "name"),
        ({"tags": ["ok", "not ok!"]}, "tags[1]"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"tags": "spring"}, "tags"),
        ({"webhook_url": "ftp://example.invalid/hook"}, "webhook_url"),
        ({"webhook_url": "https://"}, "webhook_url"),
    ]
    for extra, field in cases:
        r = httpx.post(worker.url + BATCH, json={"prompts": ["p"], **extra}, timeout=30)
        assert r.status_code == 422, (extra, r.text)
        assert r.json()["field"] == field, (extra, r.json())
    secret_hook = "ftp://hooks.example.invalid/services/T000/B000/SECRETSECRET"
    r = httpx.post(worker.url + BATCH, json={"prompts": ["p"], "webhook_url": secret_hook})
    assert "SECRETSECRET" not in r.text
    short = httpx.get(worker.url + "/api/admin/jobs", params={"q": "ab"})
    assert short.status_code == 422 and short.json()["field"] == "q"
    bad_tag = httpx.get(worker.url + "/api/admin/jobs", params={"tag": "no spaces"})
    assert bad_tag.status_code == 422 and bad_tag.json()["field"] == "tag"

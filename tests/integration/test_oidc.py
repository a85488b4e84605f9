"""In production (ENVIRONMENT=production, USE_CLOUD_TASKS) the task endpoint accepts only
a Google OIDC token for CLOUD_TASKS_SERVICE_ACCOUNT with audience WORKER_URL. Tokens are
signed by a test key whose certificate the test serves on loopback (OIDC_CERTS_URL), and
checked by google-auth's real verification code in a real worker process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from core.dispatch.cloudtasks.oidc import (
    CachingCertsRequest,
    TokenRejected,
    WrongIdentity,
    make_verifier,
)
from testing.cloudtasks_fake import SERVICE_ACCOUNT, TestIdentity, production_worker_env
from tests.conftest import WorkerProcess, free_port

TASK = "/api/admin/worker/process-task"
UNKNOWN_TASK = {"task_id": "00000000-0000-4000-8000-000000000000"}


@pytest.fixture
def certs_url(identity: TestIdentity) -> str:
    return identity.serve()


@pytest.fixture
def prod_worker(env: dict[str, str], certs_url: str, tmp_path: Path
                ) -> Iterator[WorkerProcess]:
    port = free_port()
    # No Cloud Tasks call happens on these paths; the host only has to be set.
    values = {**env, **production_worker_env(port=port, tasks_host="127.0.0.1:9",
                                             certs_url=certs_url)}
    worker = WorkerProcess(env=values, port=port, log_path=tmp_path / "worker.log")
    worker.start()
    yield worker
    worker.stop()


def _deliver(worker: WorkerProcess, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(worker.url + TASK, json=UNKNOWN_TASK, headers=headers, timeout=10)


def test_task_endpoint_accepts_only_the_service_accounts_token_for_this_worker(
    prod_worker: WorkerProcess, identity: TestIdentity,
) -> None:
    audience = prod_worker.url
    good = identity.token(audience=audience, email=SERVICE_ACCOUNT)
    assert _deliver(prod_worker, good).json()["outcome"] == "unknown_task"

    assert _deliver(prod_worker, None).status_code == 401  # no token
    other_audience = identity.token(audience="https://other-service.run.app",
                                    email=SERVICE_ACCOUNT)
    assert _deliver(prod_worker, other_audience).status_code == 401
    other_account = identity.token(audience=audience,
                                   email="someone@test-project.iam.gserviceaccount.com")
    assert _deliver(prod_worker, other_account).status_code == 403
    unverified = identity.token(audience=audience, email=SERVICE_ACCOUNT,
                                email_verified=False)
    assert _deliver(prod_worker, unverified).status_code == 403
    expired = identity.token(audience=audience, email=SERVICE_ACCOUNT, lifetime_s=-120)
    assert _deliver(prod_worker, expired).status_code == 401
    wrong_issuer = identity.token(audience=audience, email=SERVICE_ACCOUNT,
                                  issuer="https://evil.example")
    assert _deliver(prod_worker, wrong_issuer).status_code == 401
    # Same key id, another key: the signature does not verify.
    forged = TestIdentity(key_id=identity.key_id).token(audience=audience,
                                                        email=SERVICE_ACCOUNT)
    assert _deliver(prod_worker, forged).status_code == 401
    # The admin key is not a delivery credential.
    response = httpx.post(prod_worker.url + TASK, json=UNKNOWN_TASK, timeout=10,
                          headers={"X-API-Key": "test-admin-key-0123456789"})
    assert response.status_code == 401

    refusals = [json.loads(line) for line in prod_worker.logs().splitlines()
                if '"task_auth_refused"' in line]
    assert [r["http_status"] for r in refusals] == [401, 401, 403, 403, 401, 401, 401, 401]
    assert all(r["severity"] == "WARNING" for r in refusals)
    assert good not in prod_worker.logs()  # tokens are never logged


def test_verifier_caches_certificates_and_names_the_reason(
    settings: Settings, identity: TestIdentity, certs_url: str,
) -> None:
    configured = settings.model_copy(update={
        "WORKER_URL": "https://worker.example.run.app/",
        "CLOUD_TASKS_SERVICE_ACCOUNT": SERVICE_ACCOUNT, "OIDC_CERTS_URL": certs_url})
    verify = make_verifier(configured, CachingCertsRequest(certs_url))
    audience = "https://worker.example.run.app"  # the trailing slash is not part of it
    for _ in range(3):
        claims = verify("Bearer " + identity.token(audience=audience, email=SERVICE_ACCOUNT))
        assert claims["email"] == SERVICE_ACCOUNT
    assert identity.cert_fetches == 1
    with pytest.raises(TokenRejected, match="audience"):
        verify("Bearer " + identity.token(audience="https://x", email=SERVICE_ACCOUNT))
    with pytest.raises(WrongIdentity):
        verify("Bearer " + identity.token(audience=audience, email="a@b.iam"))
    with pytest.raises(TokenRejected, match="missing"):
        verify("Basic abc")

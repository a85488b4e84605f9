"""Property-based fuzz of the worker API from its own OpenAPI document (schemathesis), against
a real worker process and PostgreSQL: no 5xx, and every answer is one the document declares,
with the declared content type and body schema. Bounded so it runs in well under a minute."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import WorkerProcess
from tests.security import API_KEY, TASK_SECRET

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 60


def test_api_fuzz_from_openapi_no_5xx_and_answers_match_the_schema(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(API_KEY=API_KEY, TASK_SECRET=TASK_SECRET, RUN_DISPATCHER="false",
                          MAX_PROMPTS_PER_BATCH="20", MAX_BODY_BYTES="65536")
    schema = schemathesis.openapi.from_url(worker.url + "/openapi.json")
    auth = {"X-API-Key": API_KEY, "X-Task-Secret": TASK_SECRET}
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    # A real job, so path-parameter cases reach past the 404 too.
    job = httpx.post(worker.url + "/api/admin/generate/batch", headers=auth, timeout=30,
                     json={"prompts": ["fuzz seed one", "fuzz seed two [[demo:server_error]]"]})
    real_job = job.json()["id"]

    for operation in operations:
        # Most cases carry the credentials, the rest whatever was generated for them.
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  derandomize=True, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), authed=st.sampled_from([True, True, True, False]),
               on_real_job=st.booleans())
        def run(case: Case, authed: bool, on_real_job: bool) -> None:
            if authed:  # the credentials replace whatever was generated for them
                case.headers = {**(case.headers or {}), **auth}
            if on_real_job and case.path_parameters and "job_id" in case.path_parameters:
                case.path_parameters["job_id"] = real_job
            response = case.call(base_url=worker.url, timeout=30)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS)

        run()
    tried = sum(statuses.values())
    assert tried >= len(operations) * 5
    assert not any(code >= 500 for code in statuses)
    assert "Traceback" not in worker.logs()
    print(f"FIGURES fuzz: operations={len(operations)} inputs={tried} "
          f"statuses={dict(sorted(statuses.items()))}")

"""Bad input is refused with 422 naming the field; huge bodies are refused before they are
read whole; SQL-looking and Unicode prompts are stored and returned verbatim."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import WorkerProcess
from tests.security import API_KEY

BATCH = "/api/admin/generate/batch"
HEADERS = {"X-API-Key": API_KEY}
LIMITS = {"MAX_PROMPTS_PER_BATCH": "5", "MAX_PROMPT_CHARS": "50", "MAX_COUNT_PER_PROMPT": "3",
          "MAX_TASKS_PER_BATCH": "10", "MAX_BODY_BYTES": "4096"}

# (body, the field the answer must name) — one bad input per line.
BAD_BODIES: list[tuple[Any, str]] = [
    ({"prompts": []}, "prompts"),                                   # empty list
    ({}, "prompts"),                                                # missing
    ({"prompts": None}, "prompts"),                                 # null
    ({"prompts": "a cat"}, "prompts"),                              # a string, not a list
    ({"prompts": ["a cat", "   "]}, "prompts[1]"),                  # blank prompt
    ({"prompts": [""]}, "prompts[0]"),                              # empty prompt
    ({"prompts": ["x" * 51]}, "prompts[0]"),                        # over the length limit
    ({"prompts": ["ok", "界" * 51]}, "prompts[1]"),                 # counted in characters
    ({"prompts": ["a\x00b"]}, "prompts[0]"),                        # NUL
    ({"prompts": [f"p{i}" for i in range(6)]}, "prompts"),          # more than the limit
    ({"prompts": [1, 2]}, "prompts.0"),                             # wrong item type
    ({"prompts": [["nested"]]}, "prompts.0"),                       # nested list
    ({"prompts": ["a"], "count_per_prompt": 0}, "count_per_prompt"),
    ({"prompts": ["a"], "count_per_prompt": 4}, "count_per_prompt"),
    ({"prompts": ["a"], "count_per_prompt": -1}, "count_per_prompt"),
    ({"prompts": ["a"], "count_per_prompt": "many"}, "count_per_prompt"),
    ({"prompts": ["a"], "count_per_prompt": 1.5}, "count_per_prompt"),
    ({"prompts": ["a"], "count_per_prompt": 10**30}, "count_per_prompt"),
    ({"prompts": ["a"] * 4, "count_per_prompt": 3}, "count_per_prompt"),  # 12 > 10 tasks
    ({"prompts": ["a"], "style": "no_such_style"}, "style"),
    ({"prompts": ["a"], "style": "../../etc"}, "style"),
    ({"prompts": ["a"], "style": 5}, "style"),
    ({"prompts": ["a"], "size": "99999x99999"}, "size"),
    ({"prompts": ["a"], "quality": "ultra"}, "quality"),
    ({"prompts": ["a"], "admin": True}, "admin"),                  # unknown field
    ([], "body"),                                                   # not an object
    ("prompts", "body"),
]

VERBATIM = [
    "Robert'); DROP TABLE generation_tasks;--",
    "' OR '1'='1' --",
    "%s %(name)s $1 :job_id ? {prompt}",
    "日本語のプロンプト 🎨🖼️ — naïve café",
    "e\u0301 is not \u00e9 (no normalisation)",
    "\u202eright-to-left override",
    "<script>alert('x')</script> & \"quotes\"",
    "family 👩\u200d👩\u200d👧\u200d👦 inner  double  space\tand tab",
    "界" * 50,
]


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(API_KEY=API_KEY, RUN_DISPATCHER="false", **LIMITS)


def test_bad_batches_get_422_naming_the_field(worker: WorkerProcess, engine: Engine) -> None:
    wrong = []
    with httpx.Client(base_url=worker.url, headers=HEADERS, timeout=10) as client:
        for body, field in BAD_BODIES:
            r = client.post(BATCH, json=body)
            answer = r.json()
            if r.status_code != 422 or answer.get("field") != field or (
                    field not in answer.get("message", "")):
                wrong.append((body if len(str(body)) < 80 else "...", field, r.status_code,
                              answer))
        for raw in (b'{"prompts": [', b"not json", b'{"prompts": ["a"]} trailing', b"",
                    b"\xff\xfe{}"):
            r = client.post(BATCH, content=raw, headers={"content-type": "application/json"})
            if r.status_code != 422 or "field" not in r.json():
                wrong.append((raw, "body", r.status_code, r.text))
    assert wrong == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM generation_jobs")).scalar() == 0
    print(f"FIGURES inputs: bad_bodies={len(BAD_BODIES) + 5}")


def test_body_over_the_limit_is_refused_with_413(worker: WorkerProcess) -> None:
    big = {"prompts": ["a" * 40] * 200}  # ~9 KB > 4096
    r = httpx.post(worker.url + BATCH, json=big, headers=HEADERS, timeout=10)
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_a_declared_length_over_the_limit_is_refused_before_the_endpoint_acts(
    worker: WorkerProcess, engine: Engine,
) -> None:
    # The case FastAPI's max_body_size cannot answer in this form (worker/body_limit.py):
    # it would let the cancel run, then send a plain-text 413.
    job = httpx.post(worker.url + BATCH, json={"prompts": ["a cat"]}, headers=HEADERS,
                     timeout=10).json()["id"]
    r = httpx.post(f"{worker.url}/api/admin/jobs/{job}/cancel", content=b"x" * 5000,
                   headers=HEADERS, timeout=10)
    assert (r.status_code, r.json()) == (
        413, {"detail": "request body over 4096 bytes", "field": "body"})
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM generation_jobs WHERE id = :j"),
                              {"j": job}).scalar()
    assert status != "cancelled"


def test_a_content_length_that_is_not_a_number_never_reaches_the_app(
    worker: WorkerProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall((f"POST {BATCH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
                      "Content-Length: 12abc\r\n\r\n{}").encode())
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_chunked_body_without_length_is_cut_off_before_it_is_read_whole(
    worker: WorkerProcess,
) -> None:
    # A chunked upload that never ends: the answer must come after the limit is crossed,
    # not after the (endless) body is read.
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall((f"POST {BATCH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"X-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b'["' + b"a" * 1021 + b'",'
        sent = 0
        answer = b""
        deadline = time.monotonic() + 10
        sock.settimeout(0.2)
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            if sent < 64 * 1024:  # far more than the limit, never the final 0-chunk
                try:
                    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    sent += len(chunk)
                except OSError:
                    pass  # the server closed its side after answering
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                continue
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 64 * 1024, "the server read the whole body before answering"
    assert httpx.get(worker.url + "/healthz", timeout=10).status_code == 200
    assert "Traceback" not in worker.logs()


def test_sql_looking_and_unicode_prompts_are_stored_and_returned_verbatim(
    worker: WorkerProcess, engine: Engine
) -> None:
    client = httpx.Client(base_url=worker.url, headers=HEADERS, timeout=10)
    with client:
        ids = []
        for start in range(0, len(VERBATIM), 5):
            r = client.post(BATCH, json={"prompts": VERBATIM[start:start + 5]})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        returned = []
        for job_id in ids:
            tasks = client.get(f"/api/admin/jobs/{job_id}/tasks").json()["tasks"]
            returned += [t["prompt"] for t in sorted(tasks, key=lambda t: t["prompt_index"])]
    assert returned == VERBATIM
    with engine.connect() as conn:
        stored = [r.prompt for r in conn.execute(text(
            "SELECT prompt FROM generation_tasks ORDER BY created_at, prompt_index"))]
        tables = conn.execute(text(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
            "('generation_jobs', 'generation_tasks')")).scalar()
    assert sorted(stored) == sorted(VERBATIM) and tables == 2

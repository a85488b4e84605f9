"""Cloud Tasks set-up shared by the Cloud Tasks test files, as fixtures (tests/conftest.py
registers this module as a plugin) and the helpers they are built from:

- ``identity`` and ``fake``: the signing key and testing/cloudtasks_fake.py behind it;
- ``prod_env`` / ``prod_settings`` / ``prod_worker``: a worker in production mode (OIDC
  verification on) behind the fake, its queue created by the CLI; a file adds to
  ``prod_env`` by overriding it;
- ``emulator`` and ``cloud_env``: gcloud-tasks-emulator (PyPI, its own venv) and the
  settings that point a worker at it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.cloud import tasks_v2

from cli.main import main as cli
from core.config import Settings
from core.dispatch.cloudtasks.dispatcher import CloudTasksDispatcher
from testing.cloudtasks_fake import CloudTasksFake, TestIdentity, production_worker_env
from tests.conftest import REPO_ROOT, WorkerProcess, free_port, need, stop_process, wait_for

EMULATOR_PYTHON = REPO_ROOT / ".venv-emulator" / "bin" / "python"
# Binds the emulator to loopback only (its CLI would bind every interface).
_RUN = ("import sys; from gcloud_tasks_emulator.__main__ import run_server; "
        "run_server('127.0.0.1', int(sys.argv[1]), 'localhost', 80, [], -1)")


@pytest.fixture
def identity() -> Iterator[TestIdentity]:
    key = TestIdentity()
    yield key
    key.stop()


@pytest.fixture
def fake(identity: TestIdentity) -> Iterator[CloudTasksFake]:
    with CloudTasksFake(identity) as server:
        yield server


def production_env(base: Mapping[str, str], fake: CloudTasksFake, identity: TestIdentity,
                   *, queue_name: str = "images") -> dict[str, str]:
    """``base`` plus a production worker's settings behind ``fake`` (tokens signed by
    ``identity``), on a free port (PORT) that nothing listens on until it starts."""
    certs_url = identity.serve()  # first: free_port() must not hand out its port
    port = free_port()
    return {**base, **production_worker_env(port=port, tasks_host=fake.host,
                                            certs_url=certs_url, queue_name=queue_name),
            "PORT": str(port)}


def worker_on_port(values: dict[str, str], tmp_path: Path,
                      log_name: str = "worker.log") -> WorkerProcess:
    """A worker (not started) on the port ``values`` names (PORT), the one its WORKER_URL
    points at."""
    return WorkerProcess(env=values, port=int(values["PORT"]), log_path=tmp_path / log_name)


def create_queue(dispatcher: CloudTasksDispatcher, queue: tasks_v2.Queue) -> None:
    """Create ``queue`` (e.g. ``gcloud_queue(...)``, what the guide's gcloud command
    makes) under the dispatcher's project and location."""
    parent = dispatcher.queue_path.rsplit("/queues/", 1)[0]
    dispatcher.client.create_queue(parent=parent, queue=queue)


@pytest.fixture
def prod_env(env: dict[str, str], fake: CloudTasksFake, identity: TestIdentity
             ) -> dict[str, str]:
    """``env`` for a production worker behind the fake (this process's settings too)."""
    env.update(production_env(env, fake, identity))
    return env


@pytest.fixture
def prod_settings(prod_env: dict[str, str], settings: Settings) -> Settings:
    """This process's settings (the CLI's and the dispatcher's): the same production env;
    the queue exists, created by the CLI."""
    assert cli(["queue", "create"]) == 0
    return settings


@pytest.fixture
def prod_worker(prod_env: dict[str, str], prod_settings: Settings, tmp_path: Path
                ) -> Iterator[WorkerProcess]:
    worker = worker_on_port(prod_env, tmp_path).start()
    yield worker
    worker.stop()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[str]:
    """gcloud-tasks-emulator on a loopback port; its host:port."""
    need(EMULATOR_PYTHON.exists(),
         "gcloud-tasks-emulator not installed (scripts/test-deps.d/20-cloud-tasks-emulator.sh)")
    port = free_port()
    log = (tmp_path / "emulator.log").open("wb")
    proc = subprocess.Popen([str(EMULATOR_PYTHON), "-W", "ignore", "-c", _RUN, str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("emulator did not start: "
                                       + (tmp_path / "emulator.log").read_text()) from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout_s=10)
        log.close()


def emulator_values(emulator: str, port: int) -> dict[str, str]:
    """USE_CLOUD_TASKS against the emulator, its deliveries going to loopback ``port``,
    in a queue named after that port."""
    return {"USE_CLOUD_TASKS": "true", "GCP_PROJECT": "test-project",
            "GCP_LOCATION": "us-central1", "QUEUE_NAME": f"images-{port}",
            "CLOUD_TASKS_EMULATOR_HOST": emulator, "WORKER_URL": f"http://127.0.0.1:{port}"}


@pytest.fixture
def cloud_env(env: dict[str, str], emulator: str) -> dict[str, str]:
    """USE_CLOUD_TASKS against the emulator; WORKER_URL is the worker a test starts on
    PORT."""
    port = free_port()
    env.update(emulator_values(emulator, port), PORT=str(port), MAX_ATTEMPTS="6")
    return env


def answered(fake: CloudTasksFake, task_name: str, timeout_s: float = 10) -> Any:
    """The fake's deliveries of ``task_name`` once the last was answered 200. The worker
    writes the row before it answers, and the fake records a delivery when its answer
    arrives, so a row that reads done can be ahead of the fake's record."""
    return wait_for(lambda: (ds := fake.deliveries_for(task_name)) and ds[-1].status == 200
                    and ds, timeout_s=timeout_s, interval_s=0.05,
                    message=f"the fake to record the answer to {task_name}")

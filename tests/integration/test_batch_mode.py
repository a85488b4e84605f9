"""Batch mode through the OpenAI stub's Files and Batch APIs, with the real ``openai``
client, a real PostgreSQL and local storage: the runner (core/batch/runner.py) driven
round by round in this process, so each state can be checked between rounds."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import Engine, text

from core.batch import runner as batch_runner
from core.batch.runner import BatchRunner
from core.billing import charges, prices
from core.config import Settings, get_settings
from core.jobs import lifecycle, views
from core.jobs.validation import BatchSpec
from core.storage import get_storage
from testing.openai_stub import OpenAIStub


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def batch_settings(env: dict[str, str], stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[Settings]:
    env.update(IMAGE_PROVIDER="openai", OPENAI_BASE_URL=stub.base_url,
               OPENAI_API_KEY=stub.api_key, OPENAI_TIMEOUT_S="10", BATCH_CHUNK_SIZE="3",
               MAX_ATTEMPTS="3", STORAGE_BACKEND="local")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


_open: list[BatchRunner] = []


@pytest.fixture(autouse=True)
def _close_runners() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def _runner(settings: Settings, engine: Engine) -> BatchRunner:
    run = BatchRunner(settings, engine, batch_runner.make_client(settings),
                      get_storage(settings))
    _open.append(run)
    return run


def _submit(settings: Settings, engine: Engine, prompts: list[str], **options: str
            ) -> views.JobView:
    chosen = lifecycle.options_for(settings, model="gpt-image-2", size="1024x1024",
                              quality="medium", mode="batch", **options)
    return lifecycle.submit_batch(BatchSpec(prompts=prompts, style="none", count_per_prompt=1),
                             options=chosen, engine=engine, settings=settings)


def _until_done(run: BatchRunner, job_id: UUID, rounds: int = 30) -> views.JobView:
    for _ in range(rounds):
        run.cycle()
        job = views.get_job(job_id, engine=run.engine)
        if job.is_finished:
            return job
    raise AssertionError(f"job not finished after {rounds} rounds: {job}")


def _tasks(engine: Engine, job_id: UUID) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT prompt, status, attempts, last_error_code, input_tokens, output_tokens, "
            "billed_mode, image_path, thumbnail_path, batch_id FROM generation_tasks "
            "WHERE job_id = :j"), {"j": job_id}).all()
    return {r.prompt: dict(r._mapping) for r in rows}


def test_batch_job_completes_with_partial_errors_and_billed_cost(
    batch_settings: Settings, engine: Engine, stub: OpenAIStub
) -> None:
    prompts = [f"a chair number {i}" for i in range(7)]
    stub.batches.on_prompt("number 4", "moderation")
    job = _submit(batch_settings, engine, prompts)
    assert job.mode == "batch" and job.status == "pending"
    assert job.estimated_cost_usd == Decimal("0.053") * 7 * prices.BATCH_DISCOUNT
    run = _runner(batch_settings, engine)

    done = _until_done(run, job.id)

    assert (done.status, done.completed_tasks, done.failed_tasks) == (
        "completed_with_errors", 6, 1)
    tasks = _tasks(engine, job.id)
    blocked = tasks.pop("a chair number 4")
    assert (blocked["status"], blocked["last_error_code"]) == ("failed", "moderation_blocked")
    root = Path(batch_settings.LOCAL_STORAGE_DIR)
    for task in tasks.values():
        assert task["status"] == "succeeded" and task["billed_mode"] == "batch"
        assert (root / str(task["image_path"])).exists()
        assert (root / str(task["thumbnail_path"])).exists()
    seen = stub.batches.snapshot()
    # 7 tasks in chunks of 3: three files, three batches, seven requests run; no realtime.
    assert (seen.files_uploaded, seen.batches_created, seen.requests_run) == (3, 3, 7)
    assert stub.snapshot().requests == 0
    with engine.connect() as conn:
        states = conn.execute(text("SELECT state, openai_status, request_total FROM "
                                   "openai_batches WHERE job_id = :j"), {"j": job.id}).all()
    assert sorted(states) == [("done", "completed", 1), ("done", "completed", 3),
                              ("done", "completed", 3)]

    # Cost: every task's usage x gpt-image-2's rates, halved; the job's total is the sum.
    rates = prices.prices().tokens["gpt-image-2"]
    expected_total = Decimal(0)
    for prompt, task in tasks.items():
        usage = _stub_usage(prompt, "medium")
        per_task = charges.task_cost_usd("gpt-image-2", "openai",
                                         input_tokens=task["input_tokens"],  # type: ignore[arg-type]
                                         output_tokens=task["output_tokens"],  # type: ignore[arg-type]
                                         input_image_tokens=0, billed_mode="batch")
        by_hand = (Decimal(usage["input_tokens"]) * rates.text_input_per_1m
                   + Decimal(usage["output_tokens"]) * rates.image_output_per_1m
                   ) / Decimal(1_000_000) / 2
        assert per_task == by_hand
        expected_total += by_hand
    billed = charges.job_cost(job.id, "gpt-image-2", "openai", engine=engine)
    assert billed.actual_usd == expected_total and billed.billed_tasks == 6


def _stub_usage(prompt: str, quality: str) -> dict[str, int]:
    from testing.openai_batch_stub import usage_for

    return usage_for(prompt, quality)


def test_expired_batch_unfinished_tasks_complete_in_a_new_batch(
    batch_settings: Settings, engine: Engine, stub: OpenAIStub
) -> None:
    prompts = [f"a lamp number {i}" for i in range(3)]  # one batch of 3
    stub.batches.expire_next(done=1)  # the first batch expires with one request done
    job = _submit(batch_settings, engine, prompts)
    run = _runner(batch_settings, engine)

    done = _until_done(run, job.id)

    assert (done.status, done.completed_tasks, done.failed_tasks) == ("completed", 3, 0)
    with engine.connect() as conn:
        batches = conn.execute(text(
            "SELECT openai_status, task_count, request_completed FROM openai_batches "
            "WHERE job_id = :j ORDER BY created_at"), {"j": job.id}).all()
    # The expired batch finished one; its two unfinished tasks went into a second batch.
    assert [tuple(b) for b in batches] == [("expired", 3, 1), ("completed", 2, 2)]
    tasks = _tasks(engine, job.id)
    attempts = sorted(int(t["attempts"]) for t in tasks.values())  # type: ignore[call-overload]
    assert attempts == [1, 2, 2]
    seen = stub.batches.snapshot()
    assert (seen.batches_created, seen.requests_run) == (2, 3)


def test_expired_batch_goes_to_realtime_when_the_operator_says_so(
    batch_settings: Settings, engine: Engine, stub: OpenAIStub
) -> None:
    stub.batches.expire_next(done=0)
    job = _submit(batch_settings, engine, ["a red vase", "a blue vase"],
                  batch_fallback="realtime")
    run = _runner(batch_settings, engine)
    for _ in range(6):
        run.cycle()
    tasks = _tasks(engine, job.id)
    assert {t["status"] for t in tasks.values()} == {"queued"}
    assert {t["last_error_code"] for t in tasks.values()} == {"batch_expired"}
    assert all(t["batch_id"] is None for t in tasks.values())
    assert stub.batches.snapshot().batches_created == 1


def test_cancelling_the_job_cancels_its_open_batches(
    batch_settings: Settings, engine: Engine, stub: OpenAIStub
) -> None:
    stub.batches.steps_per_status = 100  # stays validating
    job = _submit(batch_settings, engine, [f"a cup {i}" for i in range(5)])
    run = _runner(batch_settings, engine)
    run.cycle()
    assert stub.batches.snapshot().batches_created == 2
    cancelled = lifecycle.cancel_job(job.id, engine=engine)
    assert (cancelled.status, cancelled.cancelled_tasks) == ("cancelled", 5)
    run.cycle()
    run.cycle()
    assert stub.batches.snapshot().batches_cancelled == 2
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, openai_status FROM openai_batches "
                                 "WHERE job_id = :j"), {"j": job.id}).all()
    assert {tuple(r) for r in rows} == {("done", "cancelled")}
    assert views.get_job(job.id, engine=engine).cancelled_tasks == 5


def test_a_crash_after_create_adopts_the_batch_instead_of_making_a_second(
    batch_settings: Settings, engine: Engine, stub: OpenAIStub
) -> None:
    job = _submit(batch_settings, engine, ["a green door"])
    run = _runner(batch_settings, engine)
    run.plan(job.id)
    with engine.connect() as conn:
        row_id = conn.execute(text("SELECT id FROM openai_batches")).scalar_one()
    # Upload, then stop in 'creating' after the batch exists at OpenAI but before its id
    # was recorded: what a process killed between the create call and the commit leaves.
    for _ in range(3):
        run._step(batch_runner.store.load(engine, row_id), batch_runner.AdvanceReport())  # type: ignore[arg-type]
    row = batch_runner.store.load(engine, row_id)
    assert row is not None and row.state == "creating"
    run.client.batches.create(completion_window="24h", endpoint="/v1/images/generations",
                              input_file_id=str(row.input_file_id),
                              metadata={"aiwi_batch": str(row_id)})
    done = _until_done(run, job.id)
    assert done.completed_tasks == 1
    assert stub.batches.snapshot().batches_created == 1


def test_gpt_image_2_is_offered_and_gpt_image_1_is_not(batch_settings: Settings) -> None:
    from core.errors import InvalidInput
    from core.providers import image_models

    assert "gpt-image-2" in image_models.selectable_models()
    assert "gpt-image-1" not in image_models.selectable_models()
    assert image_models.default_model("gpt-image-1") == "gpt-image-2"
    assert lifecycle.options_for(batch_settings).model in ("gpt-image-2", "gpt-image-1.5")
    with pytest.raises(InvalidInput, match="shut down"):
        lifecycle.options_for(batch_settings, model="gpt-image-1")
    with pytest.raises(InvalidInput, match="no price"):
        lifecycle.options_for(batch_settings, model="gpt-image-2.6-flare")
    assert lifecycle.options_for(batch_settings, model="gpt-image-2.6-flare",
                            confirm_unknown_price=True).model == "gpt-image-2.6-flare"
    with pytest.raises(InvalidInput, match="batch"):
        lifecycle.options_for(batch_settings, model="chatgpt-image-latest", mode="batch",
                         confirm_unknown_price=True)


def test_retry_failed_of_a_batch_job_goes_back_into_a_batch(
    batch_settings: Settings, engine: Engine, stub: OpenAIStub
) -> None:
    stub.batches.on_prompt("forbidden", "moderation")
    job = _submit(batch_settings, engine, ["a fine chair", "a forbidden chair"])
    run = _runner(batch_settings, engine)
    done = _until_done(run, job.id)
    assert (done.completed_tasks, done.failed_tasks) == (1, 1)
    stub.batches.on_prompt("forbidden", "ok")
    # A refusal is left alone unless asked; asked here, it goes into a batch.
    result = lifecycle.retry_failed(job.id, engine=engine, settings=batch_settings,
                               include_refusals=True)
    assert result.requeued == 1
    assert _tasks(engine, job.id)["a forbidden chair"]["status"] == "running"
    done = _until_done(run, job.id)
    assert (done.status, done.completed_tasks, done.failed_tasks) == ("completed", 2, 0)
    assert stub.snapshot().requests == 0  # no realtime call: it went into a third batch
    assert stub.batches.snapshot().batches_created == 2


def test_a_batch_openai_refuses_fails_its_tasks_with_the_reason(
    batch_settings: Settings, engine: Engine, stub: OpenAIStub
) -> None:
    stub.batches.reject_creates = 1
    job = _submit(batch_settings, engine, ["a chair", "a lamp"])
    done = _until_done(_runner(batch_settings, engine), job.id)
    assert (done.status, done.failed_tasks) == ("failed", 2)
    codes = {t["last_error_code"] for t in _tasks(engine, job.id).values()}
    assert codes == {"invalid_request"}
    with engine.connect() as conn:
        row = conn.execute(text("SELECT state, last_error FROM openai_batches")).one()
    assert row.state == "done" and "not supported by the Batch API" in row.last_error


def test_the_jobs_image_options_reach_every_request_of_the_input_file(
    batch_settings: Settings, engine: Engine, stub: OpenAIStub
) -> None:
    import json

    job = _submit(batch_settings, engine, ["a chair", "a lamp"], output_format="webp",
                  output_compression=70, background="opaque", moderation="low")
    _until_done(_runner(batch_settings, engine), job.id)
    inputs = [f for f in stub.batches.files.values() if f.purpose == "batch"]
    assert len(inputs) == 1 and inputs[0].filename == f"aiwi-{_batch_ids(engine)[0]}.jsonl"
    bodies = [json.loads(line)["body"] for line in (inputs[0].data or b"").splitlines()]
    assert [b["prompt"] for b in bodies] == ["a chair", "a lamp"]
    for body in bodies:
        assert (body["model"], body["output_format"], body["output_compression"],
                body["background"], body["moderation"], body["n"]) == (
            "gpt-image-2", "webp", 70, "opaque", "low", 1)


def _batch_ids(engine: Engine) -> list[UUID]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT id FROM openai_batches"))]

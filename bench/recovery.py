"""Benchmark: recovery of the local queue with the product's default lease, renewal, grace,
backoff and poll settings (only the demo picture is shrunk, for CPU).

- SIGKILL of the worker when 40 of 200 tasks are done, then a restart: seconds from the
  restart until the job is done (goal <= 45; 331 before leases were owned and renewed).
- SIGTERM when 40 of 100 are done, then a restart: seconds from the restart until done
  (goal <= 15), and whether the log holds a traceback.
"""

from __future__ import annotations

import signal
import time

from sqlalchemy import Engine, text

from bench.common import (
    Figure,
    Worker,
    base_env,
    bench_database,
    figure,
    load_note,
    submit,
    sync_engine,
    wait_finished,
    workdir,
)

# base_env's measuring shortcuts that would shrink what a deployment gets.
NOT_DEFAULT = ("DEMO_LATENCY_MS", "DISPATCH_POLL_S", "DISPATCH_DEADLINE_S")


def _mid_batch(engine: Engine, job_id: str) -> bool:
    """40 done and several deliveries running, so the stop cuts some."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT (SELECT completed_tasks FROM generation_jobs WHERE id = :j) AS done, "
            "(SELECT count(*) FROM generation_tasks WHERE job_id = :j AND status = 'running')"
            " AS running"), {"j": job_id}).one()
    return bool(row.done >= 40 and row.running >= 3)


def _db_now(engine: Engine) -> float:
    with engine.connect() as conn:
        return float(conn.execute(text("SELECT EXTRACT(EPOCH FROM now())")).scalar())


def _scenario(kill: bool, tasks: int) -> tuple[float | None, int, bool]:
    """(seconds from restart to done, deliveries cut, traceback logged)."""
    tag = "recovery_kill" if kill else "recovery_term"
    with bench_database(tag) as url, workdir(tag) as tmp:
        engine = sync_engine(url)
        env = {k: v for k, v in base_env(url, tmp).items() if k not in NOT_DEFAULT}
        env.update(DEMO_IMAGE_PX="64", LOG_LEVEL="INFO")
        worker = Worker(env=env, log_path=tmp / "worker.log").start()
        try:
            job_id = submit(worker.url, [f"recovery prompt {i}" for i in range(tasks)])
            deadline = time.monotonic() + 120
            while not _mid_batch(engine, job_id) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert worker.proc is not None
            if kill:
                worker.proc.kill()
            else:
                worker.proc.send_signal(signal.SIGTERM)
            worker.proc.wait(timeout=30)
            with engine.connect() as conn:
                cut = int(conn.execute(text(
                    "SELECT count(*) FROM generation_tasks WHERE status = 'running'")).scalar())
            restarted = _db_now(engine)
            worker.start()
            row = wait_finished(engine, job_id, timeout_s=400)
            done = row.finished_at is not None and row.completed_tasks == tasks
            recovery = row.finished_at.timestamp() - restarted if done else None
            return recovery, cut, "Traceback" in worker.logs()
        finally:
            worker.stop()
            engine.dispose()


def run() -> list[Figure]:
    kill_s, cut, _ = _scenario(kill=True, tasks=200)
    term_s, stranded, traceback = _scenario(kill=False, tasks=100)
    return [
        figure("local SIGKILL at 40/200, restart -> job done", kill_s, "s", goal="<= 45",
               check=lambda v: v <= 45, note=f"{cut} deliveries cut; defaults; {load_note()}"),
        figure("local SIGTERM at 40/100, restart -> job done", term_s, "s", goal="<= 15",
               check=lambda v: v <= 15 and not traceback and stranded == 0,
               note=f"{stranded} left running, traceback logged: {traceback}; defaults"),
    ]


if __name__ == "__main__":
    run()

"""Benchmark 1, adaptive concurrency under a provider rate limit R.

The OpenAI-compatible stub (testing.openai_stub) allows R images per minute and
answers 429 with Retry-After and x-ratelimit-* headers above it. Here its window is a
token bucket refilled at R/60 per second with BURST_S seconds of burst, the way OpenAI's
limits replenish continuously (the stub's own 60 s sliding window would let a whole
minute's images through in the first second, and a 1-2 minute run would then measure the
burst, not the rate). R is scaled so a 1,000-task batch runs in about a minute.

Three set-ups side by side, each a fresh worker and database:
- adaptive: AIMD dispatcher (ADAPTIVE_CONCURRENCY, up to 50) and the provider client's
  pacer (core.providers.ratelimit, PROVIDER_RATE_WAIT_S);
- fixed 5 and fixed 50: constant concurrency, plain per-task backoff, no pacer.
achieved = images the stub accepted per minute (first to last accepted image) / R.
"""

from __future__ import annotations

import time

from sqlalchemy import text

from bench.common import (
    Figure,
    base_env,
    bench_database,
    figure,
    job_row,
    load_note,
    running_worker,
    submit,
    sync_engine,
    workdir,
)

N_TASKS = 1000
RATE_PER_MIN = 900
LATENCY_S = 0.5
BURST_S = 2.0
CAP_S = 75.0  # a set-up still running after this is measured over what it did so far


def _stub(rate_per_min: int, latency_s: float):  # type: ignore[no-untyped-def]
    from testing.openai_stub import OpenAIStub

    class BucketStub(OpenAIStub):
        """R per minute as a token bucket (see the module doc)."""

        def __init__(self) -> None:
            super().__init__(latency_s=latency_s, images_per_minute=rate_per_min)
            # Headers and body leave in two writes: without TCP_NODELAY the body waits
            # for the client's delayed ACK (~40 ms a request), which no real API adds.
            self._server.RequestHandlerClass.disable_nagle_algorithm = True
            self._rate_per_s = rate_per_min / 60.0
            self._burst = max(1.0, self._rate_per_s * BURST_S)
            self._tokens = self._burst
            self._last = time.monotonic()

        def _admit(self, n: int, now: float) -> tuple[bool, float, int]:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate_per_s)
            self._last = now
            if self._tokens >= n:
                self._tokens -= n
                return True, 0.0, int(self._tokens)
            return False, (n - self._tokens) / self._rate_per_s, int(self._tokens)

    return BucketStub()


def _one(label: str, overrides: dict[str, str]) -> dict[str, float | int | str]:
    stub = _stub(RATE_PER_MIN, LATENCY_S).start()
    try:
        with bench_database(f"rate_{label}") as url, workdir(f"rate-{label}") as tmp:
            env = {**base_env(url, tmp), "IMAGE_PROVIDER": "openai",
                   "OPENAI_API_KEY": stub.api_key, "OPENAI_BASE_URL": stub.base_url,
                   "RETRY_MIN_BACKOFF_S": "1", "RETRY_MAX_BACKOFF_S": "300",
                   "MAX_ATTEMPTS": "5", **overrides}
            engine = sync_engine(url)
            try:
                with running_worker(env, tmp / "worker.log") as worker:
                    job_id = submit(worker.url, [f"rate {label} {i}" for i in range(N_TASKS)])
                    started = time.monotonic()
                    while time.monotonic() - started < CAP_S:
                        row = job_row(engine, job_id)
                        if row.finished_at is not None:
                            break
                        time.sleep(0.25)
                    row = job_row(engine, job_id)
                with engine.connect() as conn:
                    attempts = conn.execute(text(
                        "SELECT COALESCE(sum(attempts), 0) FROM generation_tasks")).scalar()
            finally:
                engine.dispose()
    finally:
        stub.stop()
    accepted = sorted(c.at_s for c in stub.calls if c.status == 200)
    span_s = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    per_min = (len(accepted) - 1) / span_s * 60 if span_s > 0 else 0.0
    return {"label": label, "ratio": per_min / RATE_PER_MIN, "per_min": per_min,
            "failed": int(row.failed_tasks), "completed": int(row.completed_tasks),
            "refused": stub.stats.limited, "attempts": int(attempts or 0),
            "finished": "finished" if row.finished_at is not None else f"cut at {CAP_S:.0f} s"}


SETUPS: dict[str, dict[str, str]] = {
    "adaptive": {"ADAPTIVE_CONCURRENCY": "true", "LOCAL_MAX_CONCURRENCY": "50",
                 "PROVIDER_RATE_WAIT_S": "30"},
    "fixed5": {"ADAPTIVE_CONCURRENCY": "false", "LOCAL_MAX_CONCURRENCY": "5",
               "PROVIDER_RATE_WAIT_S": "0"},
    "fixed50": {"ADAPTIVE_CONCURRENCY": "false", "LOCAL_MAX_CONCURRENCY": "50",
                "PROVIDER_RATE_WAIT_S": "0"},
}


def run() -> list[Figure]:
    figs: list[Figure] = []
    for label, overrides in SETUPS.items():
        r = _one(label, overrides)
        goal = label == "adaptive"
        note = (f"{r['per_min']:.0f}/min vs R={RATE_PER_MIN}; {r['completed']} done, "
                f"{r['refused']} refused (429), {r['attempts']} attempts, {r['finished']}; "
                f"latency {LATENCY_S} s; {load_note()}")
        figs.append(figure(f"rate limit [{label}] achieved/R", float(r["ratio"]), "x",
                           goal=">= 0.9" if goal else "", note=note,
                           check=(lambda v: v >= 0.9) if goal else None))
        figs.append(figure(f"rate limit [{label}] tasks failed", float(r["failed"]), "tasks",
                           goal="0" if goal else "", check=(lambda v: v == 0) if goal else None))
    return figs


if __name__ == "__main__":
    run()

"""Where the makespan benchmark's time goes: its scenario (500 tasks, 1 s, C = 25), then the
task rows read before the database is dropped.

``python -m bench.makespan_waves [processes]`` prints the phases of a slot's cycle (the
model's answer to the image stored, stored to the completion's statement, that to the next
task's claim) and the tasks in waves of 25 by start time. Not part of ``python -m bench``:
a diagnosis, not a figure with a goal.
"""

from __future__ import annotations

import statistics
import sys
from datetime import datetime

from sqlalchemy import text

from bench.makespan import CONCURRENCY, LATENCY_S, N_TASKS, run_scenario


def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1000


def main(processes: int = 1) -> None:
    job, rows = run_scenario(processes, "makespan_waves", lambda conn: conn.execute(text(
        "SELECT started_at, finished_at, latency_ms FROM generation_tasks "
        "ORDER BY started_at")).all())
    ideal_s = N_TASKS * LATENCY_S / CONCURRENCY
    print(f"makespan {job.run_s:.2f} s, {float(job.run_s) / ideal_s:.3f} x ideal; first "
          f"claim {_ms(rows[0].started_at, job.created_at):.0f} ms after the submit")
    answered = [r.latency_ms - LATENCY_S * 1000 for r in rows]
    to_statement = [_ms(r.finished_at, r.started_at) - r.latency_ms for r in rows]
    starts, ends = [r.started_at for r in rows], sorted(r.finished_at for r in rows)
    to_next = [_ms(starts[k + CONCURRENCY], ends[k]) for k in range(len(rows) - CONCURRENCY)]
    for name, values in (("model answer -> stored", answered),
                         ("stored -> completion statement", to_statement),
                         ("completion -> next claim on the slot", to_next)):
        print(f"{name:38s} mean {statistics.mean(values):6.1f} ms, "
              f"p90 {sorted(values)[int(0.9 * len(values))]:6.1f}, max {max(values):6.1f}")
    t0 = rows[0].started_at
    for w in range(0, len(rows), CONCURRENCY):
        wave = rows[w:w + CONCURRENCY]
        print(f"wave {w // CONCURRENCY:2d}: claimed {_ms(wave[0].started_at, t0):8.1f}.."
              f"{_ms(wave[-1].started_at, t0):8.1f} ms, completed "
              f"{min(_ms(r.finished_at, t0) for r in wave):8.1f}.."
              f"{max(_ms(r.finished_at, t0) for r in wave):8.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

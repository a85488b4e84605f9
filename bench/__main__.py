"""``python -m bench``: every benchmark, one line per figure with its goal and PASS/MISS.

Options: ``--only NAME[,NAME]`` runs some (submit, makespan, overhead, rate, reads, cost,
recovery, pooler, batch_ingest, search, fairness);
``--write`` puts the figures into bench/RESULTS.md between its markers. Each benchmark
makes its own ``aiwi_bench_*`` database on DATABASE_URL's server (or the embedded one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Figure

BENCHMARKS = {
    "zip": "bench.zip_export",  # the images ZIP's peak memory (listed in --help)
    "submit": "bench.submit",
    "makespan": "bench.makespan",
    "overhead": "bench.queue_overhead",
    "rate": "bench.rate_limit",
    "reads": "bench.reads",
    "cost": "bench.cost",
    "recovery": "bench.recovery",
    "pooler": "bench.pooler",
    "batch_ingest": "bench.batch_ingest",
    "search": "bench.search",
    "fairness": "bench.fairness",
}
RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    one, five, _ = os.getloadavg()
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"load at the end {one:.1f} (1 min) / {five:.1f} (5 min)")


def write_results(figures: list[Figure], command: str, elapsed_s: float) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = "\n".join([
        BEGIN,
        f"Run {stamp}: `{command}` in {elapsed_s:.0f} s on {machine()}.",
        "",
        "```",
        *(f.line() for f in figures),
        "```",
        END,
    ])
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    RESULTS.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(BENCHMARKS))
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    figures: list[Figure] = []
    started = time.monotonic()
    for name in chosen:
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            figures += importlib.import_module(BENCHMARKS[name]).run()
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            figures.append(Figure(f"{name} benchmark", None, "", "runs", False,
                                  f"crashed: {type(exc).__name__}: {exc}"[:300]))
            print(figures[-1].line())
        print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
    elapsed = time.monotonic() - started
    missed = [f for f in figures if f.ok is False]
    print(f"== {len(figures)} figures in {elapsed:.0f} s; "
          f"{sum(f.ok is True for f in figures)} goals met, {len(missed)} missed")
    if args.write:
        write_results(figures, "python -m bench " + " ".join(sys.argv[1:] if argv is None
                                                            else argv), elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

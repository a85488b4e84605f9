"""Benchmark: job search at 1,000,000 tasks (1,000 jobs of 1,000 prompts), generated in
SQL. core.jobs.search.search_jobs (what the API's GET /api/admin/jobs?q= and the Jobs page call)
for a mix of words: a product code in one prompt, a noun in 1 of 250 prompts, an adjective
in 1 of 40, no match, plus tag and submitter filters; p50/p99 with the pg_trgm index, the
worst case of a word in every prompt, and a few of the same searches without the index.
"""

from __future__ import annotations

import random
import statistics
import time

from sqlalchemy import Engine, text

from bench.common import Figure, bench_database, figure, load_note, sync_engine
from bench.reads import _p, generate
from core.jobs import search

N_JOBS = 1000
PROMPTS_PER_JOB = 1000
N_TASKS = N_JOBS * PROMPTS_PER_JOB
SEARCHES = 400
UNINDEXED_SEARCHES = 10
ADJECTIVES = [f"adj{i:02d}x" for i in range(40)]
NOUNS = [f"noun{i:03d}y" for i in range(250)]

GENERATE = [
    "SET LOCAL synchronous_commit = off",
    f"""INSERT INTO generation_jobs (id, status, total_tasks, completed_tasks, style,
           count_per_prompt, provider, model, size, quality, created_at, finished_at,
           name, tags, submitted_by)
        SELECT md5(j::text)::uuid, 'completed', {PROMPTS_PER_JOB}, {PROMPTS_PER_JOB},
               'none', 1, 'demo', 'demo', '1024x1024', 'low',
               now() - make_interval(mins => j), now() - make_interval(mins => j),
               'batch ' || j, ARRAY['team' || (j % 10), 'season' || (j % 4)],
               'user' || (j % 7) || '@example.com'
          FROM generate_series(0, {N_JOBS - 1}) j""",
    f"""INSERT INTO generation_tasks (id, job_id, prompt_index, image_index, prompt, style,
           status, attempts, created_at, updated_at, finished_at)
        SELECT gen_random_uuid(), md5((g / {PROMPTS_PER_JOB})::text)::uuid,
               g % {PROMPTS_PER_JOB}, 0,
               'a ' || (ARRAY{ADJECTIVES!r})[1 + g % {len(ADJECTIVES)}] || ' '
                   || (ARRAY{NOUNS!r})[1 + (g / 7) % {len(NOUNS)}]
                   || ' on a wooden table, studio light, product code sku' || g,
               'none', 'succeeded', 1, now(), now(), now()
          FROM generate_series(0, {N_TASKS - 1}) g""",
]


def _queries(rng: random.Random) -> list[search.SearchQuery]:
    out: list[search.SearchQuery] = []
    for _ in range(SEARCHES):
        roll = rng.random()
        if roll < 0.3:
            out.append(search.SearchQuery.of(text=rng.choice(NOUNS)))
        elif roll < 0.5:
            out.append(search.SearchQuery.of(text=rng.choice(ADJECTIVES)))
        elif roll < 0.7:
            out.append(search.SearchQuery.of(text=f"sku{rng.randrange(N_TASKS)}"))
        elif roll < 0.8:
            out.append(search.SearchQuery.of(text="zebra unicorn"))
        elif roll < 0.9:
            out.append(search.SearchQuery.of(text=rng.choice(NOUNS),
                                             tag=f"team{rng.randrange(10)}"))
        else:
            out.append(search.SearchQuery.of(submitted_by=f"user{rng.randrange(7)}@example.com",
                                             tag=f"season{rng.randrange(4)}"))
    return out


def _time(engine: Engine, queries: list[search.SearchQuery]) -> list[float]:
    samples: list[float] = []
    for query in queries:
        started = time.perf_counter()
        search.search_jobs(query, limit=50, engine=engine)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def run() -> list[Figure]:
    with bench_database("search") as url:
        engine = sync_engine(url)
        try:
            if not search.prompt_index_present(engine):
                return [figure("search p99 at 1M tasks", None, "ms", goal="<= 500 ms",
                               note="pg_trgm is not installed on this server: install "
                                    "postgresql-contrib (the embedded server lacks it)")]
            gen_s = generate(engine, GENERATE)
            with engine.connect() as conn:
                size_mb = conn.execute(text(
                    "SELECT pg_relation_size('generation_tasks_prompt_trgm_idx')"
                )).scalar_one() / 1e6
            rng = random.Random(12)
            queries = _queries(rng)
            _time(engine, queries[:20])  # warm the pool, the cache and the plans
            samples = _time(engine, queries)
            everywhere = _time(engine, [search.SearchQuery.of(text="studio light")] * 20)
            with engine.begin() as conn:
                conn.execute(text("DROP INDEX generation_tasks_prompt_trgm_idx"))
            unindexed = _time(engine, queries[:UNINDEXED_SEARCHES])
        finally:
            engine.dispose()
    note = f"{SEARCHES} searches, {load_note()}"
    return [
        figure("search data set generated (1M tasks + trigram index)", gen_s, "s",
               note=f"index {size_mb:.0f} MB"),
        figure("search p50 at 1M tasks", statistics.median(samples), "ms", note=note),
        figure("search p99 at 1M tasks", _p(samples, 0.99), "ms", goal="<= 500 ms",
               check=lambda v: v <= 500, note=note),
        figure("search p99, a word in every prompt", _p(everywhere, 0.99), "ms",
               note="worst case: every task matches"),
        figure("search p50 without the trigram index", statistics.median(unindexed), "ms",
               note=f"{UNINDEXED_SEARCHES} searches, for comparison"),
    ]

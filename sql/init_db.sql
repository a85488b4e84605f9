-- AIWebImageService schema: the complete current schema, for a new database.
--
--     psql "$DATABASE_URL" -f sql/init_db.sql      (or: aiwebimage init-db)
--
-- An existing database is upgraded by `aiwebimage init-db` (core/db/migrate.py), which
-- applies the numbered files of sql/migrations/ it has not applied yet and records each in
-- schema_migrations. A schema change is therefore two edits: a new migration file, and the
-- same change here (tests/integration/test_migrations.py checks that a database upgraded
-- by the migrations and one made by this file have the same catalog). Running this file
-- again on its own database changes nothing (IF NOT EXISTS, OR REPLACE).
--
-- Columns are in the order deployed databases have them (a column added later comes after
-- the older ones), so `SELECT *` reads the same everywhere. Statuses are text with CHECK
-- constraints rather than enum types, so adding a status later is one ALTER TABLE.

-- Tables ------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS generation_jobs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status              text NOT NULL DEFAULT 'pending'
        CONSTRAINT generation_jobs_status_check CHECK (status IN
            ('pending', 'running', 'completed', 'completed_with_errors', 'failed', 'cancelled')),
    total_tasks         integer NOT NULL CHECK (total_tasks >= 0),
    completed_tasks     integer NOT NULL DEFAULT 0 CHECK (completed_tasks >= 0),
    failed_tasks        integer NOT NULL DEFAULT 0 CHECK (failed_tasks >= 0),
    cancelled_tasks     integer NOT NULL DEFAULT 0 CHECK (cancelled_tasks >= 0),
    style               text NOT NULL,
    count_per_prompt    integer NOT NULL CHECK (count_per_prompt >= 1),
    provider            text NOT NULL,
    model               text NOT NULL,
    size                text NOT NULL,
    quality             text NOT NULL,
    estimated_cost_usd  numeric(12, 4),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    -- A job is delivered in realtime (one images.generate call per task) or in batch mode
    -- (tasks grouped into OpenAI batches, core/batch/).
    mode                text NOT NULL DEFAULT 'realtime'
        CONSTRAINT generation_jobs_mode_check CHECK (mode IN ('realtime', 'batch')),
    -- Where the unfinished tasks of an expired / failed / cancelled batch go: a new batch or
    -- the realtime path (the operator's choice at submit).
    batch_fallback      text NOT NULL DEFAULT 'batch',
    -- Image options; NULL = the API's default.
    output_format       text,
    output_compression  integer,
    background          text,
    moderation          text,
    name                text,
    tags                text[] NOT NULL DEFAULT '{}',
    submitted_by        text,
    -- Per-job webhook (may hold a secret, as Slack's do); NULL = JOB_WEBHOOK_URL, if set.
    webhook_url         text,
    -- high | normal | low, changeable while the job runs: the dispatcher's claim (and the
    -- Cloud Tasks window refill) serves higher priority first and shares equally between
    -- jobs of one priority; a starved job gets its next delivery first (job_starved).
    priority            text NOT NULL DEFAULT 'normal'
        CONSTRAINT generation_jobs_priority_check CHECK (priority IN ('high', 'normal', 'low')),
    -- max_cost_usd: the job's spend cap (NULL: none). spent_usd / spent_tasks: what its
    -- succeeded tasks cost (billed where the usage is known, the estimate otherwise) as of
    -- the last spend check (core/billing/spend.py), over spent_tasks succeeded tasks;
    -- spend_unit_usd: the cost of one image (observed, or the estimate before any), with
    -- which the claim projects the spend of what it would start, so a capped job stops at
    -- its cap.
    max_cost_usd        numeric(12, 4),
    spent_usd           numeric(12, 4),
    spent_tasks         integer NOT NULL DEFAULT 0,
    spend_unit_usd      numeric(14, 8),
    CONSTRAINT generation_jobs_counters_check
        CHECK (completed_tasks + failed_tasks + cancelled_tasks <= total_tasks)
);

CREATE TABLE IF NOT EXISTS openai_batches (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id           uuid NOT NULL REFERENCES generation_jobs (id) ON DELETE CASCADE,
    -- Ours: preparing -> uploading -> uploaded -> creating -> submitted -> ingesting ->
    -- done. Each step is committed before the call that depends on it, so a process killed
    -- anywhere resumes from the row (see core/batch/runner.py).
    state            text NOT NULL DEFAULT 'preparing'
        CONSTRAINT openai_batches_state_check CHECK (state IN
            ('preparing', 'uploading', 'uploaded', 'creating', 'submitted', 'ingesting',
             'done')),
    -- OpenAI's: validating, in_progress, finalizing, completed, expired, failed,
    -- cancelling, cancelled.
    openai_status    text,
    task_count       integer NOT NULL CHECK (task_count >= 0),
    input_file_id    text,
    openai_batch_id  text UNIQUE,
    output_file_id   text,
    error_file_id    text,
    request_total    integer,
    request_completed integer,
    request_failed   integer,
    cancel_requested boolean NOT NULL DEFAULT false,
    polls            integer NOT NULL DEFAULT 0,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at     timestamptz,
    finished_at      timestamptz
);

-- Task status: pending -> queued -> running -> succeeded | failed | cancelled.
CREATE TABLE IF NOT EXISTS generation_tasks (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id               uuid NOT NULL REFERENCES generation_jobs (id) ON DELETE CASCADE,
    prompt_index         integer NOT NULL CHECK (prompt_index >= 0),
    image_index          integer NOT NULL DEFAULT 0 CHECK (image_index >= 0),
    prompt               text NOT NULL,
    style                text NOT NULL,
    status               text NOT NULL DEFAULT 'pending'
        CONSTRAINT generation_tasks_status_check CHECK (status IN
            ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts             integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Bumped on every hand-over to the queue after the first (retry-failed, sweeper), so
    -- Cloud Tasks names stay unique while a repeated enqueue of one generation is a no-op.
    dispatch_generation  integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    lease_until          timestamptz,
    last_error_code      text,
    last_error           text,
    image_path           text,
    thumbnail_path       text,
    latency_ms           integer,
    input_tokens         integer,
    output_tokens        integer,
    cloud_task_name      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    -- lease_owner / lease_boot: who holds the lease (WORKER_ID and the process's boot id);
    -- on a queued row they are the local dispatcher's hold while its delivery is in flight.
    lease_owner          text,
    lease_boot           uuid,
    -- Drawn by each claim; complete, fail, release and renew must present it, so a
    -- delivery that outlived its lease (even across retry-failed) changes nothing.
    claim_token          uuid,
    -- How often a holder stopped during the task (its lease taken over, or freed by its
    -- owner's next boot); the worker_crashed message cites it.
    crashes              integer NOT NULL DEFAULT 0,
    -- Attempts that do not count against MAX_ATTEMPTS (rate limits within
    -- RATE_LIMIT_BUDGET_S, a graceful stop); rate_limited_since starts the current streak.
    free_attempts        integer NOT NULL DEFAULT 0,
    rate_limited_since   timestamptz,
    -- A retry in Cloud Tasks mode is a new named Cloud Task
    -- (core/dispatch/cloudtasks/handover.py): handover_generation is the generation being
    -- handed over (set before CreateTask, cleared once the row records it), so the sweeper
    -- finishes a hand-over a crash cut short.
    handover_generation  integer,
    handover_marked_at   timestamptz,
    -- Deliveries that never reached the task handler (404, refused connection, TLS error,
    -- 401/403 from mismatched auth); at UNDELIVERABLE_MAX_TRIES the task fails as
    -- `undeliverable` (core/dispatch/undeliverable.py).
    undeliverable_tries  integer NOT NULL DEFAULT 0,
    -- Batch mode: the batch the task waits in ('running' with no lease: nothing claims it);
    -- what the Batch API returns finishes it.
    batch_id             uuid REFERENCES openai_batches (id) ON DELETE SET NULL,
    -- How the task's image was billed: 'batch' (half price) when it came from a batch
    -- output file, NULL for a realtime call.
    billed_mode          text,
    -- input_tokens holds all input tokens; this many of them were image tokens (edits).
    input_image_tokens   integer,
    -- An edited refused prompt runs as a new task of its job; this names the task it
    -- replaces (unique, so a double click on "resubmit" adds one task, not two).
    resubmitted_from     uuid,
    CONSTRAINT generation_tasks_position_key UNIQUE (job_id, prompt_index, image_index)
);

-- One row per queue: whether the operator paused it. The local dispatcher reads it before
-- each claim; in Cloud Tasks mode it mirrors the queue's state for the dashboard.
CREATE TABLE IF NOT EXISTS queue_state (
    queue_name  text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per cause of undeliverable deliveries: what /healthz, /metrics and the
-- dashboard banner show.
CREATE TABLE IF NOT EXISTS delivery_problems (
    cause        text PRIMARY KEY,
    url          text NOT NULL,
    detail       text NOT NULL,
    occurrences  integer NOT NULL DEFAULT 0,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now()
);

-- Webhook outbox: one row per job end, written by the trigger generation_jobs_notify_end
-- in the transaction that ends the job; core/jobs/notify.py's sender loop posts it later,
-- so a slow or failing receiver never holds up a delivery.
CREATE TABLE IF NOT EXISTS job_notifications (
    id               bigserial PRIMARY KEY,
    job_id           uuid NOT NULL REFERENCES generation_jobs (id) ON DELETE CASCADE,
    job_status       text NOT NULL,
    ended_at         timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
        CONSTRAINT job_notifications_status_check
        CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    CONSTRAINT job_notifications_once_key UNIQUE (job_id, ended_at)
);

-- Who did what to which job (deletes, retention, clones, resubmits). No foreign key:
-- the row outlives a deleted job.
CREATE TABLE IF NOT EXISTS audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    action   text NOT NULL,
    job_id   uuid,
    detail   jsonb NOT NULL DEFAULT '{}'
);

-- Budgets reached (BUDGET_DAILY_USD: scope 'daily'; BUDGET_DAILY_USD_BY_KEY: 'key:<name>'),
-- written by the spend check: while a row says held, the claim starts nothing it covers.
CREATE TABLE IF NOT EXISTS spend_holds (
    scope       text PRIMARY KEY,
    held        boolean NOT NULL DEFAULT false,
    spent_usd   numeric(12, 4) NOT NULL DEFAULT 0,
    limit_usd   numeric(12, 4),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Indexes -----------------------------------------------------------------------------

CREATE INDEX IF NOT EXISTS generation_jobs_status_created_idx
    ON generation_jobs (status, created_at DESC);
CREATE INDEX IF NOT EXISTS generation_jobs_created_idx
    ON generation_jobs (created_at DESC);
CREATE INDEX IF NOT EXISTS generation_jobs_tags_idx ON generation_jobs USING gin (tags);
CREATE INDEX IF NOT EXISTS generation_jobs_submitted_by_idx
    ON generation_jobs (submitted_by, created_at DESC);

CREATE INDEX IF NOT EXISTS generation_tasks_job_status_idx
    ON generation_tasks (job_id, status);
-- The local dispatcher and the sweeper only look at unfinished tasks: a partial index keeps
-- that scan small when millions of finished rows sit beside them.
CREATE INDEX IF NOT EXISTS generation_tasks_due_idx
    ON generation_tasks (status, next_attempt_at)
    WHERE status IN ('pending', 'queued', 'running');
CREATE INDEX IF NOT EXISTS generation_tasks_finished_idx
    ON generation_tasks (job_id, finished_at)
    WHERE finished_at IS NOT NULL;
-- A restarting process finds its previous boot's rows without scanning the table.
CREATE INDEX IF NOT EXISTS generation_tasks_lease_owner_idx
    ON generation_tasks (lease_owner)
    WHERE status IN ('queued', 'running') AND lease_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS generation_tasks_handover_idx
    ON generation_tasks (handover_marked_at)
    WHERE handover_generation IS NOT NULL;
-- Running rows by lease end: the worker's frequent expired-lease check reads only this.
CREATE INDEX IF NOT EXISTS generation_tasks_running_lease_idx
    ON generation_tasks (lease_until)
    WHERE status = 'running';
CREATE INDEX IF NOT EXISTS generation_tasks_batch_idx ON generation_tasks (batch_id)
    WHERE batch_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS generation_tasks_resubmitted_from_key
    ON generation_tasks (resubmitted_from) WHERE resubmitted_from IS NOT NULL;
-- Deliveries in flight per job (a lease or a dispatcher's hold): the fair-share count.
CREATE INDEX IF NOT EXISTS generation_tasks_in_flight_idx
    ON generation_tasks (job_id, status)
    WHERE lease_until IS NOT NULL;
-- A job's first due tasks (the fair-share claim and the window refill read a few per job).
CREATE INDEX IF NOT EXISTS generation_tasks_job_due_idx
    ON generation_tasks (job_id, status, next_attempt_at)
    WHERE status IN ('pending', 'queued');

CREATE INDEX IF NOT EXISTS openai_batches_job_idx ON openai_batches (job_id, created_at);
CREATE INDEX IF NOT EXISTS openai_batches_open_idx ON openai_batches (state)
    WHERE state <> 'done';

CREATE INDEX IF NOT EXISTS job_notifications_due_idx
    ON job_notifications (next_attempt_at) WHERE status = 'pending';

CREATE INDEX IF NOT EXISTS audit_log_job_idx ON audit_log (job_id, at DESC);

-- Prompt search (core/jobs/search.py): a trigram GIN index answers substring ILIKE
-- searches from the index. pg_trgm is a contrib extension; a server without it (the
-- embedded demo server) keeps working and core/jobs/search.py says searches scan every
-- task there.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        -- One row per prompt (image 0): the other images of a prompt repeat its text.
        CREATE INDEX IF NOT EXISTS generation_tasks_prompt_trgm_idx
            ON generation_tasks USING gin (prompt gin_trgm_ops) WHERE image_index = 0;
        CREATE INDEX IF NOT EXISTS generation_jobs_name_trgm_idx
            ON generation_jobs USING gin (name gin_trgm_ops);
    ELSE
        RAISE NOTICE 'pg_trgm is not available: prompt search will scan every task';
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_trgm could not be created (no privilege): prompt search will scan';
END
$$;

-- Functions ---------------------------------------------------------------------------

-- The claims' anti-starvation test (core/dispatch/fair.py), one spelling for
-- dispatch_claim_due and window_pick: a job with nothing in flight whose last delivery
-- finished (or which was submitted, if none has) starvation_s ago or more. The last
-- finish is read (generation_tasks_finished_idx) only when nothing is in flight.
CREATE OR REPLACE FUNCTION job_starved(job uuid, submitted timestamptz, in_flight bigint,
                                       starvation_s double precision) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN in_flight > 0 THEN false
                ELSE COALESCE((SELECT max(d.finished_at) FROM generation_tasks d
                                WHERE d.job_id = job AND d.finished_at IS NOT NULL),
                              submitted)
                     <= now() - make_interval(secs => starvation_s) END
$$;
-- A job's status and finished_at given its counters after a statement moved them:
-- core.status.job_status_after spelled once in SQL, for every statement that moves a
-- counter (tests/integration/test_status_sql.py checks the two agree). Cancelled is
-- sticky; finished_at is set once, when the counters reach the total.
-- Counters are bigint here so that any integer expression fits (int + a bigint parameter).
CREATE OR REPLACE FUNCTION job_status_after(current_status text, total bigint,
                                            completed bigint, failed bigint,
                                            cancelled bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN current_status = 'cancelled' THEN 'cancelled'
        WHEN completed + failed + cancelled < total THEN
            CASE WHEN current_status = 'pending' AND completed + failed + cancelled = 0
                 THEN 'pending' ELSE 'running' END
        WHEN failed = 0 AND cancelled = 0 THEN 'completed'
        WHEN completed = 0 THEN 'failed'
        ELSE 'completed_with_errors' END
$$;
CREATE OR REPLACE FUNCTION job_finished_at_after(current_status text, finished_at timestamptz,
                                                 total bigint, completed bigint,
                                                 failed bigint, cancelled bigint)
    RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN current_status NOT IN ('completed', 'completed_with_errors', 'failed', 'cancelled')
             AND completed + failed + cancelled >= total THEN now()
        ELSE finished_at END
$$;

-- A job's counters after `succeeded` and `failed` of its tasks ended, its status and
-- finished_at following in the same UPDATE (job_status_after, job_finished_at_after: the
-- rule of core/status.py, checked by tests/integration/test_status_sql.py). Returns the
-- job's id, status and counters after the move; no row if the job is gone. Called by
-- core/delivery/tasks.sql, core/batch/batch.sql and core/dispatch/undeliverable.sql; a
-- statement that ends tasks of several jobs calls it once per job, in job id order, so
-- two statements lock the job rows they share in the same order. PL/pgSQL: its UPDATE is
-- planned once per connection, not at every call.
CREATE OR REPLACE FUNCTION job_tasks_ended(job uuid, succeeded integer, failed integer)
    RETURNS TABLE (id uuid, status text, total_tasks integer, completed_tasks integer,
                   failed_tasks integer, cancelled_tasks integer)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    UPDATE generation_jobs j
       SET completed_tasks = j.completed_tasks + succeeded,
           failed_tasks = j.failed_tasks + failed,
           status = job_status_after(j.status, j.total_tasks, j.completed_tasks + succeeded,
                                     j.failed_tasks + failed, j.cancelled_tasks),
           finished_at = job_finished_at_after(j.status, j.finished_at, j.total_tasks,
                                               j.completed_tasks + succeeded,
                                               j.failed_tasks + failed, j.cancelled_tasks),
           updated_at = now()
     WHERE j.id = job
    RETURNING j.id, j.status, j.total_tasks, j.completed_tasks, j.failed_tasks,
              j.cancelled_tasks;
END
$$;

CREATE OR REPLACE FUNCTION generation_jobs_notify_end() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_notifications (job_id, job_status, ended_at)
    VALUES (NEW.id, NEW.status, COALESCE(NEW.finished_at, now()))
    ON CONFLICT (job_id, ended_at) DO NOTHING;
    RETURN NULL;
END
$$;

-- A job as every reading of it sees it: the columns of core.jobs.views.JobView, in its
-- order (job_by_id, list_jobs, the searches).
CREATE OR REPLACE VIEW job_views AS
SELECT id, status, total_tasks, completed_tasks, failed_tasks, cancelled_tasks, style,
       count_per_prompt, provider, model, size, quality, estimated_cost_usd,
       created_at, updated_at, started_at, finished_at,
       mode, batch_fallback, output_format, output_compression, background, moderation,
       name, tags, submitted_by, priority, max_cost_usd, spent_usd
  FROM generation_jobs;

-- A job's standing in the order of work (rule: core/dispatch/fair.py): its priority's rank,
-- the tasks it has left, and its spend projected from the last check (spent_usd, plus one
-- image at spend_unit_usd per task succeeded since). Read by both claims (the local
-- dispatcher's and the Cloud Tasks window's) and by jobs_at_cap.
CREATE OR REPLACE VIEW job_shares AS
SELECT id, status, created_at, submitted_by, max_cost_usd,
       CASE priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END AS priority_rank,
       total_tasks - completed_tasks - failed_tasks - cancelled_tasks AS tasks_left,
       COALESCE(spent_usd, 0)
           + GREATEST(completed_tasks - spent_tasks, 0) * COALESCE(spend_unit_usd, 0)
           AS spent_usd,
       COALESCE(spend_unit_usd, 0) AS unit_usd
  FROM generation_jobs;

-- A task's status after an undeliverable try (core.dispatch.undeliverable): failed once
-- its tries reach the limit, as it was before that.
CREATE OR REPLACE FUNCTION undeliverable_status(status text, tries integer, max_tries integer)
    RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN tries >= max_tries THEN 'failed' ELSE status END
$$;

-- The jobs of tasks that just failed, one job id per failed task (any order): each job's
-- counters move once by its number (job_tasks_ended), in job id order, so two statements
-- lock the job rows they share in the same order. Returns each job's id and new status.
CREATE OR REPLACE FUNCTION jobs_tasks_failed(job_ids uuid[])
    RETURNS TABLE (id uuid, status text)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH failed AS MATERIALIZED (
        SELECT f.job_id, count(*)::int AS n FROM unnest(job_ids) AS f(job_id)
         GROUP BY f.job_id ORDER BY f.job_id
    )
    SELECT job.id, job.status
      FROM failed CROSS JOIN LATERAL job_tasks_ended(failed.job_id, 0, failed.n) job;
END
$$;
-- Whether a job passes the job list's filters (core.jobs.search); a NULL filter passes
-- everything. Plain SQL, so the planner inlines it into the searches' WHERE: the indexes on
-- status, created_at, tags and submitted_by serve it as if it were written there.
CREATE OR REPLACE FUNCTION job_listed(status text, created_at timestamptz, tags text[],
                                      submitted_by text, statuses text[],
                                      created_after timestamptz, created_before timestamptz,
                                      tag text, by_submitter text)
    RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT (statuses IS NULL OR status = ANY(statuses))
       AND (created_after IS NULL OR created_at >= created_after)
       AND (created_before IS NULL OR created_at < created_before)
       AND (tag IS NULL OR tags @> ARRAY[tag])
       AND (by_submitter IS NULL OR submitted_by = by_submitter)
$$;

-- Triggers ----------------------------------------------------------------------------

-- Fires only on the update that moves a job into a final state (once per ending).
CREATE OR REPLACE TRIGGER generation_jobs_notify_end
    AFTER UPDATE OF status ON generation_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('completed', 'completed_with_errors', 'failed', 'cancelled'))
    EXECUTE FUNCTION generation_jobs_notify_end();

-- Versions ----------------------------------------------------------------------------

-- The versions this file holds: 1-9 (before migrations were files; there is no 6) and
-- every file of sql/migrations/. Recorded on a new database only. A database at an older
-- version is upgraded by `aiwebimage init-db` (its migrations), never by this file: on
-- one, this block stops with that advice instead of recording versions it lacks.
DO $$
DECLARE
    versions constant integer[] := ARRAY[1, 2, 3, 4, 5, 7, 8, 9, 10, 11];
    found integer;
BEGIN
    SELECT max(version) INTO found FROM schema_migrations;
    IF found IS NULL THEN
        INSERT INTO schema_migrations (version) SELECT unnest(versions);
    ELSIF found < versions[cardinality(versions)] THEN
        RAISE EXCEPTION 'this database is at schema version %, sql/init_db.sql is version %',
            found, versions[cardinality(versions)]
            USING HINT = 'upgrade it with `aiwebimage init-db` (python -m cli init-db), '
                         'which applies sql/migrations/';
    END IF;
END
$$;

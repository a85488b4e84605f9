-- AIWebImageService schema. Idempotent: `psql "$DATABASE_URL" -f sql/init_db.sql` may run
-- any number of times. Statuses are text with CHECK constraints rather than enum types, so
-- adding a status later is one ALTER TABLE, not an enum migration.

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
    CONSTRAINT generation_jobs_counters_check
        CHECK (completed_tasks + failed_tasks + cancelled_tasks <= total_tasks)
);

CREATE INDEX IF NOT EXISTS generation_jobs_status_created_idx
    ON generation_jobs (status, created_at DESC);
CREATE INDEX IF NOT EXISTS generation_jobs_created_idx
    ON generation_jobs (created_at DESC);

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
    CONSTRAINT generation_tasks_position_key UNIQUE (job_id, prompt_index, image_index)
);

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

-- One row per queue: whether the operator paused it. The local dispatcher reads it before
-- each claim; in Cloud Tasks mode it mirrors the queue's state for the dashboard.
CREATE TABLE IF NOT EXISTS queue_state (
    queue_name  text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO schema_migrations (version) VALUES (1) ON CONFLICT (version) DO NOTHING;

-- version 7: who submitted a job, its name and tags, search, webhook outbox, audit
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS tags text[] NOT NULL DEFAULT '{}';
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS submitted_by text;
-- Per-job webhook (may hold a secret, as Slack's do); NULL = JOB_WEBHOOK_URL, if set.
ALTER TABLE generation_jobs ADD COLUMN IF NOT EXISTS webhook_url text;
-- An edited refused prompt runs as a new task of its job; this names the task it replaces.
-- Unique, so a double click on "resubmit" adds one task, not two.
ALTER TABLE generation_tasks ADD COLUMN IF NOT EXISTS resubmitted_from uuid;
CREATE UNIQUE INDEX IF NOT EXISTS generation_tasks_resubmitted_from_key
    ON generation_tasks (resubmitted_from) WHERE resubmitted_from IS NOT NULL;
CREATE INDEX IF NOT EXISTS generation_jobs_tags_idx ON generation_jobs USING gin (tags);
CREATE INDEX IF NOT EXISTS generation_jobs_submitted_by_idx
    ON generation_jobs (submitted_by, created_at DESC);
-- Prompt search (core.search): a trigram GIN index answers substring ILIKE searches from the index.
-- pg_trgm is a contrib extension; a server without it (the embedded demo server) keeps
-- working and core.search says searches scan every task there.
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

-- Webhook outbox: one row per job end, written by the trigger below in the transaction
-- that ends the job; core.notify's sender loop posts it later, so a slow or failing
-- receiver never holds up a delivery.
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
CREATE INDEX IF NOT EXISTS job_notifications_due_idx
    ON job_notifications (next_attempt_at) WHERE status = 'pending';

CREATE OR REPLACE FUNCTION generation_jobs_notify_end() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_notifications (job_id, job_status, ended_at)
    VALUES (NEW.id, NEW.status, COALESCE(NEW.finished_at, now()))
    ON CONFLICT (job_id, ended_at) DO NOTHING;
    RETURN NULL;
END
$$;
-- Fires only on the update that moves a job into a final state (once per ending).
CREATE OR REPLACE TRIGGER generation_jobs_notify_end
    AFTER UPDATE OF status ON generation_jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('completed', 'completed_with_errors', 'failed', 'cancelled'))
    EXECUTE FUNCTION generation_jobs_notify_end();

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
CREATE INDEX IF NOT EXISTS audit_log_job_idx ON audit_log (job_id, at DESC);

INSERT INTO schema_migrations (version) VALUES (7) ON CONFLICT (version) DO NOTHING;

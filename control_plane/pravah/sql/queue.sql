-- The job queue's SQL, one named block per statement (procrastinate's layout).
-- Blocks start with "-- name: <name>"; the following comment lines document
-- them. Parameters are SQLAlchemy-style ":name" binds.

-- name: claim_job_postgresql
-- Claim the oldest pending job in ONE statement. The subquery locks the row
-- it picks (FOR UPDATE) and skips rows other workers hold (SKIP LOCKED), so
-- concurrent workers never claim the same job and never wait for each other.
-- The outer status check repeats the condition for the row as updated.
UPDATE jobs
SET status = 'running',
    worker_id = :worker_id,
    attempts = attempts + 1,
    started_at = COALESCE(started_at, :now),
    heartbeat_at = :now,
    updated_at = :now
WHERE id = (
    SELECT id FROM jobs
    WHERE status = 'pending' AND NOT cancel_requested
    ORDER BY created_at, id
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
AND status = 'pending'
RETURNING id;

-- name: claim_job_sqlite
-- The same claim for SQLite. SQLite has one writer at a time, so the
-- statement is atomic by itself and needs no row locks.
UPDATE jobs
SET status = 'running',
    worker_id = :worker_id,
    attempts = attempts + 1,
    started_at = COALESCE(started_at, :now),
    heartbeat_at = :now,
    updated_at = :now
WHERE id = (
    SELECT id FROM jobs
    WHERE status = 'pending' AND NOT cancel_requested
    ORDER BY created_at, id
    LIMIT 1
)
AND status = 'pending'
RETURNING id;

-- name: notify_jobs
-- Wake listening workers after an enqueue (PostgreSQL only).
NOTIFY pravah_jobs;

-- name: heartbeat
-- Renew the lease of every job this worker runs.
UPDATE jobs
SET heartbeat_at = :now
WHERE worker_id = :worker_id AND status = 'running';

-- name: requeue_stale_jobs
-- Jobs whose worker stopped renewing its lease (crash, lost host) go back
-- to pending, while they have attempts left.
UPDATE jobs
SET status = 'pending', worker_id = NULL, updated_at = :now
WHERE status = 'running' AND heartbeat_at < :stale_before AND attempts < :max_attempts
RETURNING id;

-- name: fail_stale_jobs
-- Stale jobs that used up their attempts fail with a reason.
UPDATE jobs
SET status = 'failed',
    error = 'the job was interrupted ' || attempts || ' times (its worker stopped responding); giving up',
    finished_at = :now,
    updated_at = :now
WHERE status = 'running' AND heartbeat_at < :stale_before AND attempts >= :max_attempts
RETURNING id;

-- The job queue's SQL, one named block per statement (procrastinate's layout).
-- Blocks start with "-- name: <name>"; the following comment lines document
-- them. Parameters are SQLAlchemy-style ":name" binds.

-- name: claim_job_postgresql
-- Claim the best pending job and record the claim, in ONE statement. The
-- subquery picks the highest priority, then the oldest, among jobs that are
-- due (run_after: the backoff of a failed attempt), locks it (FOR UPDATE)
-- and skips rows other workers hold (SKIP LOCKED), so concurrent workers
-- never claim the same job and never wait for each other. The outer status
-- check repeats the condition for the row as updated. The claim history row
-- is written by the same statement (a data-modifying CTE), so a claim never
-- exists without its history.
WITH claimed AS (
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
          AND (run_after IS NULL OR run_after <= :now)
        ORDER BY priority DESC, created_at, id
        FOR UPDATE SKIP LOCKED
        LIMIT 1
    )
    AND status = 'pending'
    RETURNING id, attempts
), history AS (
    INSERT INTO job_claims (job_id, worker_id, attempt, claimed_at)
    SELECT id, :worker_id, attempts, :now FROM claimed
)
SELECT id, attempts FROM claimed;

-- name: claim_job_sqlite
-- The same claim for SQLite. SQLite has one writer at a time, so the
-- statement is atomic by itself and needs no row locks; the history row is
-- written by record_claim in the same transaction.
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
      AND (run_after IS NULL OR run_after <= :now)
    ORDER BY priority DESC, created_at, id
    LIMIT 1
)
AND status = 'pending'
RETURNING id, attempts;

-- name: record_claim
-- The claim history row of a SQLite claim (same transaction as the claim).
INSERT INTO job_claims (job_id, worker_id, attempt, claimed_at)
VALUES (:job_id, :worker_id, :attempt, :now);

-- name: release_claim
-- Close the open claim of a job by this worker: it finished, gave the job
-- back, or lost its lease.
UPDATE job_claims
SET released_at = :now, outcome = :outcome
WHERE job_id = :job_id AND worker_id = :worker_id AND released_at IS NULL;

-- name: notify_jobs
-- Wake listening workers after an enqueue (PostgreSQL only).
NOTIFY pravah_jobs;

-- name: heartbeat
-- Renew the lease of every job this worker runs.
UPDATE jobs
SET heartbeat_at = :now
WHERE worker_id = :worker_id AND status = 'running';

-- name: heartbeat_jobs
-- Renew the leases of the jobs this worker runs right now (and only those).
UPDATE jobs
SET heartbeat_at = :now
WHERE worker_id = :worker_id AND status = 'running' AND id IN :job_ids;

-- name: give_back
-- A worker returns a job it cannot finish (its run broke) to the queue.
UPDATE jobs
SET status = 'pending', worker_id = NULL, updated_at = :now
WHERE id = :job_id AND worker_id = :worker_id AND status = 'running';

-- name: requeue_stale_jobs
-- Jobs whose worker stopped renewing its lease (crash, lost host) go back
-- to pending, while they have attempts left (the job's own maximum, else
-- the instance's). The attempt was counted when the job was claimed.
UPDATE jobs
SET status = 'pending', worker_id = NULL, updated_at = :now
WHERE status = 'running' AND heartbeat_at < :stale_before
  AND attempts < COALESCE(max_attempts, :max_attempts)
RETURNING id;

-- name: fail_stale_jobs
-- Stale jobs that used up their attempts fail with a reason.
UPDATE jobs
SET status = 'failed',
    error = 'the job was interrupted ' || attempts || ' times (its worker stopped responding); giving up',
    finished_at = :now,
    updated_at = :now
WHERE status = 'running' AND heartbeat_at < :stale_before
  AND attempts >= COALESCE(max_attempts, :max_attempts)
RETURNING id;

-- name: expire_claims
-- Close the claims of jobs taken back from a stale worker.
UPDATE job_claims
SET released_at = :now, outcome = 'lease_expired'
WHERE job_id = :job_id AND released_at IS NULL;

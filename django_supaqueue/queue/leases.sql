-- Workers and their leases: registration, heartbeats, expiry (run by leases.py).
-- A lease is a row of supaqueue_currentjob: (job_id, attempt, worker_id) is the
-- fence every outcome is written through.


-- name: register_worker
-- Register a worker process: its row, and its id for the leases it will hold.
INSERT INTO supaqueue_worker (name, host, pid, queues, concurrency, started_at, last_heartbeat_at)
VALUES (%(name)s, %(host)s, %(pid)s, %(queues)s::jsonb, %(concurrency)s, now(), now())
RETURNING id


-- name: register_worker_again
-- Register a worker again under its own id, after its row was removed.
-- A worker judged dead while it could not reach the database registers again
-- under its own id, so that the leases it holds or is about to write keep
-- pointing at it.
INSERT INTO supaqueue_worker (id, name, host, pid, queues, concurrency, started_at, last_heartbeat_at)
VALUES (%(worker_id)s, %(name)s, %(host)s, %(pid)s, %(queues)s::jsonb, %(concurrency)s, now(), now())
ON CONFLICT DO NOTHING


-- name: unregister_worker
-- Remove a worker's row, unless it still holds leases (recovery handles those).
DELETE FROM supaqueue_worker w WHERE w.id = %(worker_id)s
  AND NOT EXISTS (SELECT 1 FROM supaqueue_currentjob c WHERE c.worker_id = w.id)


-- name: heartbeat
-- Mark the worker alive and renew the leases of the attempts it runs; return those renewed.
-- Leases are renewed by worker id even when the worker's row is gone, so that a
-- worker can register again without a gap. Then the database's clock, read after
-- any lock wait: the worker's timers go by it (dbclock.py). Last, the renewed
-- attempts whose job was cancelled while they ran: a worker that does not LISTEN
-- (LISTEN False, or a lost notification) stops them at its next heartbeat.
WITH w AS (
  UPDATE supaqueue_worker SET last_heartbeat_at = now() WHERE id = %(worker_id)s RETURNING id
), renewed AS (
  UPDATE supaqueue_currentjob c SET lease_expires_at = now() + %(lease)s * interval '1 second'
  FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS h(job_id, attempt)
  WHERE c.worker_id = %(worker_id)s AND c.job_id = h.job_id AND c.attempt = h.attempt
  RETURNING c.job_id, c.attempt
)
SELECT (SELECT count(*) FROM w), (SELECT array_agg(job_id) FROM renewed),
       (SELECT array_agg(attempt) FROM renewed), extract(epoch FROM clock_timestamp())::float8,
       (SELECT array_agg(r.job_id) FROM renewed r JOIN supaqueue_job j ON j.id = r.job_id
        WHERE j.status = 'cancelled'),
       (SELECT array_agg(r.attempt) FROM renewed r JOIN supaqueue_job j ON j.id = r.job_id
        WHERE j.status = 'cancelled')


-- name: expire_leases
-- Let some of a worker's leases run out a given number of seconds from now (or sooner, as before).
UPDATE supaqueue_currentjob c SET lease_expires_at = LEAST(c.lease_expires_at, now() + %(after)s * interval '1 second')
FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS h(job_id, attempt)
WHERE c.worker_id = %(worker_id)s AND c.job_id = h.job_id AND c.attempt = h.attempt


-- name: forget_stale_workers
-- Remove the rows of workers silent for a given number of seconds that hold no lease.
DELETE FROM supaqueue_worker w
WHERE w.last_heartbeat_at < now() - %(stale)s * interval '1 second'
  AND NOT EXISTS (SELECT 1 FROM supaqueue_currentjob c WHERE c.worker_id = w.id)


-- name: note_blocked
-- Record in a running attempt's history that it blocked its worker's event loop.
-- Written only while the attempt still holds its lease: a late note of an attempt
-- that has ended, or was recovered, would say so of nothing that runs.
INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class, error_message, traceback)
SELECT c.job_id, 'blocked', c.attempt, %(worker_name)s, now(), %(seconds)s, '', %(message)s, %(stack)s
FROM supaqueue_currentjob c WHERE c.job_id = %(job_id)s AND c.attempt = %(attempt)s

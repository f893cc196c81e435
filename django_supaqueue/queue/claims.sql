-- The claim: how a worker takes jobs and leases them (run by claims.py).
--
-- A claim is up to four statements in one transaction, sent as one pipeline:
-- lock_capped_queues and claim_tenants (when a served queue has a cap or a rate
-- limit), claim_serial (when a served queue is serial or a pending job has a
-- group), then claim; the worker's round trip adds rate_wake, which says what the
-- next claim needs. The claim statements share their first CTE (q, the queues a
-- claim may take from), their room CTE and their tail (log rate-limited starts,
-- write the "started" events, return what the worker needs): tests/test_queue_sql.py
-- checks that the copies agree.
--
-- Rate limits: a claim counts the attempts its queue started in the last
-- rate_period (+ RATE_LIMIT_MARGIN, for the time between a claim and its request)
-- seconds of wall clock, from a log of start times (supaqueue_queuecall), and logs
-- the starts it makes. A sliding window: at no moment do more than rate_limit
-- starts fall within one window.
--
-- Limits per tenant (a queue's limit_scope 'tenant', with a cap or a rate limit):
-- the cap and the rate limit apply to each tenant's jobs apart, so that a tenant
-- with many jobs cannot take every slot. claim_tenants claims those queues' jobs;
-- claim_serial applies the same tenant rooms to the group heads it takes; claim
-- leaves those queues out. The queue's own room (free slots, the lock) still
-- bounds every tenant's.
--
-- Start, lease and "started" event times are the claim statement's own (statement_timestamp()), not
-- its transaction's: a claim that follows other statements in one transaction may
-- take a job that a commit made ready after that transaction began, and its start
-- must not read as earlier than the finish of the job it waited for.


-- name: lock_capped_queues
-- Lock the served queues that have a concurrency cap or a rate limit, before the claim.
-- Locked in their own statement, so that the claim statements that follow (a new
-- snapshot) count every running job committed by the previous holder of the lock:
-- two workers can never both see free room. NO KEY UPDATE serialises claimers
-- without blocking enqueues, whose foreign key check holds KEY SHARE on the same
-- row. A worker whose last claim saw no capped queue among those it serves leaves
-- this statement out (most deployments have none); such a claim gives capped queues
-- no room (the parameter locked is false), and its rate_wake reports them, so that the next
-- claim, at once, takes the locks and their jobs.
SELECT id FROM supaqueue_queue
WHERE (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AND NOT paused
  AND (%(queues)s::text[] IS NULL OR name = ANY(%(queues)s::text[]))
  AND (%(on_loop)s::bool IS NULL OR (http_url <> '' OR execution_mode = 'async') = %(on_loop)s::bool)
ORDER BY id FOR NO KEY UPDATE


-- name: claim_serial
-- Claim the heads of idle serial queues and serial groups; runs before claim.
-- A serial queue's jobs, and a serial group's jobs (across queues), run one at a
-- time, in claim order. The guarantee is the lease table's: its serial_queue and
-- serial_group columns each have a partial unique index, so two leases can never
-- hold the same queue or group.
-- Each idle queue or group offers its head (a job waiting for its retry stays the
-- head while its queue keeps head_of_line); the head is locked by id (skipped,
-- never replaced, when another transaction holds it); its lease is inserted ON
-- CONFLICT DO NOTHING (a concurrent claim of the same queue or group makes it wait,
-- then skip), and only the jobs whose lease went in are marked in progress. When
-- no served queue is serial and no pending job has a group, the one-time
-- serial_work test stops it after two index probes (min() reads one entry of the
-- group index).
-- room: the claim's limit, less what a concurrency cap or rate limit leaves. Jobs
-- claimed beyond a worker's idle slots (the parameter free) wait for one, so queues whose
-- limits count claims (a cap, a rate limit, serial order) only get idle slots: a
-- claim there must be followed by a start.
-- The final WHERE records, in a transaction-local setting, how many jobs this
-- statement took: claim_tenants and claim leave them out of their limit.
WITH q AS (
  SELECT id, name, concurrency_limit, timeout, execution_mode, rate_limit, serial, head_of_line,
         (rate_period + %(rate_margin)s) * interval '1 second' AS rate_window,
         limit_scope = 'tenant' AND (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AS per_tenant,
         CASE WHEN http_url <> '' THEN jsonb_build_object(
           'url', http_url, 'method', http_method, 'headers', http_headers, 'secret', http_secret,
           'secret_header', http_secret_header, 'retry_client_errors', http_retry_client_errors,
           'timeout', timeout, 'rate_limited', rate_limit IS NOT NULL) END AS http
  FROM supaqueue_queue
  WHERE NOT paused AND (%(queues)s::text[] IS NULL OR name = ANY(%(queues)s::text[]))
  AND (%(on_loop)s::bool IS NULL OR (http_url <> '' OR execution_mode = 'async') = %(on_loop)s::bool)
), serial_work AS (
  SELECT EXISTS (SELECT 1 FROM q WHERE q.serial) OR (
    SELECT min(g.serial_group) FROM supaqueue_job g
    WHERE g.status = 'pending' AND g.enabled AND g.serial_group IS NOT NULL) IS NOT NULL AS yes
), room AS (
  SELECT q.id, LEAST(
    CASE WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL AND NOT q.serial THEN %(limit)s::int
         WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL OR %(locked)s::bool THEN %(free)s::int
         ELSE 0 END,
    CASE WHEN q.concurrency_limit IS NULL OR q.per_tenant THEN %(limit)s::int ELSE GREATEST(0, q.concurrency_limit - (
      SELECT count(*) FROM supaqueue_job r WHERE r.queue_id = q.id AND r.status = 'in_progress')) END,
    CASE WHEN q.rate_limit IS NULL OR q.per_tenant THEN %(limit)s::int ELSE GREATEST(0, q.rate_limit - (
      SELECT count(*) FROM supaqueue_queuecall x
      WHERE x.queue_id = q.id AND x.at > clock_timestamp() - q.rate_window))
    END) AS n
  FROM q
  WHERE (SELECT yes FROM serial_work)
), queue_heads AS (
  SELECT h.id FROM q, LATERAL (
    SELECT u.id, u.run_at FROM (
      (SELECT 0 AS rank, j.id, j.run_at FROM supaqueue_job j
       WHERE q.head_of_line AND j.queue_id = q.id AND j.status = 'pending' AND j.enabled
         AND j.attempts > 0
       ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1)
      UNION ALL
      (SELECT 1, j.id, j.run_at FROM supaqueue_job j
       WHERE j.queue_id = q.id AND j.status = 'pending' AND j.enabled AND j.run_at <= now()
       ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1)
    ) u ORDER BY u.rank LIMIT 1
  ) h
  WHERE q.serial AND h.run_at <= now()
    AND NOT EXISTS (SELECT 1 FROM supaqueue_currentjob c WHERE c.serial_queue = q.id)
), group_heads AS (
  SELECT DISTINCT ON (j.serial_group) j.id, j.run_at
  FROM supaqueue_job j JOIN supaqueue_queue x ON x.id = j.queue_id
  WHERE (SELECT yes FROM serial_work)
    AND j.status = 'pending' AND j.enabled AND j.serial_group IS NOT NULL AND NOT x.paused
    AND (j.run_at <= now() OR (x.head_of_line AND j.attempts > 0))
  ORDER BY j.serial_group, (x.head_of_line AND j.attempts > 0) DESC, j.priority DESC, j.run_at, j.id
), heads AS (
  SELECT j.id, j.queue_id, j.priority, j.run_at, j.attempts, j.serial_group,
         CASE WHEN q.serial THEN q.id END AS serial_queue,
         CASE WHEN q.per_tenant THEN COALESCE(j.tenant_id, '') END AS tenant
  FROM (SELECT id FROM queue_heads UNION SELECT id FROM group_heads WHERE run_at <= now()) h
  JOIN supaqueue_job j ON j.id = h.id JOIN q ON q.id = j.queue_id
  WHERE j.status = 'pending' AND j.enabled AND j.run_at <= now()
    AND (NOT q.serial OR j.id IN (SELECT id FROM queue_heads))
    AND (j.serial_group IS NULL OR j.id IN (SELECT id FROM group_heads))
    AND NOT EXISTS (SELECT 1 FROM supaqueue_currentjob c WHERE c.serial_group = j.serial_group)
    AND (%(job_ids)s::bigint[] IS NULL OR j.id = ANY(%(job_ids)s::bigint[]))
  FOR UPDATE OF j SKIP LOCKED
), tenants AS (
  SELECT DISTINCT queue_id, tenant FROM heads WHERE tenant IS NOT NULL
), tenant_room AS (
  SELECT t.queue_id, t.tenant, LEAST(room.n,
    CASE WHEN q.concurrency_limit IS NULL THEN room.n ELSE GREATEST(0, q.concurrency_limit - (
      SELECT count(*) FROM supaqueue_job r WHERE r.queue_id = q.id AND r.status = 'in_progress'
        AND COALESCE(r.tenant_id, '') = t.tenant)) END,
    CASE WHEN q.rate_limit IS NULL THEN room.n ELSE GREATEST(0, q.rate_limit - (
      SELECT count(*) FROM supaqueue_queuecall x
      WHERE x.queue_id = q.id AND x.tenant_id = t.tenant AND x.at > clock_timestamp() - q.rate_window))
    END) AS n
  FROM tenants t JOIN q ON q.id = t.queue_id JOIN room ON room.id = q.id
), picked AS (
  SELECT h.* FROM (
    SELECT h.*, row_number() OVER (PARTITION BY h.queue_id, h.tenant ORDER BY h.priority DESC, h.run_at, h.id) AS rn
    FROM heads h
  ) h JOIN room ON room.id = h.queue_id
  LEFT JOIN tenant_room t ON t.queue_id = h.queue_id AND t.tenant = h.tenant
  WHERE h.rn <= COALESCE(t.n, room.n)
  ORDER BY h.priority DESC, h.run_at, h.id
  LIMIT %(free)s::int
), lease AS (
  INSERT INTO supaqueue_currentjob (job_id, worker_id, attempt, started_at, lease_expires_at, serial_queue,
                                    serial_group)
  SELECT id, %(worker_id)s, attempts + 1, statement_timestamp(),
         statement_timestamp() + %(lease)s * interval '1 second',
         serial_queue, serial_group
  FROM picked ORDER BY serial_queue, serial_group
  ON CONFLICT DO NOTHING
  RETURNING job_id
), claimed AS (
  UPDATE supaqueue_job j SET status = 'in_progress', attempts = j.attempts + 1, started_at = statement_timestamp()
  FROM lease WHERE j.id = lease.job_id
  RETURNING j.id, j.queue_id, j.task_name, j.payload, j.args, j.attempts, j.max_attempts,
            j.priority, j.run_at, j.http_path, j.http_method, j.trace_context, j.serial_group, j.tenant_id
), calls AS (
  INSERT INTO supaqueue_queuecall (queue_id, at, tenant_id)
  SELECT c.queue_id, clock_timestamp(), CASE WHEN q.per_tenant THEN COALESCE(c.tenant_id, '') ELSE '' END
  FROM claimed c JOIN q ON q.id = c.queue_id
  WHERE q.rate_limit IS NOT NULL
), started AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, 'started', attempts, %(worker_name)s, statement_timestamp(), '', '', '' FROM claimed
)
SELECT c.id, q.name, c.task_name, c.payload, c.args, c.attempts, c.max_attempts, q.timeout,
       q.concurrency_limit IS NOT NULL OR q.rate_limit IS NOT NULL OR q.serial OR c.serial_group IS NOT NULL,
       q.execution_mode,
       q.http || jsonb_build_object('path', c.http_path,
                                    'method', COALESCE(NULLIF(c.http_method, ''), q.http ->> 'method')),
       extract(epoch FROM statement_timestamp() - c.run_at)::float8, c.trace_context, c.serial_group
FROM claimed c JOIN q ON q.id = c.queue_id
WHERE set_config('supaqueue.claimed_before', (SELECT count(*) FROM claimed)::text, true) <> ''
ORDER BY c.priority DESC, c.run_at, c.id


-- name: claim_tenants
-- Claim runnable jobs of the queues whose limits are per tenant; runs between claim_serial and claim.
-- Each tenant with pending jobs gets the queue's cap and rate limit to itself
-- (tenant_room: the counts of room, filtered by tenant; jobs without a tenant are
-- one tenant, keyed ''). The recursive tenant_ids walks the distinct tenants of
-- each such queue through supaqueue_job_tenant_claim, one index probe per tenant;
-- each tenant's jobs are then taken in claim order within its room. Jobs without a
-- tenant are looked for among the queue's first 1000 runnable jobs: the index that
-- would find them anywhere would cost every enqueue of every queue. Sent only with
-- lock_capped_queues (such a queue has a cap or a rate limit, and without the lock
-- it has no room), and left out while rate_wake finds no such queue among those a
-- worker serves: claims of deployments without them never pay for it.
-- Takes what claim_serial left of the limit, and adds what it took to the setting
-- claim reads.
WITH RECURSIVE q AS (
  SELECT id, name, concurrency_limit, timeout, execution_mode, rate_limit, serial, head_of_line,
         (rate_period + %(rate_margin)s) * interval '1 second' AS rate_window,
         limit_scope = 'tenant' AND (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AS per_tenant,
         CASE WHEN http_url <> '' THEN jsonb_build_object(
           'url', http_url, 'method', http_method, 'headers', http_headers, 'secret', http_secret,
           'secret_header', http_secret_header, 'retry_client_errors', http_retry_client_errors,
           'timeout', timeout, 'rate_limited', rate_limit IS NOT NULL) END AS http
  FROM supaqueue_queue
  WHERE NOT paused AND (%(queues)s::text[] IS NULL OR name = ANY(%(queues)s::text[]))
  AND (%(on_loop)s::bool IS NULL OR (http_url <> '' OR execution_mode = 'async') = %(on_loop)s::bool)
), before AS (
  SELECT COALESCE(NULLIF(current_setting('supaqueue.claimed_before', true), '')::int, 0) AS n
), want AS (
  SELECT GREATEST(0, %(limit)s::int - (SELECT n FROM before)) AS n
), room AS (
  SELECT q.id, LEAST(
    CASE WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL AND NOT q.serial THEN %(limit)s::int
         WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL OR %(locked)s::bool THEN %(free)s::int
         ELSE 0 END,
    CASE WHEN q.concurrency_limit IS NULL OR q.per_tenant THEN %(limit)s::int ELSE GREATEST(0, q.concurrency_limit - (
      SELECT count(*) FROM supaqueue_job r WHERE r.queue_id = q.id AND r.status = 'in_progress')) END,
    CASE WHEN q.rate_limit IS NULL OR q.per_tenant THEN %(limit)s::int ELSE GREATEST(0, q.rate_limit - (
      SELECT count(*) FROM supaqueue_queuecall x
      WHERE x.queue_id = q.id AND x.at > clock_timestamp() - q.rate_window))
    END) AS n
  FROM q
  WHERE q.per_tenant AND NOT q.serial
), tenant_ids (queue_id, tenant) AS (
  SELECT q.id, (SELECT min(j.tenant_id) FROM supaqueue_job j
                WHERE j.queue_id = q.id AND j.status = 'pending' AND j.enabled AND j.tenant_id IS NOT NULL)
  FROM q WHERE q.per_tenant AND NOT q.serial
  UNION ALL
  SELECT t.queue_id, (SELECT min(j.tenant_id) FROM supaqueue_job j
                      WHERE j.queue_id = t.queue_id AND j.status = 'pending' AND j.enabled
                        AND j.tenant_id > t.tenant)
  FROM tenant_ids t WHERE t.tenant IS NOT NULL
), tenants AS (
  SELECT queue_id, tenant FROM tenant_ids WHERE tenant IS NOT NULL
  UNION ALL
  SELECT q.id, '' FROM q WHERE q.per_tenant AND NOT q.serial
), tenant_room AS (
  SELECT t.queue_id, t.tenant, LEAST(room.n,
    CASE WHEN q.concurrency_limit IS NULL THEN room.n ELSE GREATEST(0, q.concurrency_limit - (
      SELECT count(*) FROM supaqueue_job r WHERE r.queue_id = q.id AND r.status = 'in_progress'
        AND COALESCE(r.tenant_id, '') = t.tenant)) END,
    CASE WHEN q.rate_limit IS NULL THEN room.n ELSE GREATEST(0, q.rate_limit - (
      SELECT count(*) FROM supaqueue_queuecall x
      WHERE x.queue_id = q.id AND x.tenant_id = t.tenant AND x.at > clock_timestamp() - q.rate_window))
    END) AS n
  FROM tenants t JOIN q ON q.id = t.queue_id JOIN room ON room.id = q.id
), picked AS (
  SELECT c.id, c.priority, c.run_at FROM (
    SELECT c.id, c.priority, c.run_at FROM tenant_room, LATERAL (
      SELECT j.id, j.priority, j.run_at FROM supaqueue_job j
      WHERE j.queue_id = tenant_room.queue_id AND j.tenant_id = tenant_room.tenant
        AND j.status = 'pending' AND j.enabled AND j.run_at <= now() AND j.serial_group IS NULL
        AND (%(job_ids)s::bigint[] IS NULL OR j.id = ANY(%(job_ids)s::bigint[]))
      ORDER BY j.priority DESC, j.run_at, j.id
      LIMIT tenant_room.n
      FOR UPDATE SKIP LOCKED
    ) c
    WHERE tenant_room.tenant <> ''
    UNION ALL
    SELECT c.id, c.priority, c.run_at FROM tenant_room, LATERAL (
      SELECT j.id, j.priority, j.run_at FROM supaqueue_job j
      WHERE j.id = ANY (ARRAY(
          SELECT w.id FROM supaqueue_job w
          WHERE w.queue_id = tenant_room.queue_id AND w.status = 'pending' AND w.enabled AND w.run_at <= now()
          ORDER BY w.priority DESC, w.run_at, w.id
          LIMIT 1000))
        AND j.tenant_id IS NULL AND j.status = 'pending' AND j.enabled AND j.run_at <= now()
        AND j.serial_group IS NULL
        AND (%(job_ids)s::bigint[] IS NULL OR j.id = ANY(%(job_ids)s::bigint[]))
      ORDER BY j.priority DESC, j.run_at, j.id
      LIMIT tenant_room.n
      FOR UPDATE SKIP LOCKED
    ) c
    WHERE tenant_room.tenant = ''
  ) c
  ORDER BY c.priority DESC, c.run_at, c.id
  LIMIT %(limit)s::int
), claimed AS (
  UPDATE supaqueue_job j SET status = 'in_progress', attempts = j.attempts + 1, started_at = statement_timestamp()
  FROM (SELECT id FROM picked LIMIT (SELECT n FROM want)) p WHERE j.id = p.id
  RETURNING j.id, j.queue_id, j.task_name, j.payload, j.args, j.attempts, j.max_attempts,
            j.priority, j.run_at, j.http_path, j.http_method, j.trace_context, j.serial_group, j.tenant_id
), lease AS (
  INSERT INTO supaqueue_currentjob (job_id, worker_id, attempt, started_at, lease_expires_at)
  SELECT id, %(worker_id)s, attempts, statement_timestamp(),
         statement_timestamp() + %(lease)s * interval '1 second' FROM claimed
), calls AS (
  INSERT INTO supaqueue_queuecall (queue_id, at, tenant_id)
  SELECT c.queue_id, clock_timestamp(), CASE WHEN q.per_tenant THEN COALESCE(c.tenant_id, '') ELSE '' END
  FROM claimed c JOIN q ON q.id = c.queue_id
  WHERE q.rate_limit IS NOT NULL
), started AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, 'started', attempts, %(worker_name)s, statement_timestamp(), '', '', '' FROM claimed
)
SELECT c.id, q.name, c.task_name, c.payload, c.args, c.attempts, c.max_attempts, q.timeout,
       q.concurrency_limit IS NOT NULL OR q.rate_limit IS NOT NULL OR q.serial OR c.serial_group IS NOT NULL,
       q.execution_mode,
       q.http || jsonb_build_object('path', c.http_path,
                                    'method', COALESCE(NULLIF(c.http_method, ''), q.http ->> 'method')),
       extract(epoch FROM statement_timestamp() - c.run_at)::float8, c.trace_context, c.serial_group
FROM claimed c JOIN q ON q.id = c.queue_id
WHERE set_config('supaqueue.claimed_before', ((SELECT n FROM before) + (SELECT count(*) FROM claimed))::text, true) <> ''
ORDER BY c.priority DESC, c.run_at, c.id


-- name: claim
-- Claim runnable jobs of every other queue, and lease them; runs after claim_serial and claim_tenants.
-- Runnable jobs of each queue through the claim index, within each queue's room
-- (see claim_serial), SKIP LOCKED. It runs after claim_serial and claim_tenants in
-- the same transaction and takes what is left of the limit, read from the setting
-- they wrote (no setting: neither ran or took a job; a setting outlives its
-- transaction as ''). The cut comes last, so that the planner sizes every step by
-- the constant limit.
WITH q AS (
  SELECT id, name, concurrency_limit, timeout, execution_mode, rate_limit, serial, head_of_line,
         (rate_period + %(rate_margin)s) * interval '1 second' AS rate_window,
         limit_scope = 'tenant' AND (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AS per_tenant,
         CASE WHEN http_url <> '' THEN jsonb_build_object(
           'url', http_url, 'method', http_method, 'headers', http_headers, 'secret', http_secret,
           'secret_header', http_secret_header, 'retry_client_errors', http_retry_client_errors,
           'timeout', timeout, 'rate_limited', rate_limit IS NOT NULL) END AS http
  FROM supaqueue_queue
  WHERE NOT paused AND (%(queues)s::text[] IS NULL OR name = ANY(%(queues)s::text[]))
  AND (%(on_loop)s::bool IS NULL OR (http_url <> '' OR execution_mode = 'async') = %(on_loop)s::bool)
), want AS (
  SELECT GREATEST(0, %(limit)s::int
    - COALESCE(NULLIF(current_setting('supaqueue.claimed_before', true), '')::int, 0)) AS n
), room AS (
  SELECT q.id, LEAST(
    CASE WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL AND NOT q.serial THEN %(limit)s::int
         WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL OR %(locked)s::bool THEN %(free)s::int
         ELSE 0 END,
    CASE WHEN q.concurrency_limit IS NULL OR q.per_tenant THEN %(limit)s::int ELSE GREATEST(0, q.concurrency_limit - (
      SELECT count(*) FROM supaqueue_job r WHERE r.queue_id = q.id AND r.status = 'in_progress')) END,
    CASE WHEN q.rate_limit IS NULL OR q.per_tenant THEN %(limit)s::int ELSE GREATEST(0, q.rate_limit - (
      SELECT count(*) FROM supaqueue_queuecall x
      WHERE x.queue_id = q.id AND x.at > clock_timestamp() - q.rate_window))
    END) AS n
  FROM q
  WHERE NOT q.serial AND NOT q.per_tenant
), picked AS (
  SELECT c.id FROM room, LATERAL (
    SELECT j.id, j.priority, j.run_at FROM supaqueue_job j
    WHERE j.queue_id = room.id AND j.status = 'pending' AND j.enabled AND j.run_at <= now()
      AND j.serial_group IS NULL
      AND (%(job_ids)s::bigint[] IS NULL OR j.id = ANY(%(job_ids)s::bigint[]))
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT room.n
    FOR UPDATE SKIP LOCKED
  ) c
  ORDER BY c.priority DESC, c.run_at, c.id
  LIMIT %(limit)s::int
), claimed AS (
  UPDATE supaqueue_job j SET status = 'in_progress', attempts = j.attempts + 1, started_at = statement_timestamp()
  FROM (SELECT id FROM picked LIMIT (SELECT n FROM want)) p WHERE j.id = p.id
  RETURNING j.id, j.queue_id, j.task_name, j.payload, j.args, j.attempts, j.max_attempts,
            j.priority, j.run_at, j.http_path, j.http_method, j.trace_context, j.serial_group, j.tenant_id
), pruned AS (
  DELETE FROM supaqueue_queuecall x USING q
  WHERE x.queue_id = q.id AND q.rate_limit IS NOT NULL AND x.at < clock_timestamp() - q.rate_window
), lease AS (
  INSERT INTO supaqueue_currentjob (job_id, worker_id, attempt, started_at, lease_expires_at)
  SELECT id, %(worker_id)s, attempts, statement_timestamp(),
         statement_timestamp() + %(lease)s * interval '1 second' FROM claimed
), calls AS (
  INSERT INTO supaqueue_queuecall (queue_id, at, tenant_id)
  SELECT c.queue_id, clock_timestamp(), CASE WHEN q.per_tenant THEN COALESCE(c.tenant_id, '') ELSE '' END
  FROM claimed c JOIN q ON q.id = c.queue_id
  WHERE q.rate_limit IS NOT NULL
), started AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, 'started', attempts, %(worker_name)s, statement_timestamp(), '', '', '' FROM claimed
)
SELECT c.id, q.name, c.task_name, c.payload, c.args, c.attempts, c.max_attempts, q.timeout,
       q.concurrency_limit IS NOT NULL OR q.rate_limit IS NOT NULL OR q.serial OR c.serial_group IS NOT NULL,
       q.execution_mode,
       q.http || jsonb_build_object('path', c.http_path,
                                    'method', COALESCE(NULLIF(c.http_method, ''), q.http ->> 'method')),
       extract(epoch FROM statement_timestamp() - c.run_at)::float8, c.trace_context, c.serial_group
FROM claimed c JOIN q ON q.id = c.queue_id
ORDER BY c.priority DESC, c.run_at, c.id


-- name: rate_wake
-- What the next claim needs: when a rate-limited queue has room again, and whether to claim serial work or lock.
-- First column: when a rate-limited queue with due jobs will have room again (epoch
-- seconds, only if in the future; for limits per tenant, the first tenant's): a worker sleeps until then rather than until its
-- poll. The LATERAL keeps the queues first: an EXISTS here was planned as a scan of
-- every runnable job, on every claim, even with no rate-limited queue at all.
-- Second: whether the next claim needs claim_serial (a served queue is serial, or a
-- pending job has a group); two index probes, so that workers of deployments
-- without serial work never send it. Third: whether it needs lock_capped_queues (a
-- served queue has a cap or a rate limit). Fourth: whether it needs claim_tenants (a
-- served queue's limits are per tenant). Fifth: whether a served queue's jobs run on
-- the event loop (an HTTP or an async queue, not paused), which a worker whose async
-- lane has not started yet needs to know (see worker/process.py).
-- Run with its parameters written in (claims.rate_wake_statement): a worker's queues
-- never change, so the statement is prepared, and planned, once.
SELECT extract(epoch FROM min(w.next))::float8,
       EXISTS (SELECT 1 FROM supaqueue_queue s WHERE s.serial AND NOT s.paused
               AND (%(queues)s::text[] IS NULL OR s.name = ANY(%(queues)s::text[]))
               AND (%(on_loop)s::bool IS NULL OR (s.http_url <> '' OR s.execution_mode = 'async') = %(on_loop)s::bool))
       OR (
         SELECT min(g.serial_group) FROM supaqueue_job g
         WHERE g.status = 'pending' AND g.enabled AND g.serial_group IS NOT NULL) IS NOT NULL,
       EXISTS (SELECT 1 FROM supaqueue_queue c WHERE (c.concurrency_limit IS NOT NULL OR c.rate_limit IS NOT NULL)
               AND NOT c.paused AND (%(queues)s::text[] IS NULL OR c.name = ANY(%(queues)s::text[]))
               AND (%(on_loop)s::bool IS NULL OR (c.http_url <> '' OR c.execution_mode = 'async') = %(on_loop)s::bool)),
       EXISTS (SELECT 1 FROM supaqueue_queue t WHERE (t.concurrency_limit IS NOT NULL OR t.rate_limit IS NOT NULL)
               AND t.limit_scope = 'tenant' AND NOT t.paused
               AND (%(queues)s::text[] IS NULL OR t.name = ANY(%(queues)s::text[]))
               AND (%(on_loop)s::bool IS NULL OR (t.http_url <> '' OR t.execution_mode = 'async') = %(on_loop)s::bool)),
       EXISTS (SELECT 1 FROM supaqueue_queue a WHERE (a.http_url <> '' OR a.execution_mode = 'async')
               AND NOT a.paused AND (%(queues)s::text[] IS NULL OR a.name = ANY(%(queues)s::text[])))
FROM (
  SELECT CASE WHEN q.limit_scope = 'tenant' THEN (
           SELECT min((SELECT x.at FROM supaqueue_queuecall x WHERE x.queue_id = q.id AND x.tenant_id = k.tenant_id
                       ORDER BY x.at DESC OFFSET q.rate_limit - 1 LIMIT 1))
           FROM (SELECT DISTINCT k.tenant_id FROM supaqueue_queuecall k WHERE k.queue_id = q.id) k)
         ELSE (SELECT x.at FROM supaqueue_queuecall x WHERE x.queue_id = q.id ORDER BY x.at DESC
               OFFSET q.rate_limit - 1 LIMIT 1)
         END + (q.rate_period + %(rate_margin)s) * interval '1 second' AS next
  FROM supaqueue_queue q, LATERAL (
    SELECT 1 FROM supaqueue_job j WHERE j.queue_id = q.id AND j.status = 'pending' AND j.enabled
      AND j.run_at <= now() LIMIT 1) due
  WHERE q.rate_limit IS NOT NULL AND NOT q.paused
    AND (%(queues)s::text[] IS NULL OR q.name = ANY(%(queues)s::text[]))
    AND (%(on_loop)s::bool IS NULL OR (q.http_url <> '' OR q.execution_mode = 'async') = %(on_loop)s::bool)
) w WHERE w.next > clock_timestamp()

-- Workers written in other languages: supaqueue_get_job(), supaqueue_complete_job(),
-- supaqueue_fail_job() and supaqueue_heartbeat() (graphile-worker's and @pgpm/jobs' shape).
--
-- A SQL worker is a Worker row like runworkers' (found by its name, registered by its
-- first get_job), and its attempts are leases like theirs: the same claim rules, the
-- same fence, the same recovery (a lease not renewed for supaqueue.lease_duration
-- seconds is recovered by any runworkers process, or queue.recover_expired), the same
-- events. The statements are copies of the Python worker's (queue/claims.sql,
-- queue/outcomes.sql), one job at a time: the Python worker claims and finishes jobs in
-- batches, in one round trip, and must not pay for a PL/pgSQL call.
-- tests/test_sql_interface.py holds the copies to the originals, text and results.
--
-- What the Python worker takes from its settings, these functions take from the custom
-- settings supaqueue.lease_duration, supaqueue.rate_limit_margin, supaqueue.retry_backoff
-- and supaqueue.retry_backoff_max when set (ALTER DATABASE … SET, or SET), else from the
-- package's defaults (conf.py). Attempts that end free capped, serial and grouped work:
-- those queues' workers are woken on django_supaqueue.constants.CHANNEL (written in here
-- by the migration), as the Python worker wakes them.


-- supaqueue_get_job: claim one runnable job and lease it to worker_name, or return NULL.
-- queue_names and task_names limit what it takes (NULL or empty: any). The capped
-- queues are locked first, in a statement of their own, so that the claim statements
-- that follow (each a new snapshot) count every running job; a serial queue's or
-- group's head is claimed before the other jobs, as claims.py does. Called as
-- SELECT * FROM supaqueue_get_job(…): (supaqueue_get_job(…)).* would call it once per
-- column.
CREATE OR REPLACE FUNCTION supaqueue_get_job(
  worker_name text,
  queue_names text[] DEFAULT NULL,
  task_names text[] DEFAULT NULL
) RETURNS supaqueue_job
LANGUAGE plpgsql AS $supaqueue$
#variable_conflict use_column
DECLARE
  me_name text := supaqueue_get_job.worker_name;
  served text[] := NULLIF(supaqueue_get_job.queue_names, '{}');
  tasks text[] := NULLIF(supaqueue_get_job.task_names, '{}');
  lease_seconds float8 :=
    COALESCE(NULLIF(current_setting('supaqueue.lease_duration', true), '')::float8, 30.0);
  rate_margin float8 :=
    COALESCE(NULLIF(current_setting('supaqueue.rate_limit_margin', true), '')::float8, 0.1);
  claim_limit integer := 1;
  free_slots integer := 1;
  queues_locked boolean := true;
  loop_only boolean := NULL;  -- the claim's on_loop parameter: a Python worker's lanes set it, this takes any job
  me bigint;
  taken bigint;
  claimed_job supaqueue_job;
BEGIN
  IF me_name IS NULL OR me_name = '' OR length(me_name) > 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'worker_name must be a non-empty name of at most 255 characters, not %s.', quote_nullable(me_name));
  END IF;
  UPDATE supaqueue_worker w SET last_heartbeat_at = now() WHERE w.name = me_name RETURNING w.id INTO me;
  IF me IS NULL THEN
    INSERT INTO supaqueue_worker (name, host, pid, queues, concurrency, started_at, last_heartbeat_at)
    VALUES (me_name, COALESCE(host(inet_client_addr()), 'local'), pg_backend_pid(),
            COALESCE(to_jsonb(served), '[]'::jsonb), 1, now(), now())
    ON CONFLICT (name) DO UPDATE SET last_heartbeat_at = now()
    RETURNING id INTO me;
  END IF;

  -- A caller's transaction may call this more than once: the count claim_serial leaves
  -- for claim_tenants starts from nothing each time.
  PERFORM set_config('supaqueue.claimed_before', '', true);

  -- claims.sql, lock_capped_queues
  PERFORM 1 FROM supaqueue_queue
  WHERE (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AND NOT paused
    AND (served IS NULL OR name = ANY(served))
    AND (loop_only IS NULL OR (http_url <> '' OR execution_mode = 'async') = loop_only)
  ORDER BY id FOR NO KEY UPDATE;

  -- claims.sql, claim_serial
  WITH q AS (
    SELECT id, name, concurrency_limit, rate_limit, serial, head_of_line,
           (rate_period + rate_margin) * interval '1 second' AS rate_window,
           limit_scope = 'tenant' AND (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AS per_tenant
    FROM supaqueue_queue
    WHERE NOT paused AND (served IS NULL OR name = ANY(served))
    AND (loop_only IS NULL OR (http_url <> '' OR execution_mode = 'async') = loop_only)
  ), serial_work AS (
    SELECT EXISTS (SELECT 1 FROM q WHERE q.serial) OR (
      SELECT min(g.serial_group) FROM supaqueue_job g
      WHERE g.status = 'pending' AND g.enabled AND g.serial_group IS NOT NULL) IS NOT NULL AS yes
  ), room AS (
    SELECT q.id, LEAST(
      CASE WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL AND NOT q.serial THEN claim_limit
           WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL OR queues_locked THEN free_slots
           ELSE 0 END,
      CASE WHEN q.concurrency_limit IS NULL OR q.per_tenant THEN claim_limit ELSE GREATEST(0, q.concurrency_limit - (
        SELECT count(*) FROM supaqueue_job r WHERE r.queue_id = q.id AND r.status = 'in_progress')) END,
      CASE WHEN q.rate_limit IS NULL OR q.per_tenant THEN claim_limit ELSE GREATEST(0, q.rate_limit - (
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
      AND (tasks IS NULL OR j.task_name = ANY(tasks))
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
    LIMIT free_slots
  ), lease AS (
    INSERT INTO supaqueue_currentjob (job_id, worker_id, attempt, started_at, lease_expires_at, serial_queue,
                                      serial_group)
    SELECT id, me, attempts + 1, statement_timestamp(),
           statement_timestamp() + lease_seconds * interval '1 second',
           serial_queue, serial_group
    FROM picked ORDER BY serial_queue, serial_group
    ON CONFLICT DO NOTHING
    RETURNING job_id
  ), claimed AS (
    UPDATE supaqueue_job j SET status = 'in_progress', attempts = j.attempts + 1, started_at = statement_timestamp()
    FROM lease WHERE j.id = lease.job_id
    RETURNING j.id, j.queue_id, j.attempts, j.tenant_id
  ), calls AS (
    INSERT INTO supaqueue_queuecall (queue_id, at, tenant_id)
    SELECT c.queue_id, clock_timestamp(), CASE WHEN q.per_tenant THEN COALESCE(c.tenant_id, '') ELSE '' END
    FROM claimed c JOIN q ON q.id = c.queue_id
    WHERE q.rate_limit IS NOT NULL
  ), started AS (
    INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
    SELECT id, 'started', attempts, me_name, statement_timestamp(), '', '', '' FROM claimed
  )
  SELECT c.id INTO taken FROM claimed c;

  IF taken IS NULL THEN
    -- claims.sql, claim_tenants
    WITH RECURSIVE q AS (
      SELECT id, name, concurrency_limit, rate_limit, serial, head_of_line,
             (rate_period + rate_margin) * interval '1 second' AS rate_window,
             limit_scope = 'tenant' AND (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AS per_tenant
      FROM supaqueue_queue
      WHERE NOT paused AND (served IS NULL OR name = ANY(served))
      AND (loop_only IS NULL OR (http_url <> '' OR execution_mode = 'async') = loop_only)
    ), before AS (
      SELECT COALESCE(NULLIF(current_setting('supaqueue.claimed_before', true), '')::int, 0) AS n
    ), want AS (
      SELECT GREATEST(0, claim_limit - (SELECT n FROM before)) AS n
    ), room AS (
      SELECT q.id, LEAST(
        CASE WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL AND NOT q.serial THEN claim_limit
             WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL OR queues_locked THEN free_slots
             ELSE 0 END,
        CASE WHEN q.concurrency_limit IS NULL OR q.per_tenant THEN claim_limit ELSE GREATEST(0, q.concurrency_limit - (
          SELECT count(*) FROM supaqueue_job r WHERE r.queue_id = q.id AND r.status = 'in_progress')) END,
        CASE WHEN q.rate_limit IS NULL OR q.per_tenant THEN claim_limit ELSE GREATEST(0, q.rate_limit - (
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
            AND (tasks IS NULL OR j.task_name = ANY(tasks))
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
            AND (tasks IS NULL OR j.task_name = ANY(tasks))
          ORDER BY j.priority DESC, j.run_at, j.id
          LIMIT tenant_room.n
          FOR UPDATE SKIP LOCKED
        ) c
        WHERE tenant_room.tenant = ''
      ) c
      ORDER BY c.priority DESC, c.run_at, c.id
      LIMIT claim_limit
    ), claimed AS (
      UPDATE supaqueue_job j SET status = 'in_progress', attempts = j.attempts + 1, started_at = statement_timestamp()
      FROM (SELECT id FROM picked LIMIT (SELECT n FROM want)) p WHERE j.id = p.id
      RETURNING j.id, j.queue_id, j.attempts, j.tenant_id
    ), lease AS (
      INSERT INTO supaqueue_currentjob (job_id, worker_id, attempt, started_at, lease_expires_at)
      SELECT id, me, attempts, statement_timestamp(),
             statement_timestamp() + lease_seconds * interval '1 second' FROM claimed
    ), calls AS (
      INSERT INTO supaqueue_queuecall (queue_id, at, tenant_id)
      SELECT c.queue_id, clock_timestamp(), CASE WHEN q.per_tenant THEN COALESCE(c.tenant_id, '') ELSE '' END
      FROM claimed c JOIN q ON q.id = c.queue_id
      WHERE q.rate_limit IS NOT NULL
    ), started AS (
      INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
      SELECT id, 'started', attempts, me_name, statement_timestamp(), '', '', '' FROM claimed
    )
    SELECT c.id INTO taken FROM claimed c;
  END IF;

  IF taken IS NULL THEN
    -- claims.sql, claim
    WITH q AS (
      SELECT id, name, concurrency_limit, rate_limit, serial, head_of_line,
             (rate_period + rate_margin) * interval '1 second' AS rate_window,
             limit_scope = 'tenant' AND (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AS per_tenant
      FROM supaqueue_queue
      WHERE NOT paused AND (served IS NULL OR name = ANY(served))
      AND (loop_only IS NULL OR (http_url <> '' OR execution_mode = 'async') = loop_only)
    ), room AS (
      SELECT q.id, LEAST(
        CASE WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL AND NOT q.serial THEN claim_limit
             WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL OR queues_locked THEN free_slots
             ELSE 0 END,
        CASE WHEN q.concurrency_limit IS NULL OR q.per_tenant THEN claim_limit ELSE GREATEST(0, q.concurrency_limit - (
          SELECT count(*) FROM supaqueue_job r WHERE r.queue_id = q.id AND r.status = 'in_progress')) END,
        CASE WHEN q.rate_limit IS NULL OR q.per_tenant THEN claim_limit ELSE GREATEST(0, q.rate_limit - (
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
          AND (tasks IS NULL OR j.task_name = ANY(tasks))
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT room.n
        FOR UPDATE SKIP LOCKED
      ) c
      ORDER BY c.priority DESC, c.run_at, c.id
      LIMIT claim_limit
    ), claimed AS (
      UPDATE supaqueue_job j SET status = 'in_progress', attempts = j.attempts + 1, started_at = statement_timestamp()
      FROM picked p WHERE j.id = p.id
      RETURNING j.id, j.queue_id, j.attempts, j.tenant_id
    ), pruned AS (
      DELETE FROM supaqueue_queuecall x USING q
      WHERE x.queue_id = q.id AND q.rate_limit IS NOT NULL AND x.at < clock_timestamp() - q.rate_window
    ), lease AS (
      INSERT INTO supaqueue_currentjob (job_id, worker_id, attempt, started_at, lease_expires_at)
      SELECT id, me, attempts, statement_timestamp(),
             statement_timestamp() + lease_seconds * interval '1 second' FROM claimed
    ), calls AS (
      INSERT INTO supaqueue_queuecall (queue_id, at, tenant_id)
      SELECT c.queue_id, clock_timestamp(), CASE WHEN q.per_tenant THEN COALESCE(c.tenant_id, '') ELSE '' END
      FROM claimed c JOIN q ON q.id = c.queue_id
      WHERE q.rate_limit IS NOT NULL
    ), started AS (
      INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
      SELECT id, 'started', attempts, me_name, statement_timestamp(), '', '', '' FROM claimed
    )
    SELECT c.id INTO taken FROM claimed c;
  END IF;

  IF taken IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT * INTO claimed_job FROM supaqueue_job j WHERE j.id = taken;
  RETURN claimed_job;
END
$supaqueue$;


-- supaqueue_complete_job: record the success of worker_name's attempt at job_id, with its
-- result; false when its lease is gone (recovered after it expired, or never held), and
-- then nothing changes. A job cancelled while it ran gets a "stopped" event, and false.
-- From done on, the statement is outcomes.sql's complete.
CREATE OR REPLACE FUNCTION supaqueue_complete_job(
  job_id bigint,
  worker_name text,
  result jsonb DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $supaqueue$
#variable_conflict use_column
DECLARE
  finished_id bigint := supaqueue_complete_job.job_id;
  me_name text := supaqueue_complete_job.worker_name;
  outcome jsonb := supaqueue_complete_job.result;
  ended boolean;
  succeeded boolean;
BEGIN
  WITH lease AS (
    DELETE FROM supaqueue_currentjob c USING supaqueue_worker w
    WHERE c.job_id = finished_id AND c.worker_id = w.id AND w.name = me_name
    RETURNING c.job_id, c.attempt, outcome::text AS result,
              extract(epoch FROM now() - c.started_at)::float8 AS duration, NULL::int AS http_status
  ), done AS (
    UPDATE supaqueue_job j SET status = 'successful', result = lease.result::jsonb, finished_at = now(),
                               last_error = ''
    FROM lease WHERE j.id = lease.job_id AND j.status = 'in_progress'
    RETURNING j.id, j.has_dependents
  ), settled AS (
    SELECT supaqueue_settle_dependents(array_agg(id), array_agg('successful'::text))
    FROM done WHERE has_dependents HAVING count(*) > 0
  ), event AS (
    INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                    error_message, traceback, http_status)
    SELECT lease.job_id, CASE WHEN done.id IS NULL THEN 'stopped' ELSE 'succeeded' END, lease.attempt,
           me_name, now(), lease.duration, '', '', '', lease.http_status
    FROM lease LEFT JOIN done ON done.id = lease.job_id
  )
  SELECT (SELECT count(*) FROM lease) > 0, (SELECT count(*) FROM done) > 0 INTO ended, succeeded
  FROM (SELECT count(*) FROM settled) s;

  IF ended THEN
    -- outcomes.sql, notify_queues and notify_groups: the room this attempt held is free
    PERFORM pg_notify(:'channel', q.name || ' 0')
    FROM supaqueue_job j JOIN supaqueue_queue q ON q.id = j.queue_id
    WHERE j.id = finished_id AND NOT q.paused AND (q.concurrency_limit IS NOT NULL OR q.serial);
    PERFORM pg_notify(:'channel', q.name || ' 0') FROM supaqueue_queue q
    WHERE NOT q.paused AND q.id IN (
      SELECT p.queue_id FROM supaqueue_job p JOIN supaqueue_job j ON j.serial_group = p.serial_group
      WHERE j.id = finished_id AND p.status = 'pending' AND p.enabled);
  END IF;
  RETURN succeeded;
END
$supaqueue$;


-- supaqueue_fail_job: record the failure of worker_name's attempt at job_id: pending
-- again after the queue's back-off while attempts are left, else failed for good (its
-- dependents settled). The error class is django_supaqueue.exceptions.SQLWorkerError,
-- the message error_message (NULL: empty). False when the lease is gone, and then nothing
-- changes. A retry wakes its queue's workers with its run_at, so that they keep a timer.
-- From upd on, the statement is outcomes.sql's fail.
CREATE OR REPLACE FUNCTION supaqueue_fail_job(
  job_id bigint,
  worker_name text,
  error_message text
) RETURNS boolean
LANGUAGE plpgsql AS $supaqueue$
#variable_conflict use_column
DECLARE
  failed_id bigint := supaqueue_fail_job.job_id;
  me_name text := supaqueue_fail_job.worker_name;
  message text := COALESCE(supaqueue_fail_job.error_message, '');
  default_backoff float8 :=
    COALESCE(NULLIF(current_setting('supaqueue.retry_backoff', true), '')::float8, 2.0);
  default_backoff_max float8 :=
    COALESCE(NULLIF(current_setting('supaqueue.retry_backoff_max', true), '')::float8, 3600.0);
  ended boolean;
  new_status text;
  retry_run_at timestamptz;
BEGIN
  WITH lease AS (
    DELETE FROM supaqueue_currentjob c USING supaqueue_worker w
    WHERE c.job_id = failed_id AND c.worker_id = w.id AND w.name = me_name
    RETURNING c.job_id, c.attempt, 'django_supaqueue.exceptions.SQLWorkerError'::text AS error_class,
      message AS error_message, ''::text AS traceback,
      extract(epoch FROM now() - c.started_at)::float8 AS duration,
      NULL::timestamptz AS retry_at, NULL::float8 AS backoff, NULL::float8 AS backoff_max,
      false AS final, NULL::int AS http_status, false AS uncounted, me_name AS worker_name
  ), upd AS (
    UPDATE supaqueue_job j SET
      status = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final) THEN 'pending'
               ELSE 'failed' END,
      run_at = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final)
               THEN COALESCE(l.retry_at, now() + make_interval(
                 secs => LEAST(COALESCE(l.backoff_max, q.retry_backoff_max, default_backoff_max),
                               COALESCE(l.backoff, q.retry_backoff, default_backoff)
                                 * power(2, LEAST(j.attempts - 1, 60)))
                         * (0.5 + random() * 0.5)))
               ELSE j.run_at END,
      finished_at = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final) THEN NULL
                    ELSE now() END,
      attempts = j.attempts - CASE WHEN l.uncounted THEN 1 ELSE 0 END,
      key = CASE WHEN j.key IS NOT NULL AND EXISTS (
              SELECT 1 FROM supaqueue_job p
              WHERE p.key = j.key AND p.status IN ('waiting', 'pending') AND p.id <> j.id)
            THEN NULL ELSE j.key END,
      last_error = l.error_class || ': ' || l.error_message
    FROM lease l, supaqueue_queue q
    WHERE j.id = l.job_id AND q.id = j.queue_id AND j.status IS NOT DISTINCT FROM 'in_progress'
    RETURNING j.id, j.status, j.run_at, l.attempt, l.worker_name, l.duration, l.error_class,
              l.error_message, l.traceback, l.http_status, j.has_dependents
  ), stopped AS (
    INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                    error_message, traceback)
    SELECT l.job_id, 'stopped', l.attempt, l.worker_name, now(), l.duration, l.error_class,
           l.error_message, l.traceback
    FROM lease l WHERE l.job_id NOT IN (SELECT id FROM upd)
  ), settled AS (
    SELECT supaqueue_settle_dependents(array_agg(id), array_agg(status::text))
    FROM upd WHERE has_dependents AND status = 'failed' HAVING count(*) > 0
  ), event AS (
    INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                    error_message, traceback, retry_at, http_status)
    SELECT id, CASE WHEN status = 'pending' THEN 'retried' ELSE 'failed' END, attempt,
           worker_name, now(), duration, error_class, error_message, traceback,
           CASE WHEN status = 'pending' THEN run_at END, http_status
    FROM upd
  )
  SELECT (SELECT count(*) FROM lease) > 0, (SELECT u.status FROM upd u), (SELECT u.run_at FROM upd u)
  INTO ended, new_status, retry_run_at
  FROM (SELECT count(*) FROM settled) s;

  IF ended THEN
    -- outcomes.sql, notify_queues and notify_groups; and the retry's run_at, as the insert trigger sends it
    PERFORM pg_notify(:'channel', q.name || ' 0')
    FROM supaqueue_job j JOIN supaqueue_queue q ON q.id = j.queue_id
    WHERE j.id = failed_id AND NOT q.paused AND (q.concurrency_limit IS NOT NULL OR q.serial);
    PERFORM pg_notify(:'channel', q.name || ' 0') FROM supaqueue_queue q
    WHERE NOT q.paused AND q.id IN (
      SELECT p.queue_id FROM supaqueue_job p JOIN supaqueue_job j ON j.serial_group = p.serial_group
      WHERE j.id = failed_id AND p.status = 'pending' AND p.enabled);
    PERFORM pg_notify(:'channel', q.name || ' ' ||
                      CASE WHEN retry_run_at <= now() THEN '0' ELSE extract(epoch FROM retry_run_at)::text END)
    FROM supaqueue_job j JOIN supaqueue_queue q ON q.id = j.queue_id
    WHERE j.id = failed_id AND new_status = 'pending' AND j.enabled AND NOT q.paused;
  END IF;
  RETURN new_status IS NOT NULL;
END
$supaqueue$;


-- supaqueue_heartbeat: mark worker_name alive and renew every lease it holds for
-- supaqueue.lease_duration seconds; returns how many (0 for a name that is no worker).
CREATE OR REPLACE FUNCTION supaqueue_heartbeat(worker_name text) RETURNS integer
LANGUAGE plpgsql AS $supaqueue$
#variable_conflict use_column
DECLARE
  me_name text := supaqueue_heartbeat.worker_name;
  lease_seconds float8 :=
    COALESCE(NULLIF(current_setting('supaqueue.lease_duration', true), '')::float8, 30.0);
  me bigint;
  renewed integer;
BEGIN
  UPDATE supaqueue_worker w SET last_heartbeat_at = now() WHERE w.name = me_name RETURNING w.id INTO me;
  IF me IS NULL THEN
    RETURN 0;
  END IF;
  UPDATE supaqueue_currentjob c SET lease_expires_at = now() + lease_seconds * interval '1 second'
  WHERE c.worker_id = me;
  GET DIAGNOSTICS renewed = ROW_COUNT;
  RETURN renewed;
END
$supaqueue$;

-- reverse
DROP FUNCTION IF EXISTS supaqueue_heartbeat(text);
DROP FUNCTION IF EXISTS supaqueue_fail_job(bigint, text, text);
DROP FUNCTION IF EXISTS supaqueue_complete_job(bigint, text, jsonb);
DROP FUNCTION IF EXISTS supaqueue_get_job(text, text[], text[]);

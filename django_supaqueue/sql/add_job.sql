-- supaqueue_add_job(): enqueue from SQL, for callers that are not Django (a trigger, a
-- Supabase function, a service in another language), with the rules of Python's enqueue
-- that the database can check.
--
-- Python's single enqueue is a prepared INSERT … SELECT (queue/enqueue.sql, insert_one),
-- kept apart from this function so that it pays no PL/pgSQL call; the two write the same
-- columns alike (tests/test_sql_interface.py compares their jobs, and the ON CONFLICT
-- target and key-mode update with enqueue.sql's). What only Python knows is not applied
-- here: the task registry and a @task's options (queue, priority, max_attempts), and
-- SUPAQUEUE['QUEUES'] for a queue this function creates (it gets the Queue model's
-- defaults). Where neither the call nor the queue says, the defaults are the custom
-- settings supaqueue.default_queue, supaqueue.priority, supaqueue.max_attempts and
-- supaqueue.max_payload_bytes when set (ALTER DATABASE … SET, or SET), else the
-- package's own defaults, the SUPAQUEUE defaults of conf.py.
--
-- A refused argument raises invalid_parameter_value (SQLSTATE 22023) with a message
-- naming it, before anything is written. A new job wakes its queue's workers through the
-- insert trigger (notify_jobs.sql), as Python's enqueue does.

CREATE OR REPLACE FUNCTION supaqueue_add_job(
  task_name text,
  payload jsonb DEFAULT '{}',
  queue_name text DEFAULT NULL,
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT NULL,
  max_attempts integer DEFAULT NULL,
  job_key text DEFAULT NULL,
  key_mode text DEFAULT 'dedupe',
  tenant_id text DEFAULT NULL
) RETURNS supaqueue_job
LANGUAGE plpgsql AS $supaqueue$
DECLARE
  new_task text := supaqueue_add_job.task_name;
  new_payload jsonb := supaqueue_add_job.payload;
  new_queue text := COALESCE(supaqueue_add_job.queue_name,
                             NULLIF(current_setting('supaqueue.default_queue', true), ''), 'default');
  new_run_at timestamptz := supaqueue_add_job.run_at;
  new_priority integer := supaqueue_add_job.priority;
  new_max_attempts integer := supaqueue_add_job.max_attempts;
  new_key text := supaqueue_add_job.job_key;
  new_key_mode text := supaqueue_add_job.key_mode;
  new_tenant text := supaqueue_add_job.tenant_id;
  default_priority integer := COALESCE(NULLIF(current_setting('supaqueue.priority', true), '')::integer, 0);
  default_max_attempts integer :=
    COALESCE(NULLIF(current_setting('supaqueue.max_attempts', true), '')::integer, 5);
  max_payload_bytes integer :=
    COALESCE(NULLIF(current_setting('supaqueue.max_payload_bytes', true), '')::integer, 1000000);
  written supaqueue_job;
BEGIN
  IF new_task IS NULL OR new_task = '' OR length(new_task) > 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'task_name must be a non-empty name of at most 255 characters, not %s.', quote_nullable(new_task));
  END IF;
  IF new_payload IS NULL OR jsonb_typeof(new_payload) <> 'object' THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'payload must be a JSON object (the keyword arguments), not %s.',
      COALESCE(jsonb_typeof(new_payload), 'NULL'));
  END IF;
  IF max_payload_bytes > 0 AND octet_length(new_payload::text) > max_payload_bytes THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'payload is %s bytes of JSON, over supaqueue.max_payload_bytes (%s): store large data elsewhere '
      '(a table, a file) and pass its id.', octet_length(new_payload::text), max_payload_bytes);
  END IF;
  IF new_queue = '' OR length(new_queue) > 100 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'queue_name must be a non-empty name of at most 100 characters, not %s.', quote_literal(new_queue));
  END IF;
  IF new_queue !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'queue_name %s is not valid: use letters, digits, ''_'', ''.'', '':'' and ''-'', starting with a '
      'letter or digit.', quote_literal(new_queue));
  END IF;
  IF new_run_at IS NOT NULL AND (NOT isfinite(new_run_at)
      OR extract(year FROM new_run_at AT TIME ZONE 'UTC') NOT BETWEEN 1 AND 9999) THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'run_at %s is not a time from year 1 to 9999 in UTC.', new_run_at);
  END IF;
  IF new_priority NOT BETWEEN -100 AND 100 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'priority %s is out of range: use -100..100 (higher runs first).', new_priority);
  END IF;
  IF new_max_attempts < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'max_attempts must be a whole number from 1 to 2147483647, not %s.', new_max_attempts);
  END IF;
  IF new_key = '' OR length(new_key) > 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'job_key must be a non-empty string of at most 255 characters, not %s.', quote_literal(new_key));
  END IF;
  IF new_key_mode IS NULL OR new_key_mode NOT IN ('dedupe', 'replace', 'preserve_run_at') THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'key_mode must be one of dedupe, replace, preserve_run_at, not %s.', quote_nullable(new_key_mode));
  END IF;
  IF new_key_mode <> 'dedupe' AND new_key IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'key_mode %s needs a job_key: it says what to do when the key exists.', quote_literal(new_key_mode));
  END IF;
  IF new_tenant = '' OR length(new_tenant) > 255 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'tenant_id must be a non-empty string of at most 255 characters, not %s.', quote_literal(new_tenant));
  END IF;

  -- As enqueue.py's _insert_one: the insert finds no queue row when the queue does not
  -- exist yet (create it, try again), and meets a key held by a job not started yet
  -- (dedupe: return that job; the other modes give it the new values). A key holder
  -- that starts between the insert and the look-up has left the key free: try again.
  FOR attempt IN 1..5 LOOP
    IF new_key_mode = 'dedupe' THEN
      INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                                 max_attempts, key, enabled, last_error, created_at, tenant_id)
      SELECT q.id, new_task, new_payload, '[]'::jsonb, 'pending',
             COALESCE(new_priority, q.priority, default_priority),
             COALESCE(new_run_at, now()), 0,
             COALESCE(new_max_attempts, q.max_attempts, default_max_attempts),
             new_key, true, '', now(), new_tenant
      FROM supaqueue_queue q WHERE q.name = new_queue
      ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL DO NOTHING
      RETURNING * INTO written;
    ELSE
      INSERT INTO supaqueue_job AS j (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                                      max_attempts, key, enabled, last_error, created_at, tenant_id)
      SELECT q.id, new_task, new_payload, '[]'::jsonb, 'pending',
             COALESCE(new_priority, q.priority, default_priority),
             COALESCE(new_run_at, now()), 0,
             COALESCE(new_max_attempts, q.max_attempts, default_max_attempts),
             new_key, true, '', now(), new_tenant
      FROM supaqueue_queue q WHERE q.name = new_queue
      ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL DO UPDATE SET
        queue_id = EXCLUDED.queue_id, task_name = EXCLUDED.task_name, payload = EXCLUDED.payload,
        args = EXCLUDED.args, priority = EXCLUDED.priority, max_attempts = EXCLUDED.max_attempts,
        run_at = CASE WHEN new_key_mode = 'replace' THEN EXCLUDED.run_at ELSE j.run_at END,
        http_path = EXCLUDED.http_path, owner_id = EXCLUDED.owner_id, tenant_id = EXCLUDED.tenant_id,
        trace_context = EXCLUDED.trace_context, serial_group = EXCLUDED.serial_group,
        http_method = EXCLUDED.http_method
      RETURNING * INTO written;
    END IF;
    IF written.id IS NOT NULL THEN
      RETURN written;
    END IF;
    IF new_key IS NOT NULL THEN
      SELECT * INTO written FROM supaqueue_job p
      WHERE p.key = new_key AND p.status IN ('waiting', 'pending');
      IF written.id IS NOT NULL THEN
        RETURN written;
      END IF;
    END IF;
    INSERT INTO supaqueue_queue (name) VALUES (new_queue) ON CONFLICT (name) DO NOTHING;
  END LOOP;
  RAISE EXCEPTION 'could not enqueue into queue %: it keeps disappearing', quote_literal(new_queue);
END
$supaqueue$;

-- reverse
DROP FUNCTION IF EXISTS supaqueue_add_job(text, jsonb, text, timestamptz, integer, integer, text, text, text);

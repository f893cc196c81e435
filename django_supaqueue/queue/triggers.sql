-- Jobs from row changes, in the database: the opt-in statement-level trigger (run by triggers.py).
--
-- The statements that name a user's table and triggers (CREATE TRIGGER, DROP
-- TRIGGER) are in triggers.py: identifiers are no parameters, so psycopg.sql
-- composes them, quoted.


-- name: tables_exist
-- Whether the job and queue tables exist yet (a job trigger's migration must come after them).
SELECT to_regclass('supaqueue_job') IS NOT NULL AND to_regclass('supaqueue_queue') IS NOT NULL


-- name: create_row_trigger_function
-- Create (or replace) the one function every job trigger calls; its arguments say what to enqueue.
-- One statement-level trigger per event (transition tables allow one event per
-- trigger), so an UPDATE of 10,000 rows costs one INSERT of 10,000 jobs and one
-- NOTIFY. Rows become JSON with to_jsonb(); column names and options arrive as
-- TG_ARGV values, so nothing here is ever built from a row's values: they are data
-- from end to end. TG_ARGV: 0 task name, 1 queue, 2 priority and 3 max attempts
-- ('' = the queue's, else 4 and 5, the settings when installed), 6 payload kind
-- ('row' or 'keys'), 7 primary-key column, 8 n, the number of "changed" columns
-- that follow (9 .. 8+n), then (payload key, column) pairs, then, when the
-- arguments left are odd in number, the last is the column whose value (as text,
-- '' as NULL) is the job's tenant_id: triggers installed before there was one
-- pass an even number, and call this version unchanged.
-- The function writes only columns that migration 0001 created, and every column
-- added since has a default, so it enqueues on every later schema too.
CREATE OR REPLACE FUNCTION supaqueue_enqueue_changed_rows() RETURNS trigger
LANGUAGE plpgsql AS $supaqueue$
DECLARE
  task_name text := TG_ARGV[0];
  queue_name text := TG_ARGV[1];
  job_priority int := NULLIF(TG_ARGV[2], '')::int;
  job_max_attempts int := NULLIF(TG_ARGV[3], '')::int;
  default_priority int := TG_ARGV[4]::int;
  default_max_attempts int := TG_ARGV[5]::int;
  whole_row boolean := TG_ARGV[6] = 'row';
  pk_column text := TG_ARGV[7];
  n_changed int := TG_ARGV[8]::int;
  changed text[] := TG_ARGV[9:8 + n_changed];
  rest text[] := TG_ARGV[9 + n_changed:];
  pairs text[] := rest[1:cardinality(rest) - cardinality(rest) % 2];
  tenant_column text := CASE WHEN cardinality(rest) % 2 = 1 THEN rest[cardinality(rest)] END;
  changed_rows jsonb[];
BEGIN
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND n_changed = 0) THEN
    SELECT array_agg(to_jsonb(n)) INTO changed_rows FROM supaqueue_new_rows n;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT array_agg(to_jsonb(o)) INTO changed_rows FROM supaqueue_old_rows o;
  ELSE
    SELECT array_agg(n.r) INTO changed_rows
    FROM (SELECT to_jsonb(n) AS r FROM supaqueue_new_rows n) n
    JOIN (SELECT to_jsonb(o) AS r FROM supaqueue_old_rows o) o ON o.r -> pk_column = n.r -> pk_column
    WHERE EXISTS (SELECT 1 FROM unnest(changed) AS c(col) WHERE o.r -> c.col IS DISTINCT FROM n.r -> c.col);
  END IF;
  IF changed_rows IS NULL THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM supaqueue_queue WHERE name = queue_name) THEN
    INSERT INTO supaqueue_queue (name) VALUES (queue_name) ON CONFLICT (name) DO NOTHING;
  END IF;
  INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                             max_attempts, key, enabled, last_error, created_at, tenant_id)
  SELECT q.id, task_name,
         CASE WHEN whole_row THEN jsonb_build_object('row', u.r)
              ELSE (SELECT COALESCE(jsonb_object_agg(pairs[i], COALESCE(u.r -> pairs[i + 1], 'null')),
                                    '{}'::jsonb)
                    FROM generate_series(1, COALESCE(array_length(pairs, 1), 0), 2) AS i) END,
         '[]'::jsonb, 'pending',
         COALESCE(job_priority, q.priority, default_priority), now(), 0,
         COALESCE(job_max_attempts, q.max_attempts, default_max_attempts), NULL, true, '', now(),
         NULLIF(u.r ->> tenant_column, '')
  FROM unnest(changed_rows) WITH ORDINALITY AS u(r, n)
  JOIN supaqueue_queue q ON q.name = queue_name
  ORDER BY u.n;
  RETURN NULL;
END
$supaqueue$

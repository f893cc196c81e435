-- Job rows as the enqueue statements read them (run by rows.py).
--
-- Statements that return whole jobs (this one, enqueue.sql's upsert, graph.sql's
-- insert_graph) return the columns of Job in the model's order, JSON as text:
-- rows.job_from_text_row builds a Job from them (tests/test_queue_sql.py checks
-- the lists).


-- name: pending_by_key
-- The jobs not started yet (waiting or pending) that hold these keys: the ones an enqueue with a key met.
SELECT id, queue_id, task_name, payload::text, args::text, status, priority, run_at, attempts,
       max_attempts, key, enabled, result::text, last_error, created_at, started_at, finished_at,
       http_path, owner_id, tenant_id, trace_context::text, serial_group, waiting_for, has_dependents,
       on_dependency_failure, http_method
FROM supaqueue_job
WHERE key = ANY(%(keys)s::text[]) AND status IN ('waiting', 'pending')

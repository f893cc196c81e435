-- The job row's invariants, in one function that the table's one CHECK constraint calls.
--
-- PostgreSQL reads a CHECK constraint back as a serialized expression and plans it
-- again for every INSERT or UPDATE statement, so one function call is much cheaper
-- on the enqueue path than a check per invariant (status, priority range,
-- max_attempts, and the three that PositiveIntegerField would add). It is PL/pgSQL,
-- not SQL, so that the planner does not inline the body and plan it every time. The
-- model's CheckConstraint (supaqueue_job_valid) calls it too, so model validation and
-- the database apply the same rules.

CREATE OR REPLACE FUNCTION supaqueue_job_is_valid(
  status text, priority int, max_attempts int, attempts int, waiting_for int
) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN status IN ('waiting', 'pending', 'in_progress', 'successful', 'failed', 'cancelled')
     AND priority BETWEEN -100 AND 100
     AND max_attempts >= 1
     AND attempts >= 0
     AND waiting_for >= 0;
END
$$;

-- reverse
DROP FUNCTION IF EXISTS supaqueue_job_is_valid(text, int, int, int, int);

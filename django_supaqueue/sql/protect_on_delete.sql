-- A queue that still has jobs, and a worker that still holds leases, cannot be deleted.
--
-- What PROTECT foreign keys would do, kept by triggers because the job table's key to
-- its queue and the lease table's key to its worker are not database constraints
-- (db_constraint=False): a foreign key checks every inserted job and lease, on the
-- claim and enqueue paths; these triggers pay one index probe per deleted queue or
-- worker instead.

CREATE OR REPLACE FUNCTION supaqueue_protect_queue() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM supaqueue_job WHERE queue_id = OLD.id) THEN
    RAISE EXCEPTION 'queue % still has jobs: delete or move them first', OLD.name
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN OLD;
END
$$;
CREATE TRIGGER supaqueue_queue_protect BEFORE DELETE ON supaqueue_queue
FOR EACH ROW EXECUTE FUNCTION supaqueue_protect_queue();

CREATE OR REPLACE FUNCTION supaqueue_protect_worker() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM supaqueue_currentjob WHERE worker_id = OLD.id) THEN
    RAISE EXCEPTION 'worker % still holds leases: let them expire or release them first', OLD.name
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN OLD;
END
$$;
CREATE TRIGGER supaqueue_worker_protect BEFORE DELETE ON supaqueue_worker
FOR EACH ROW EXECUTE FUNCTION supaqueue_protect_worker();

-- reverse
DROP TRIGGER IF EXISTS supaqueue_queue_protect ON supaqueue_queue;
DROP FUNCTION IF EXISTS supaqueue_protect_queue();
DROP TRIGGER IF EXISTS supaqueue_worker_protect ON supaqueue_worker;
DROP FUNCTION IF EXISTS supaqueue_protect_worker();

"""TRUNCATE of the job table takes its leases and events with it, as the foreign keys did.

Migration 0014 replaced the lease and event tables' foreign keys to the job
table with a DELETE trigger; ``TRUNCATE supaqueue_job CASCADE`` then no longer
reached them, and with RESTART IDENTITY a new job could show an old job's
history. This trigger truncates them too. When one TRUNCATE names them along
with the job table (Django's flush does), they are empty by the time it fires,
and it leaves them alone: a table the statement is still using cannot be
truncated again inside it.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION supaqueue_job_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM supaqueue_currentjob) OR EXISTS (SELECT 1 FROM supaqueue_jobevent) THEN
    TRUNCATE supaqueue_currentjob, supaqueue_jobevent;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER supaqueue_job_truncated AFTER TRUNCATE ON supaqueue_job
FOR EACH STATEMENT EXECUTE FUNCTION supaqueue_job_truncated();
"""

DROP = """
DROP TRIGGER IF EXISTS supaqueue_job_truncated ON supaqueue_job;
DROP FUNCTION IF EXISTS supaqueue_job_truncated();
"""


class Migration(migrations.Migration):
    dependencies = [("supaqueue", "0015_job_invariants_in_one_check")]
    operations = [migrations.RunSQL(CREATE, DROP)]

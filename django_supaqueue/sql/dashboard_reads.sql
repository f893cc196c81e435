-- What the admin dashboard reads at scale: a BRIN index on the event time and
-- multivariate statistics on the job table's queue and status.
--
-- Events are append-only, so their time follows their place in the table and a few
-- kilobytes of BRIN index find the last hour (throughput, failure rate, recent
-- failures) at next to no cost per insert; autosummarize keeps new block ranges
-- summarised by autovacuum. The statistics keep the planner's estimates of jobs per
-- queue and status (shown where exact counts would be slow) close when queues differ
-- in how their jobs end; only ANALYZE pays for them. In SQL because Django's BrinIndex
-- needs django.contrib.postgres in INSTALLED_APPS, which this app does not ask its
-- users for, and Django has no CREATE STATISTICS.

CREATE INDEX IF NOT EXISTS supaqueue_event_at_brin ON supaqueue_jobevent USING brin (at)
  WITH (autosummarize = on);
CREATE STATISTICS IF NOT EXISTS supaqueue_job_queue_status_stats (mcv, ndistinct)
  ON queue_id, status FROM supaqueue_job;

-- reverse
DROP STATISTICS IF EXISTS supaqueue_job_queue_status_stats;
DROP INDEX IF EXISTS supaqueue_event_at_brin;

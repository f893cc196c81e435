-- Vacuum the job, lease and event tables after a small fraction of change.
--
-- These tables churn: every job is inserted, updated twice and (with retention)
-- deleted; every lease is inserted and deleted. Vacuumed after the default 20 % of
-- change, their dead rows would pile up in the claim index. Storage parameters have no
-- place in Django's model options, hence SQL.

ALTER TABLE supaqueue_job SET (autovacuum_vacuum_scale_factor = 0.02,
  autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);
ALTER TABLE supaqueue_currentjob SET (autovacuum_vacuum_scale_factor = 0.0,
  autovacuum_vacuum_threshold = 1000);
ALTER TABLE supaqueue_jobevent SET (autovacuum_vacuum_scale_factor = 0.05,
  autovacuum_vacuum_insert_scale_factor = 0.1);

-- reverse
ALTER TABLE supaqueue_job RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor,
  autovacuum_vacuum_insert_scale_factor);
ALTER TABLE supaqueue_currentjob RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
ALTER TABLE supaqueue_jobevent RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor);

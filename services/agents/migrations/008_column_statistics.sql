-- No planner statistics for the columns no query filters, joins or groups
-- on: the big text, jsonb and bytea bodies. ANALYZE (autovacuum's, and the
-- statistics keeper's as a young table grows: common/src/db_analyze.c)
-- spent most of its time building most-common-value lists and histograms
-- of them: on the reply bench's cluster (105,000 outbox rows, 214,000
-- messages) ANALYZE agents.outbox took 370-410 ms, 320 of them for
-- payload, and agent_messages 294 ms; with these 150-180 and 135-170 ms,
-- every other column's statistics (and the table's row estimate) as before.
ALTER TABLE agents.outbox
  ALTER COLUMN dimensions SET STATISTICS 0,
  ALTER COLUMN payload SET STATISTICS 0,
  ALTER COLUMN last_error SET STATISTICS 0;
ALTER TABLE agents.agent_messages
  ALTER COLUMN content SET STATISTICS 0,
  ALTER COLUMN reply SET STATISTICS 0,
  ALTER COLUMN error SET STATISTICS 0;
ALTER TABLE agents.checkpoints
  ALTER COLUMN state SET STATISTICS 0,
  ALTER COLUMN metadata SET STATISTICS 0;
ALTER TABLE agents.checkpoint_blobs
  ALTER COLUMN blob SET STATISTICS 0;
ALTER TABLE agents.checkpoint_writes
  ALTER COLUMN blob SET STATISTICS 0;

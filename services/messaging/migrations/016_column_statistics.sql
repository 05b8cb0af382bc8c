-- No planner statistics for the body columns no query filters, joins or
-- groups on (as agents 008). ANALYZE of the tables the hot path grows (by
-- autovacuum, and by the statistics keeper as they grow:
-- common/src/db_analyze.c) built most-common-value lists and histograms of
-- them. On the messaging bench's cluster (13,000 outbox rows, 10,800
-- messages): ANALYZE messaging.outbox 77 -> 32 ms, messages 66 -> 48 ms;
-- the inbox's bytea body costs little (34-37 ms either way) and is here
-- for the same reason.
ALTER TABLE messaging.outbox
  ALTER COLUMN dimensions SET STATISTICS 0,
  ALTER COLUMN payload SET STATISTICS 0,
  ALTER COLUMN last_error SET STATISTICS 0;
ALTER TABLE messaging.messages
  ALTER COLUMN text SET STATISTICS 0,
  ALTER COLUMN metadata SET STATISTICS 0,
  ALTER COLUMN media_url SET STATISTICS 0,
  ALTER COLUMN error_text SET STATISTICS 0;
ALTER TABLE messaging.inbox
  ALTER COLUMN body SET STATISTICS 0,
  ALTER COLUMN last_error SET STATISTICS 0;

-- What else the inbox window (PARLEY_MESSAGING_INBOX_KEEP, 013) bounds:
-- statuses that never found their message (pending_statuses: a status for
-- a provider id this service never sent, or whose send's answer was lost;
-- after a week it will not match) and outbound webhook deliveries that
-- are finished (delivered or failed for good; pending and retrying ones
-- stay). Both tables grew for ever before. Deleted with the inbox, a chunk
-- at a time, found through BRIN indexes on created_at (never updated, so
-- no HOT update is lost).
CREATE INDEX pending_statuses_created ON messaging.pending_statuses
  USING brin (created_at) WITH (autosummarize = on);
CREATE INDEX webhook_deliveries_created ON messaging.webhook_deliveries
  USING brin (created_at) WITH (autosummarize = on);

-- Up to p_limit rows of each table older than p_keep_ms, deleted; returns
-- how many in all. Run as tenant '*'. As inbox_prune: custom plans, no
-- sequential scan.
CREATE FUNCTION messaging.retention_prune(p_keep_ms bigint, p_limit int)
RETURNS int
LANGUAGE plpgsql
SET enable_seqscan = off SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  n int;
  m int;
BEGIN
  DELETE FROM messaging.pending_statuses p
   USING (SELECT x.tenant_id, x.id FROM messaging.pending_statuses x
           WHERE x.created_at < now() - p_keep_ms * interval '1 ms'
           LIMIT p_limit
             FOR UPDATE SKIP LOCKED) d
   WHERE p.tenant_id = d.tenant_id AND p.id = d.id;
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM messaging.webhook_deliveries w
   USING (SELECT x.tenant_id, x.id FROM messaging.webhook_deliveries x
           WHERE x.created_at < now() - p_keep_ms * interval '1 ms'
             AND x.status IN ('delivered', 'failed')
           LIMIT p_limit
             FOR UPDATE SKIP LOCKED) d
   WHERE w.tenant_id = d.tenant_id AND w.id = d.id;
  GET DIAGNOSTICS m = ROW_COUNT;
  RETURN n + m;
END
$$;

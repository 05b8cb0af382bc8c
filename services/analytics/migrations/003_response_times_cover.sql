-- analytics 003: Summary's response times from the index alone.
--
-- Summary reads a tenant's response_times over a range (median and p90 per
-- kind, optionally by channel, agent or campaign). Through the primary key
-- each row cost a heap visit for kind and ms: 12 ms of a 30-day Summary's
-- 23 ms on the bench's 10,000,000 events. With the columns included, the
-- rows of pages autovacuum has marked all-visible come from the index.
CREATE INDEX response_times_by_range ON response_times (tenant_id, occurred_at)
	INCLUDE (kind, ms, channel_id, agent_id, campaign_id);

-- analytics 002: hourly totals for TimeSeries by hour.
--
-- One row per (tenant, tenant-local hour) holding every count metric of
-- TimeSeries as a column: the totals (dim_key '') of daily_rollups, by
-- hour. One row per tenant and hour rather than one per metric: a batch
-- touches 5 to 15 times fewer rows. `hour` is the instant the local hour
-- starts (date_trunc('hour', occurred_at, time_zone)). Money metrics (per
-- currency) are not here: their hourly series are read from raw events.
-- Kept up to date by Track in the same statement as daily_rollups.
CREATE TABLE hourly_rollups (
	tenant_id             uuid        NOT NULL,
	hour                  timestamptz NOT NULL,
	messages_in           bigint      NOT NULL DEFAULT 0,
	messages_out          bigint      NOT NULL DEFAULT 0,
	messages_out_bot      bigint      NOT NULL DEFAULT 0,
	messages_out_human    bigint      NOT NULL DEFAULT 0,
	conversations_started bigint      NOT NULL DEFAULT 0,
	conversations_closed  bigint      NOT NULL DEFAULT 0,
	handoffs              bigint      NOT NULL DEFAULT 0,
	bot_resolved          bigint      NOT NULL DEFAULT 0,
	leads_created         bigint      NOT NULL DEFAULT 0,
	leads_converted       bigint      NOT NULL DEFAULT 0,
	orders                bigint      NOT NULL DEFAULT 0,
	campaign_sent         bigint      NOT NULL DEFAULT 0,
	campaign_delivered    bigint      NOT NULL DEFAULT 0,
	campaign_read         bigint      NOT NULL DEFAULT 0,
	campaign_failed       bigint      NOT NULL DEFAULT 0,
	ai_replies            bigint      NOT NULL DEFAULT 0,
	ai_tokens_in          bigint      NOT NULL DEFAULT 0,
	ai_tokens_out         bigint      NOT NULL DEFAULT 0,
	quota_refusals        bigint      NOT NULL DEFAULT 0,
	PRIMARY KEY (tenant_id, hour)
) WITH (fillfactor = 80); -- room for HOT updates of the counters

ALTER TABLE hourly_rollups ENABLE ROW LEVEL SECURITY;
ALTER TABLE hourly_rollups FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON hourly_rollups
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

-- Events stored before this migration have no hourly rows. Hours that start
-- at or after `hourly_from` are served from hourly_rollups; earlier ones
-- from raw events, as before. An empty database has nothing before, so
-- every hour is served from the rollups. Otherwise the first whole hour
-- after now plus the 5 minutes an event may lie in the future. Not tenant
-- data (no RLS).
CREATE TABLE rollup_epochs (
	singleton   boolean     NOT NULL PRIMARY KEY DEFAULT true
	                        CHECK (singleton),
	hourly_from timestamptz NOT NULL
);
-- events has row-level security: look as the service ('*'), for this
-- transaction only.
SELECT set_config('parley.tenant_id', '*', true);
INSERT INTO rollup_epochs (singleton, hourly_from)
SELECT true, CASE WHEN EXISTS (SELECT 1 FROM events) THEN
	date_trunc('hour', now() + interval '65 minutes')
	ELSE '-infinity'::timestamptz END;

-- Track no longer writes monthly_contacts nor monthly_usage.unique_contacts
-- (one row per contact and month was a fifth of the rows a batch wrote):
-- MonthlyUsage counts the distinct contacts of daily_contacts over the
-- tenant-local month, which holds every contact those two ever counted.
COMMENT ON TABLE monthly_contacts IS
	'not written since migration 002; MonthlyUsage reads daily_contacts';
COMMENT ON COLUMN monthly_usage.unique_contacts IS
	'not maintained since migration 002; MonthlyUsage counts daily_contacts';

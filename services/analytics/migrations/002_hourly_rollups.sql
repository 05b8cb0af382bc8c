-- analytics 002: hourly totals for TimeSeries by hour.
--
-- One row per (tenant, metric, tenant-local hour): the totals (dim_key '')
-- of daily_rollups, by hour. `hour` is the instant the local hour starts
-- (date_trunc('hour', occurred_at, time_zone)). Kept up to date by Track in
-- the same statement as daily_rollups.
CREATE TABLE hourly_rollups (
	tenant_id uuid        NOT NULL,
	metric    text        NOT NULL,
	hour      timestamptz NOT NULL,
	value     bigint      NOT NULL DEFAULT 0,
	PRIMARY KEY (tenant_id, metric, hour)
);

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

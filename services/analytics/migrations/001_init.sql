-- analytics 001: raw events partitioned by month (UTC), rollups kept in the
-- tenant's time zone, monthly usage, tenant settings, retention.
-- Every tenant table has row-level security keyed on parley.tenant_id.

-- Raw events. Declarative RANGE partitioning on occurred_at, one partition
-- per UTC month (events_pYYYYMM), made ahead by ensure_partitions() and on
-- demand for late events. The key must hold the partition key, so it is
-- (tenant_id, occurred_at, id): a replay carries the producer's stored
-- occurred_at (the outbox row keeps it) and so hits the same key and is
-- ignored by ON CONFLICT DO NOTHING. The same index serves range scans
-- (raw edges of a range, hourly series, ListEvents).
CREATE TABLE events (
	tenant_id       uuid        NOT NULL,
	occurred_at     timestamptz NOT NULL,
	id              uuid        NOT NULL,
	type            text        NOT NULL,
	source          text        NOT NULL DEFAULT '',
	channel_id      uuid,
	agent_id        uuid,
	campaign_id     uuid,
	conversation_id uuid,
	contact_id      uuid,
	user_id         uuid,
	payload         jsonb       NOT NULL DEFAULT '{}',
	version         int         NOT NULL DEFAULT 1,
	received_at     timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, occurred_at, id)
) PARTITION BY RANGE (occurred_at);

-- Counters per tenant-local day. dim_key '' / dim_value '' is the total;
-- otherwise the metric narrowed to one channel, agent, campaign, user, or a
-- label (intent, engine, model, handoff_reason). Money metrics carry their
-- currency in the name ("revenue_minor:BRL").
CREATE TABLE daily_rollups (
	tenant_id  uuid   NOT NULL,
	dim_key    text   NOT NULL DEFAULT '',
	dim_value  text   NOT NULL DEFAULT '',
	day        date   NOT NULL,
	metric     text   NOT NULL,
	value      bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (tenant_id, dim_key, dim_value, day, metric)
);
-- PlatformSummary sums totals of every tenant over days.
CREATE INDEX daily_rollups_platform ON daily_rollups (day, metric)
	WHERE dim_key = '';

-- Contacts seen per tenant-local day (message.received / message.sent):
-- unique contacts over whole days without reading raw events.
CREATE TABLE daily_contacts (
	tenant_id  uuid NOT NULL,
	day        date NOT NULL,
	contact_id uuid NOT NULL,
	PRIMARY KEY (tenant_id, day, contact_id)
);

-- First response times (message.sent with response_ms), exact, for
-- medians and p90 over any range.
CREATE TABLE response_times (
	tenant_id   uuid        NOT NULL,
	kind        text        NOT NULL CHECK (kind IN ('bot', 'human')),
	occurred_at timestamptz NOT NULL,
	event_id    uuid        NOT NULL,
	ms          bigint      NOT NULL,
	channel_id  uuid,
	agent_id    uuid,
	campaign_id uuid,
	PRIMARY KEY (tenant_id, occurred_at, event_id)
);

-- Usage per tenant-local month.
CREATE TABLE monthly_usage (
	tenant_id       uuid   NOT NULL,
	month           date   NOT NULL,
	messages_in     bigint NOT NULL DEFAULT 0,
	messages_out    bigint NOT NULL DEFAULT 0,
	conversations   bigint NOT NULL DEFAULT 0,
	unique_contacts bigint NOT NULL DEFAULT 0,
	ai_replies      bigint NOT NULL DEFAULT 0,
	ai_tokens       bigint NOT NULL DEFAULT 0,
	campaign_sent   bigint NOT NULL DEFAULT 0,
	quota_refusals  bigint NOT NULL DEFAULT 0,
	updated_at      timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, month)
);

-- Contacts seen per tenant-local month: makes monthly_usage.unique_contacts
-- exact and incremental.
CREATE TABLE monthly_contacts (
	tenant_id  uuid NOT NULL,
	month      date NOT NULL,
	contact_id uuid NOT NULL,
	PRIMARY KEY (tenant_id, month, contact_id)
);

-- What analytics knows of a tenant, learned from tenant.created and
-- tenant.updated (the newest event wins).
CREATE TABLE tenant_settings (
	tenant_id   uuid        NOT NULL PRIMARY KEY,
	name        text        NOT NULL DEFAULT '',
	time_zone   text        NOT NULL DEFAULT 'UTC',
	source_at   timestamptz NOT NULL,
	updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Service-wide retention of raw events (not tenant data: no RLS).
CREATE TABLE retention (
	singleton  boolean     NOT NULL PRIMARY KEY DEFAULT true
	                       CHECK (singleton),
	months     int         NOT NULL DEFAULT 0 CHECK (months >= 0),
	updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention (singleton, months) VALUES (true, 0);

DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['events', 'daily_rollups', 'daily_contacts',
	    'response_times', 'monthly_usage', 'monthly_contacts',
	    'tenant_settings']
	LOOP
		EXECUTE format('ALTER TABLE analytics.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE format('ALTER TABLE analytics.%I FORCE ROW LEVEL SECURITY', t);
		EXECUTE format($p$CREATE POLICY tenant_isolation ON analytics.%I
		  USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
		  WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))$p$, t);
	END LOOP;
END $$;

-- The first day of the UTC month holding ts.
CREATE FUNCTION month_of(ts timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE AS $$
	SELECT date_trunc('month', ts AT TIME ZONE 'UTC')::date
$$;

-- Makes the partition of events for the UTC month starting at m unless it
-- exists or lies before the retention window. Returns true when the month
-- can hold events (it exists now), false when retention excludes it.
CREATE FUNCTION ensure_partition(m date) RETURNS boolean
LANGUAGE plpgsql SET search_path = analytics, pg_catalog AS $$
DECLARE
	keep  int;
	first date := date_trunc('month', m)::date;
	name  text := format('events_p%s', to_char(first, 'YYYYMM'));
BEGIN
	SELECT months INTO keep FROM analytics.retention;
	IF keep > 0 AND first < (date_trunc('month', now() AT TIME ZONE 'UTC')
	    - make_interval(months => keep - 1))::date THEN
		RETURN false;
	END IF;
	IF to_regclass('analytics.' || name) IS NOT NULL THEN
		RETURN true;
	END IF;
	-- Two callers making the same month: the lock serialises them.
	PERFORM pg_advisory_xact_lock(hashtext('analytics.events'),
	    (extract(year FROM first) * 12 + extract(month FROM first))::int);
	IF to_regclass('analytics.' || name) IS NULL THEN
		BEGIN
			EXECUTE format('CREATE TABLE analytics.%I PARTITION OF analytics.events '
			    'FOR VALUES FROM (%L) TO (%L)', name,
			    (first::timestamp AT TIME ZONE 'UTC'),
			    ((first + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
		EXCEPTION WHEN duplicate_table THEN
			NULL; -- made by a concurrent caller that committed first
		END;
	END IF;
	RETURN true;
END $$;

-- Partitions for this UTC month and the next `ahead`; returns the months
-- created ("2026-11").
CREATE FUNCTION ensure_partitions(p_now timestamptz, ahead int)
RETURNS SETOF text
LANGUAGE plpgsql SET search_path = analytics, pg_catalog AS $$
DECLARE
	m date;
BEGIN
	FOR i IN 0 .. ahead LOOP
		m := (month_of(p_now) + make_interval(months => i))::date;
		IF to_regclass('analytics.' || format('events_p%s', to_char(m, 'YYYYMM'))) IS NULL THEN
			PERFORM ensure_partition(m);
			RETURN NEXT to_char(m, 'YYYY-MM');
		END IF;
	END LOOP;
END $$;

-- Learns a tenant's name and time zone from tenant.created/tenant.updated;
-- the newest event wins, an unknown time zone keeps the one known.
CREATE FUNCTION learn_tenant(p_tenant uuid, p_name text, p_tz text,
    p_at timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = analytics, pg_catalog AS $$
DECLARE
	zone text;
BEGIN
	IF coalesce(p_tz, '') <> '' AND EXISTS (SELECT 1 FROM pg_timezone_names
	    WHERE name = p_tz) THEN
		zone := p_tz;
	END IF;
	INSERT INTO analytics.tenant_settings AS t (tenant_id, name, time_zone,
	    source_at)
	VALUES (p_tenant, coalesce(p_name, ''), coalesce(zone, 'UTC'), p_at)
	ON CONFLICT (tenant_id) DO UPDATE
	SET name = CASE WHEN coalesce(p_name, '') <> '' THEN p_name
	                ELSE t.name END,
	    time_zone = coalesce(zone, t.time_zone),
	    source_at = p_at,
	    updated_at = now()
	WHERE t.source_at <= p_at;
END $$;

-- Months with an attached partition, oldest first.
CREATE VIEW event_partitions AS
	SELECT c.relname AS name,
	       to_date(substr(c.relname, 9), 'YYYYMM') AS month
	FROM pg_inherits i
	JOIN pg_class c ON c.oid = i.inhrelid
	JOIN pg_class p ON p.oid = i.inhparent
	JOIN pg_namespace n ON n.oid = p.relnamespace
	WHERE n.nspname = 'analytics' AND p.relname = 'events'
	  AND c.relname ~ '^events_p[0-9]{6}$';

-- Detaches, then drops, the partitions of months older than the retention
-- (the current month counts as one): whole tables, never row by row.
-- Rollups, contacts, response times and monthly usage stay. Returns the
-- months detached (or that would be, with p_dry).
CREATE FUNCTION apply_retention(p_now timestamptz, p_dry boolean)
RETURNS SETOF text
LANGUAGE plpgsql SET search_path = analytics, pg_catalog AS $$
DECLARE
	keep   int;
	cutoff date;
	p      record;
BEGIN
	SELECT months INTO keep FROM analytics.retention;
	IF keep = 0 THEN
		RETURN;
	END IF;
	cutoff := (month_of(p_now) - make_interval(months => keep - 1))::date;
	FOR p IN SELECT name, month FROM analytics.event_partitions
	         WHERE month < cutoff ORDER BY month LOOP
		IF NOT p_dry THEN
			EXECUTE format('ALTER TABLE analytics.events DETACH PARTITION analytics.%I', p.name);
			EXECUTE format('DROP TABLE analytics.%I', p.name);
		END IF;
		RETURN NEXT to_char(p.month, 'YYYY-MM');
	END LOOP;
END $$;

SELECT count(*) FROM ensure_partitions(now(), 2);

-- Counter leases (README "Leases"): a replica takes a share of a tenant's
-- remaining day and month units in one locked statement and admits
-- ReserveUsage calls against it in memory; each admitted call still writes
-- its reservation row (the durable answer of its idempotency key) before
-- it is answered, but no counter row. Unused units go back to the
-- counters when the lease is returned (the replica, at expiry or when it
-- stops) or reaped (a replica that died: what its reservations did not
-- use, counted from them).
--
-- Safety rests on three rules:
--   1. A lease is granted only far from a limit: at most an eighth of what
--      is left of each limited period, so the counters never admit more
--      than the limit (the lease's units are in `used` from the grant on)
--      and near a limit every call is decided exactly, by 002/003.
--   2. A reservation is written under a lease only while the lease row
--      exists and has not expired (reserve_leased joins it), holding the
--      shared advisory lock (hashtext('billing.usage_leases'), 0).
--   3. lease_reap takes that lock exclusively before it counts what a
--      lease's reservations used: every write under the lease has then
--      committed, and none can follow (the row is gone or expired).
--      Returning and reaping delete the row first: a lease is given back
--      once.

CREATE TABLE billing.usage_leases (
	tenant_id   uuid        NOT NULL,
	id          uuid        NOT NULL,
	metric      text        NOT NULL CHECK (metric IN ('messages', 'campaigns', 'ai_tokens')),
	day_start   timestamptz,          -- NULL: a month-only metric
	month_start timestamptz NOT NULL,
	units       bigint      NOT NULL CHECK (units > 0),
	owner       text        NOT NULL,
	granted_at  timestamptz NOT NULL DEFAULT now(),
	expires_at  timestamptz NOT NULL,
	PRIMARY KEY (tenant_id, id)
);
-- No index on expires_at: a generic plan of reserve_leased's join chose it
-- over the primary key and read every live lease for every batch. The
-- reaper reads the whole (small: one row per busy pair and replica) table.
ALTER TABLE billing.usage_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.usage_leases FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.usage_leases
	USING ((SELECT current_setting('parley.tenant_id', true) = '*') OR tenant_id =
	       (SELECT CASE WHEN x.s ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
	                    THEN x.s::uuid END
	          FROM (SELECT current_setting('parley.tenant_id', true)) AS x(s)))
	WITH CHECK ((SELECT current_setting('parley.tenant_id', true) = '*') OR tenant_id =
	       (SELECT CASE WHEN x.s ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
	                    THEN x.s::uuid END
	          FROM (SELECT current_setting('parley.tenant_id', true)) AS x(s)));

-- The lease a reservation was admitted under (NULL: decided against the
-- counters). No index: only lease_reap reads it, within the lease's
-- lifetime on created_at (the BRIN index).
ALTER TABLE billing.usage_reservations ADD COLUMN lease_id uuid;

-- Grants one lease per (tenant, metric) given, of at most p_units[i]
-- units, for p_ttl_ms at most (and never past the day or the billing
-- month). A group whose subscription is missing or inactive, or that is
-- too close to a limit, gets no lease (lease_id NULL, units 0): its calls
-- are decided by reserve_batch. Counter rows are locked in (tenant,
-- metric, day, month) order, as 002 and 003 lock them.
CREATE FUNCTION billing.lease_grant(p_tenants uuid[], p_metrics text[],
	p_units bigint[], p_ids uuid[], p_owner text, p_ttl_ms int)
RETURNS TABLE (ord int, lease_id uuid, units bigint, day_limit bigint,
	month_limit bigint, day_used bigint, month_used bigint,
	expires_in_ms bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
	v_day   timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC')
	                       AT TIME ZONE 'UTC';
	r       record;
	v_dused bigint;
	v_mused bigint;
	v_cap   bigint;
	v_exp   timestamptz;
BEGIN
	IF array_length(p_metrics, 1) IS DISTINCT FROM array_length(p_tenants, 1)
	   OR array_length(p_units, 1) IS DISTINCT FROM array_length(p_tenants, 1)
	   OR array_length(p_ids, 1) IS DISTINCT FROM array_length(p_tenants, 1)
	   OR p_ttl_ms < 1 THEN
		RAISE invalid_parameter_value USING MESSAGE =
			'lease_grant: arrays of different lengths or no ttl';
	END IF;
	PERFORM set_config('parley.tenant_id', '*', true);
	FOR r IN
		SELECT u.i::int AS i, u.t, u.m, u.want, u.id, s.status,
		       CASE u.m WHEN 'messages' THEN p.limit_messages_per_day
		                WHEN 'campaigns' THEN p.limit_campaigns_per_day
		                ELSE -1 END AS dlim,
		       CASE u.m WHEN 'messages' THEN p.limit_messages_per_month
		                WHEN 'campaigns' THEN p.limit_campaigns_per_month
		                ELSE p.limit_ai_tokens_per_month END AS mlim,
		       mp.period_start AS mstart, mp.period_end AS mend
		  FROM unnest(p_tenants, p_metrics, p_units, p_ids)
		       WITH ORDINALITY AS u(t, m, want, id, i)
		  LEFT JOIN billing.subscriptions s ON s.tenant_id = u.t
		  LEFT JOIN billing.plans p ON p.id = s.plan_id
		  LEFT JOIN LATERAL billing.month_period(s.anchor_date, now()) mp
		       ON true
		 ORDER BY u.t, u.m
	LOOP
		ord := r.i;
		lease_id := NULL;
		units := 0;
		day_limit := r.dlim;
		month_limit := r.mlim;
		day_used := NULL;
		month_used := NULL;
		expires_in_ms := 0;
		IF r.status IS NULL OR r.status NOT IN ('trialing', 'active', 'past_due')
		   OR r.want IS NULL OR r.want < 1
		   OR r.m NOT IN ('messages', 'campaigns', 'ai_tokens') THEN
			RETURN NEXT;
			CONTINUE;
		END IF;
		v_dused := NULL;
		IF r.m <> 'ai_tokens' THEN
			INSERT INTO billing.usage_counters (tenant_id, metric,
				period_kind, period_start, used)
			VALUES (r.t, r.m, 'day', v_day, 0)
			ON CONFLICT DO NOTHING;
			SELECT c.used INTO v_dused FROM billing.usage_counters c
			 WHERE c.tenant_id = r.t AND c.metric = r.m
			   AND c.period_kind = 'day' AND c.period_start = v_day
			   FOR UPDATE;
		END IF;
		INSERT INTO billing.usage_counters (tenant_id, metric,
			period_kind, period_start, used)
		VALUES (r.t, r.m, 'month', r.mstart, 0)
		ON CONFLICT DO NOTHING;
		SELECT c.used INTO v_mused FROM billing.usage_counters c
		 WHERE c.tenant_id = r.t AND c.metric = r.m
		   AND c.period_kind = 'month' AND c.period_start = r.mstart
		   FOR UPDATE;
		-- At most an eighth of what each limited period has left (a
		-- soft monthly limit counts as a limit here: past it, 003
		-- computes the overage of every call).
		v_cap := r.want;
		IF v_dused IS NOT NULL AND r.dlim >= 0 THEN
			v_cap := least(v_cap, (r.dlim - v_dused) / 8);
		END IF;
		IF r.mlim >= 0 THEN
			v_cap := least(v_cap, (r.mlim - v_mused) / 8);
		END IF;
		IF v_cap < 1 THEN
			day_used := v_dused;
			month_used := v_mused;
			RETURN NEXT;
			CONTINUE;
		END IF;
		v_exp := least(now() + make_interval(secs => p_ttl_ms / 1000.0),
		               r.mend);
		IF v_dused IS NOT NULL THEN
			v_exp := least(v_exp, v_day + interval '1 day');
			UPDATE billing.usage_counters c SET used = c.used + v_cap
			 WHERE c.tenant_id = r.t AND c.metric = r.m
			   AND c.period_kind = 'day' AND c.period_start = v_day;
			v_dused := v_dused + v_cap;
		END IF;
		UPDATE billing.usage_counters c SET used = c.used + v_cap
		 WHERE c.tenant_id = r.t AND c.metric = r.m
		   AND c.period_kind = 'month' AND c.period_start = r.mstart;
		v_mused := v_mused + v_cap;
		INSERT INTO billing.usage_leases (tenant_id, id, metric,
			day_start, month_start, units, owner, expires_at)
		VALUES (r.t, r.id, r.m, CASE WHEN v_dused IS NOT NULL THEN v_day END,
		        r.mstart, v_cap, p_owner, v_exp);
		lease_id := r.id;
		units := v_cap;
		day_used := v_dused;
		month_used := v_mused;
		expires_in_ms := greatest(floor(extract(epoch FROM v_exp - now())
		                                * 1000), 0)::bigint;
		RETURN NEXT;
	END LOOP;
END
$$;

-- Writes the answers of calls admitted under leases: one row per item,
-- allowed, its remaining values as the replica computed them, the periods
-- of its lease. Returns the items written (gone false) and those whose
-- lease is gone or expired (gone true); an item not returned was not
-- written because its key is already used. Items not written are decided
-- again by reserve_batch.
CREATE FUNCTION billing.reserve_leased(p_tenants uuid[], p_metrics text[],
	p_amounts bigint[], p_keys text[], p_ids uuid[], p_leases uuid[],
	p_rday bigint[], p_rmonth bigint[])
RETURNS TABLE (ord int, gone boolean)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
	PERFORM set_config('parley.tenant_id', '*', true);
	PERFORM pg_advisory_xact_lock_shared(hashtext('billing.usage_leases'), 0);
	RETURN QUERY
	WITH ins AS (
		INSERT INTO billing.usage_reservations AS r (tenant_id, id,
			idempotency_key, metric, amount, allowed, remaining_day,
			remaining_month, overage, day_start, month_start, lease_id)
		SELECT u.t, u.id, u.k, u.m, u.a, true, u.rd, u.rm, 0,
		       l.day_start, l.month_start, l.id
		  FROM unnest(p_tenants, p_metrics, p_amounts, p_keys, p_ids,
		              p_leases, p_rday, p_rmonth)
		       AS u(t, m, a, k, id, lid, rd, rm)
		  JOIN billing.usage_leases l
		    ON l.tenant_id = u.t AND l.id = u.lid AND l.metric = u.m
		   AND l.expires_at > now()
		    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
		RETURNING r.tenant_id, r.idempotency_key)
	SELECT u.i::int, false
	  FROM unnest(p_tenants, p_keys) WITH ORDINALITY AS u(t, k, i)
	  JOIN ins ON ins.tenant_id = u.t AND ins.idempotency_key = u.k;
	RETURN QUERY
	SELECT u.i::int, true
	  FROM unnest(p_tenants, p_leases) WITH ORDINALITY AS u(t, lid, i)
	 WHERE NOT EXISTS (SELECT 1 FROM billing.usage_leases l
	                    WHERE l.tenant_id = u.t AND l.id = u.lid
	                      AND l.expires_at > now());
END
$$;

-- Gives back what the replica did not use of its leases: deletes each
-- lease row and takes its unused units (at most its units) off the day and
-- month counters it was taken from. A lease already returned or reaped is
-- skipped. Returns the number of leases returned.
CREATE FUNCTION billing.lease_return(p_tenants uuid[], p_ids uuid[],
	p_unused bigint[])
RETURNS int
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
	r   record;
	v_n int := 0;
BEGIN
	PERFORM set_config('parley.tenant_id', '*', true);
	FOR r IN
		WITH d AS (
			DELETE FROM billing.usage_leases l
			 USING unnest(p_tenants, p_ids, p_unused) AS x(t, id, unused)
			 WHERE l.tenant_id = x.t AND l.id = x.id
			RETURNING l.tenant_id, l.metric, l.day_start,
			          l.month_start,
			          least(greatest(x.unused, 0), l.units) AS unused)
		SELECT * FROM d ORDER BY d.tenant_id, d.metric
	LOOP
		PERFORM billing.lease_give_back(r.tenant_id, r.metric,
		                                r.day_start, r.month_start,
		                                r.unused);
		v_n := v_n + 1;
	END LOOP;
	RETURN v_n;
END
$$;

CREATE FUNCTION billing.lease_give_back(p_tenant uuid, p_metric text,
	p_day timestamptz, p_month timestamptz, p_unused bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF p_unused <= 0 THEN
		RETURN;
	END IF;
	IF p_day IS NOT NULL THEN
		UPDATE billing.usage_counters c
		   SET used = greatest(c.used - p_unused, 0)
		 WHERE c.tenant_id = p_tenant AND c.metric = p_metric
		   AND c.period_kind = 'day' AND c.period_start = p_day;
	END IF;
	UPDATE billing.usage_counters c
	   SET used = greatest(c.used - p_unused, 0)
	 WHERE c.tenant_id = p_tenant AND c.metric = p_metric
	   AND c.period_kind = 'month' AND c.period_start = p_month;
END
$$;

-- The leases of replicas that did not return them (killed, or stalled past
-- expiry): expired more than p_grace_ms ago (only p_tenant's when given).
-- Their unused units are what their reservations did not use. Returns the
-- number reaped.
CREATE FUNCTION billing.lease_reap(p_tenant uuid, p_grace_ms bigint)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
	r      record;
	v_used bigint;
	v_n    int := 0;
BEGIN
	PERFORM set_config('parley.tenant_id', '*', true);
	IF NOT EXISTS (SELECT 1 FROM billing.usage_leases l
	                WHERE l.expires_at < now() - make_interval(secs => p_grace_ms / 1000.0)
	                  AND (p_tenant IS NULL OR l.tenant_id = p_tenant)) THEN
		RETURN 0;
	END IF;
	-- Every write under a lease holds the shared lock: once this is
	-- granted they have all committed, and later ones find no lease.
	PERFORM pg_advisory_xact_lock(hashtext('billing.usage_leases'), 0);
	FOR r IN
		WITH d AS (
			DELETE FROM billing.usage_leases l
			 WHERE l.expires_at < now() - make_interval(secs => p_grace_ms / 1000.0)
			   AND (p_tenant IS NULL OR l.tenant_id = p_tenant)
			RETURNING l.*)
		SELECT * FROM d ORDER BY d.tenant_id, d.metric
	LOOP
		SELECT coalesce(sum(u.amount), 0) INTO v_used
		  FROM billing.usage_reservations u
		 WHERE u.tenant_id = r.tenant_id AND u.lease_id = r.id
		   AND u.created_at >= r.granted_at
		   AND u.created_at <= r.expires_at;
		PERFORM billing.lease_give_back(r.tenant_id, r.metric,
		                                r.day_start, r.month_start,
		                                greatest(r.units - v_used, 0));
		v_n := v_n + 1;
	END LOOP;
	RETURN v_n;
END
$$;

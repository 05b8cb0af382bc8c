-- billing 003: ReserveUsage in batches (group commit; issue 4's benchmark).
--
-- The service gathers the ReserveUsage calls that arrive while the previous
-- batch runs and decides them all with ONE call of billing.reserve_batch:
-- one round trip and one commit (README "ReserveUsage"). The rules are
-- those of 002, applied to the items in their order as if they had been
-- called one after another:
--
--   * the stored answers of the batch's keys are read first: those items
--     are replays and ask nothing of the counters;
--   * per distinct (tenant, metric) of the other items, one statement reads
--     the subscription and plan limits and locks the day and month counter
--     rows (created first when missing), in (tenant, metric, period_kind)
--     order: concurrent batches (other replicas) and the one-call function
--     of 002 (day then month of one tenant) lock in the same order;
--   * fast path: no key stored, no key twice, and every group's total fits
--     its limits: everything is admitted, running sums per group give each
--     item its remaining day/month and overage (one UPDATE, one INSERT);
--   * otherwise the items are decided one after another against the
--     locked values: a hot tenant's reservations are admitted in order
--     until its limit; an item whose (tenant, key) appeared earlier in the
--     batch (p_dup: the 1-based index of that earlier item) is answered as
--     a replay of it, exactly as a retry after it would be;
--   * a key taken meanwhile by a call that did not wait on these locks (a
--     refusal of 002 takes none) makes the reservations' INSERT fail with
--     unique_violation: the whole batch is rolled back, counters included,
--     and the service runs it again (it then replays).
--
-- The batch crosses tenants, so it sets the '*' tenant for row-level
-- security, as DeliverEvents and the periodic job do; it touches only the
-- rows of the (tenant, key) pairs it is given.

CREATE FUNCTION billing.reserve_batch(p_tenants uuid[], p_metrics text[],
	p_amounts bigint[], p_keys text[], p_ids uuid[], p_dup int[],
	p_emit_refusal boolean)
RETURNS TABLE (ord int, outcome text, reservation_id uuid,
	remaining_day bigint, remaining_month bigint, overage bigint,
	replayed boolean, refusal text, day_limit bigint, month_limit bigint)
LANGUAGE plpgsql
-- Every statement below reads or writes a few rows by primary key; on a
-- small table the planner would rather hash a sequential scan. Generic
-- plans: each connection plans these statements once, not on every call
-- (the batch leader's connection changes from batch to batch).
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
	n          int := coalesce(array_length(p_tenants, 1), 0);
	v_day      timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC')
	                          AT TIME ZONE 'UTC';
	-- Groups: one per distinct (tenant, metric), in (tenant, metric)
	-- order (the order their counter rows are locked in).
	g_n        int;
	g_t        uuid[];
	g_m        text[];
	g_status   text[];
	g_dlim     bigint[];
	g_mlim     bigint[];
	g_over     bigint[];
	g_mstart   timestamptz[];
	g_dused    bigint[];
	g_mused    bigint[];
	g_dadd     bigint[];
	g_madd     bigint[];
	grp        int[];
	-- Counter rows to add to: (tenant, metric, kind, start, amount).
	k_n        int;
	k_t        uuid[];
	k_m        text[];
	k_kind     text[];
	k_start    timestamptz[];
	k_add      bigint[];
	-- Stored answers of the batch's keys (index: item).
	s_found    boolean[];
	s_metric   text[];
	s_amount   bigint[];
	s_allowed  boolean[];
	s_id       uuid[];
	s_rday     bigint[];
	s_rmon     bigint[];
	s_over     bigint[];
	s_refusal  text[];
	-- Answers (index: item).
	o_outcome  text[];
	o_id       uuid[];
	o_rday     bigint[];
	o_rmon     bigint[];
	o_over     bigint[];
	o_repl     boolean[];
	o_refusal  text[];
	o_dlim     bigint[];
	o_mlim     bigint[];
	o_store    boolean[];
	o_dstart   timestamptz[];
	o_mstart   timestamptz[];
	r          record;
	gi         int;
	j          int;
	v_has_day  boolean;
	v_amt      bigint;
	v_missing  boolean;
	v_fast     boolean;
	v_stored   boolean := false;
BEGIN
	IF n = 0 THEN
		RETURN;
	END IF;
	IF array_length(p_metrics, 1) IS DISTINCT FROM n
	   OR array_length(p_amounts, 1) IS DISTINCT FROM n
	   OR array_length(p_keys, 1) IS DISTINCT FROM n
	   OR array_length(p_ids, 1) IS DISTINCT FROM n
	   OR array_length(p_dup, 1) IS DISTINCT FROM n THEN
		RAISE invalid_parameter_value USING MESSAGE =
			'reserve_batch: arrays of different lengths';
	END IF;
	PERFORM set_config('parley.tenant_id', '*', true);

	-- Stored answers: those items are replays and ask nothing of the
	-- counters. (A call with the same key committing after this read
	-- makes the reservations' INSERT below fail: the batch is run again.)
	FOR r IN SELECT x.i::int AS i, u.metric, u.amount, u.allowed, u.id,
	                u.remaining_day, u.remaining_month, u.overage,
	                u.refusal
	           FROM unnest(p_tenants, p_keys) WITH ORDINALITY AS x(t, key, i)
	           JOIN billing.usage_reservations u
	             ON u.tenant_id = x.t AND u.idempotency_key = x.key
	LOOP
		IF NOT v_stored THEN
			s_found := array_fill(false, ARRAY[n]);
			v_stored := true;
		END IF;
		s_found[r.i] := true;
		s_metric[r.i] := r.metric;
		s_amount[r.i] := r.amount;
		s_allowed[r.i] := r.allowed;
		s_id[r.i] := r.id;
		s_rday[r.i] := r.remaining_day;
		s_rmon[r.i] := r.remaining_month;
		s_over[r.i] := r.overage;
		s_refusal[r.i] := r.refusal;
	END LOOP;

	-- Per group: subscription, limits, billing month, and the counter
	-- rows of an active subscription, locked in (tenant, metric, day,
	-- month) order. Missing counter rows are created, then locked.
	FOR attempt IN 1 .. 2 LOOP
		g_n := 0;
		k_n := 0;
		v_missing := false;
		v_fast := true;
		FOR r IN
			SELECT q.t, q.m, q.total, sp.status, sp.dlim, sp.mlim,
			       sp.over, sp.mstart, cd.used AS dused,
			       cm.used AS mused
			  FROM (SELECT u.t, u.m, sum(u.a)::bigint AS total
			          FROM unnest(p_tenants, p_metrics, p_amounts)
			               WITH ORDINALITY AS u(t, m, a, i)
			         WHERE NOT v_stored OR NOT s_found[u.i]
			         GROUP BY u.t, u.m
			         ORDER BY u.t, u.m
			        OFFSET 0) q
			  LEFT JOIN LATERAL (
				SELECT s.status,
				       CASE q.m WHEN 'messages' THEN p.limit_messages_per_day
				                WHEN 'campaigns' THEN p.limit_campaigns_per_day
				                ELSE -1 END AS dlim,
				       CASE q.m WHEN 'messages' THEN p.limit_messages_per_month
				                WHEN 'campaigns' THEN p.limit_campaigns_per_month
				                ELSE p.limit_ai_tokens_per_month END AS mlim,
				       CASE q.m WHEN 'messages' THEN p.overage_messages_per_1000
				                WHEN 'campaigns' THEN p.overage_campaigns_per_1000
				                ELSE p.overage_ai_tokens_per_1000 END AS over,
				       billing.month_start(s.anchor_date, now()) AS mstart
				  FROM billing.subscriptions s
				  JOIN billing.plans p ON p.id = s.plan_id
				 WHERE s.tenant_id = q.t
				OFFSET 0) sp ON true
			  LEFT JOIN LATERAL (
				SELECT c.used FROM billing.usage_counters c
				 WHERE c.tenant_id = q.t AND c.metric = q.m
				   AND c.period_kind = 'day' AND c.period_start = v_day
				   AND q.m <> 'ai_tokens'
				   AND sp.status IN ('trialing', 'active', 'past_due')
				   FOR UPDATE) cd ON true
			  LEFT JOIN LATERAL (
				SELECT c.used FROM billing.usage_counters c
				 WHERE c.tenant_id = q.t AND c.metric = q.m
				   AND c.period_kind = 'month'
				   AND c.period_start = sp.mstart
				   AND sp.status IN ('trialing', 'active', 'past_due')
				   FOR UPDATE) cm ON true
		LOOP
			g_n := g_n + 1;
			g_t[g_n] := r.t;
			g_m[g_n] := r.m;
			g_status[g_n] := r.status;
			g_dlim[g_n] := r.dlim;
			g_mlim[g_n] := r.mlim;
			g_over[g_n] := r.over;
			g_mstart[g_n] := r.mstart;
			g_dused[g_n] := coalesce(r.dused, 0);
			g_mused[g_n] := coalesce(r.mused, 0);
			IF r.status IN ('trialing', 'active', 'past_due') THEN
				IF (r.m <> 'ai_tokens' AND r.dused IS NULL)
				   OR r.mused IS NULL THEN
					v_missing := true;
				END IF;
				IF r.m <> 'ai_tokens' THEN
					k_n := k_n + 1;
					k_t[k_n] := r.t;
					k_m[k_n] := r.m;
					k_kind[k_n] := 'day';
					k_start[k_n] := v_day;
					k_add[k_n] := r.total;
				END IF;
				k_n := k_n + 1;
				k_t[k_n] := r.t;
				k_m[k_n] := r.m;
				k_kind[k_n] := 'month';
				k_start[k_n] := r.mstart;
				k_add[k_n] := r.total;
				-- Fast path: everything the batch asks of this
				-- group fits.
				v_fast := v_fast
				      AND (r.m = 'ai_tokens' OR r.dlim < 0
				           OR r.dused + r.total <= r.dlim)
				      AND (r.mlim < 0 OR r.over IS NOT NULL
				           OR r.mused + r.total <= r.mlim);
			ELSE
				v_fast := false;
			END IF;
		END LOOP;
		EXIT WHEN NOT v_missing;
		IF attempt = 2 THEN
			RAISE object_not_in_prerequisite_state USING MESSAGE =
				'reserve_batch: counter rows vanished';
		END IF;
		INSERT INTO billing.usage_counters (tenant_id, metric,
			period_kind, period_start, used)
		SELECT x.t, x.m, k.kind,
		       CASE k.kind WHEN 'day' THEN v_day ELSE x.ms END, 0
		  FROM unnest(g_t[1:g_n], g_m[1:g_n], g_status[1:g_n],
		              g_mstart[1:g_n]) AS x(t, m, st, ms)
		 CROSS JOIN (VALUES ('day'), ('month')) AS k(kind)
		 WHERE x.st IN ('trialing', 'active', 'past_due')
		   AND (k.kind = 'month' OR x.m <> 'ai_tokens')
		 ORDER BY x.t, x.m, k.kind
		ON CONFLICT DO NOTHING;
	END LOOP;

	IF v_fast AND NOT v_stored AND 0 = ALL (p_dup) THEN
		-- Every item is new and admitted: running sums per group give
		-- each its remaining day/month and overage.
		UPDATE billing.usage_counters c SET used = c.used + x.add
		  FROM unnest(k_t[1:k_n], k_m[1:k_n], k_kind[1:k_n],
		              k_start[1:k_n], k_add[1:k_n])
		       AS x(t, m, kind, start, add)
		 WHERE c.tenant_id = x.t AND c.metric = x.m
		   AND c.period_kind = x.kind AND c.period_start = x.start;
		RETURN QUERY
		WITH y AS (
			SELECT u.i::int AS i, u.t, u.m, u.a, u.key, u.id, g.dlim,
			       g.mlim, g.over, g.ms, u.m <> 'ai_tokens' AS has_day,
			       g.du + (sum(u.a) OVER w)::bigint AS dafter,
			       g.mu + (sum(u.a) OVER w)::bigint AS mafter
			  FROM unnest(p_tenants, p_metrics, p_amounts, p_keys, p_ids)
			       WITH ORDINALITY AS u(t, m, a, key, id, i)
			  JOIN unnest(g_t[1:g_n], g_m[1:g_n], g_dlim[1:g_n],
			              g_mlim[1:g_n], g_over[1:g_n],
			              g_mstart[1:g_n], g_dused[1:g_n],
			              g_mused[1:g_n])
			       AS g(t, m, dlim, mlim, over, ms, du, mu)
			    ON g.t = u.t AND g.m = u.m
			WINDOW w AS (PARTITION BY u.t, u.m ORDER BY u.i)),
		z AS (
			SELECT y.*,
			       CASE WHEN NOT y.has_day OR y.dlim < 0 THEN -1
			            ELSE greatest(y.dlim - y.dafter, 0) END AS rday,
			       CASE WHEN y.mlim < 0 THEN -1
			            ELSE greatest(y.mlim - y.mafter, 0) END AS rmon,
			       CASE WHEN y.over IS NOT NULL AND y.mlim >= 0
			            THEN greatest(y.mafter - y.mlim, 0)
			               - greatest(y.mafter - y.a - y.mlim, 0)
			            ELSE 0 END AS ov
			  FROM y),
		ins AS (
			INSERT INTO billing.usage_reservations (tenant_id, id,
				idempotency_key, metric, amount, allowed, refusal,
				remaining_day, remaining_month, overage, day_start,
				month_start)
			SELECT z.t, z.id, z.key, z.m, z.a, true, '', z.rday,
			       z.rmon, z.ov,
			       CASE WHEN z.has_day THEN v_day END, z.ms
			  FROM z)
		SELECT z.i, 'ok'::text, z.id, z.rday, z.rmon, z.ov, false,
		       ''::text, z.dlim, z.mlim
		  FROM z;
		RETURN;
	END IF;

	-- The general case, item after item: replays, refusals, a limit
	-- reached inside the batch.
	SELECT array_agg(g.k::int ORDER BY u.i) INTO grp
	  FROM unnest(p_tenants, p_metrics) WITH ORDINALITY AS u(t, m, i)
	  LEFT JOIN unnest(g_t[1:g_n], g_m[1:g_n]) WITH ORDINALITY AS g(t, m, k)
	    ON g.t = u.t AND g.m = u.m;
	IF NOT v_stored THEN
		s_found := array_fill(false, ARRAY[n]);
	END IF;
	g_dadd := array_fill(0::bigint, ARRAY[g_n]);
	g_madd := array_fill(0::bigint, ARRAY[g_n]);
	o_store := array_fill(false, ARRAY[n]);
	o_repl := array_fill(false, ARRAY[n]);
	FOR i IN 1 .. n LOOP
		gi := grp[i];
		j := p_dup[i];
		IF j IS NOT NULL AND j > 0 AND (j >= i
		   OR p_tenants[j] <> p_tenants[i] OR p_keys[j] <> p_keys[i]) THEN
			RAISE invalid_parameter_value USING MESSAGE =
				'reserve_batch: p_dup names another key';
		END IF;
		IF s_found[i] THEN
			o_outcome[i] := CASE WHEN s_metric[i] <> p_metrics[i]
			                       OR s_amount[i] <> p_amounts[i]
			                     THEN 'conflict'
			                     WHEN s_allowed[i] THEN 'ok'
			                     ELSE 'exhausted' END;
			o_id[i] := s_id[i];
			o_rday[i] := s_rday[i];
			o_rmon[i] := s_rmon[i];
			o_over[i] := s_over[i];
			o_refusal[i] := s_refusal[i];
			o_repl[i] := true;
		ELSIF j > 0 AND o_store[j] THEN
			-- The same (tenant, key) earlier in this batch: what a
			-- retry after it would be answered.
			o_outcome[i] := CASE WHEN p_metrics[j] <> p_metrics[i]
			                       OR p_amounts[j] <> p_amounts[i]
			                     THEN 'conflict'
			                     ELSE o_outcome[j] END;
			o_id[i] := o_id[j];
			o_rday[i] := o_rday[j];
			o_rmon[i] := o_rmon[j];
			o_over[i] := o_over[j];
			o_refusal[i] := o_refusal[j];
			o_repl[i] := true;
		ELSIF g_status[gi] IS NULL THEN
			o_outcome[i] := 'no_subscription';
		ELSIF g_status[gi] NOT IN ('trialing', 'active', 'past_due') THEN
			o_outcome[i] := 'inactive';
			o_refusal[i] := g_status[gi];
		ELSE
			v_has_day := p_metrics[i] <> 'ai_tokens';
			v_amt := p_amounts[i];
			o_dlim[i] := g_dlim[gi];
			o_mlim[i] := g_mlim[gi];
			o_outcome[i] := 'ok';
			o_refusal[i] := '';
			IF v_has_day AND g_dlim[gi] >= 0
			   AND v_amt > g_dlim[gi] - g_dused[gi] THEN
				o_outcome[i] := 'exhausted';
				o_refusal[i] := p_metrics[i] || '_per_day';
			ELSIF g_mlim[gi] >= 0 AND g_over[gi] IS NULL
			      AND v_amt > g_mlim[gi] - g_mused[gi] THEN
				o_outcome[i] := 'exhausted';
				o_refusal[i] := p_metrics[i] || '_per_month';
			END IF;
			o_over[i] := 0;
			IF o_outcome[i] = 'ok' THEN
				IF v_has_day THEN
					g_dused[gi] := g_dused[gi] + v_amt;
					g_dadd[gi] := g_dadd[gi] + v_amt;
					o_dstart[i] := v_day;
				END IF;
				g_mused[gi] := g_mused[gi] + v_amt;
				g_madd[gi] := g_madd[gi] + v_amt;
				o_mstart[i] := g_mstart[gi];
				IF g_over[gi] IS NOT NULL AND g_mlim[gi] >= 0 THEN
					o_over[i] := greatest(g_mused[gi] - g_mlim[gi], 0)
					           - greatest(g_mused[gi] - v_amt
					                      - g_mlim[gi], 0);
				END IF;
			END IF;
			o_rday[i] := CASE WHEN NOT v_has_day OR g_dlim[gi] < 0
			                  THEN -1
			                  ELSE greatest(g_dlim[gi] - g_dused[gi], 0)
			             END;
			o_rmon[i] := CASE WHEN g_mlim[gi] < 0 THEN -1
			                  ELSE greatest(g_mlim[gi] - g_mused[gi], 0)
			             END;
			o_id[i] := p_ids[i];
			o_store[i] := true;
		END IF;
	END LOOP;

	k_n := 0;
	FOR k IN 1 .. g_n LOOP
		IF g_dadd[k] <> 0 THEN
			k_n := k_n + 1;
			k_t[k_n] := g_t[k];
			k_m[k_n] := g_m[k];
			k_kind[k_n] := 'day';
			k_start[k_n] := v_day;
			k_add[k_n] := g_dadd[k];
		END IF;
		IF g_madd[k] <> 0 THEN
			k_n := k_n + 1;
			k_t[k_n] := g_t[k];
			k_m[k_n] := g_m[k];
			k_kind[k_n] := 'month';
			k_start[k_n] := g_mstart[k];
			k_add[k_n] := g_madd[k];
		END IF;
	END LOOP;
	IF k_n > 0 THEN
		UPDATE billing.usage_counters c SET used = c.used + x.add
		  FROM unnest(k_t[1:k_n], k_m[1:k_n], k_kind[1:k_n],
		              k_start[1:k_n], k_add[1:k_n])
		       AS x(t, m, kind, start, add)
		 WHERE c.tenant_id = x.t AND c.metric = x.m
		   AND c.period_kind = x.kind AND c.period_start = x.start;
	END IF;

	-- The answers, written once. A key taken meanwhile by a call that did
	-- not wait on our locks fails here (unique_violation): everything is
	-- rolled back and the service runs the batch again, which replays it.
	INSERT INTO billing.usage_reservations (tenant_id, id,
		idempotency_key, metric, amount, allowed, refusal,
		remaining_day, remaining_month, overage, day_start, month_start)
	SELECT p_tenants[x.i], p_ids[x.i], p_keys[x.i], p_metrics[x.i],
	       p_amounts[x.i], o_outcome[x.i] = 'ok', o_refusal[x.i],
	       o_rday[x.i], o_rmon[x.i], o_over[x.i], o_dstart[x.i],
	       o_mstart[x.i]
	  FROM unnest(o_store) WITH ORDINALITY AS x(store, i)
	 WHERE x.store;
	IF p_emit_refusal THEN
		INSERT INTO billing.outbox (id, destination, tenant_id, type,
			payload)
		SELECT p_ids[x.i], 'analytics', p_tenants[x.i], 'usage.refused',
		       jsonb_build_object('metric', p_metrics[x.i],
		                          'amount', p_amounts[x.i],
		                          'limit', o_refusal[x.i])
		  FROM unnest(o_store) WITH ORDINALITY AS x(store, i)
		 WHERE x.store AND o_outcome[x.i] = 'exhausted';
	END IF;

	RETURN QUERY
	SELECT x.i::int, o_outcome[x.i], o_id[x.i], o_rday[x.i], o_rmon[x.i],
	       o_over[x.i], o_repl[x.i], o_refusal[x.i], o_dlim[x.i],
	       o_mlim[x.i]
	  FROM generate_series(1, n) AS x(i);
END
$$;

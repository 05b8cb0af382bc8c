-- billing 003: ReserveUsage in batches (group commit; issue 4's benchmark).
--
-- The service gathers the ReserveUsage calls that arrive while the previous
-- batch runs and decides them all with ONE call of billing.reserve_batch,
-- one round trip and one commit (README "ReserveUsage"). The rules are
-- those of 002, applied to the items in their order as if they had been
-- called one after another:
--
--   * every counter row the batch may change is locked first, in one
--     statement, in (tenant, metric, period_kind) order: concurrent batches
--     (other replicas) and the one-call function (002, which locks day then
--     month of one tenant) take them in the same order;
--   * then the stored answers of the batch's keys are read (under those
--     locks a concurrent call with the same key has committed, so it is
--     seen);
--   * the items are decided in order against the locked values: a hot
--     tenant's reservations are admitted one after another until its limit;
--     an item whose (tenant, key) appeared earlier in the batch is answered
--     as a replay of that earlier one (p_dup), exactly as a retry after it;
--   * the counters get one UPDATE per row, the reservations one INSERT; if a
--     key was nevertheless taken meanwhile (a racer that never locked the
--     counters, e.g. a refusal of 002), the whole batch is rolled back with
--     unique_violation and the service runs it again (it then replays).
--
-- The batch crosses tenants, so it sets the '*' tenant for row-level
-- security, as DeliverEvents and the periodic job do; it touches only the
-- rows of the (tenant, key) pairs it is given.

CREATE FUNCTION billing.reserve_batch(p_tenants uuid[], p_metrics text[],
	p_amounts bigint[], p_keys text[], p_ids uuid[], p_group int[],
	p_dup int[], p_emit_refusal boolean)
RETURNS TABLE (ord int, outcome text, reservation_id uuid,
	remaining_day bigint, remaining_month bigint, overage bigint,
	replayed boolean, refusal text, day_limit bigint, month_limit bigint)
LANGUAGE plpgsql AS $$
DECLARE
	n          int := coalesce(array_length(p_tenants, 1), 0);
	v_day      timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC')
	                          AT TIME ZONE 'UTC';
	-- Groups: one per distinct (tenant, metric), numbered by the caller
	-- (p_group) from 1 in order of first appearance.
	g_t        uuid[] := '{}';
	g_m        text[] := '{}';
	g_n        int := 0;
	g_status   text[];
	g_dlim     bigint[];
	g_mlim     bigint[];
	g_over     bigint[];
	g_mstart   timestamptz[];
	g_dhave    boolean[];
	g_mhave    boolean[];
	g_dused    bigint[];
	g_mused    bigint[];
	g_dadd     bigint[];
	g_madd     bigint[];
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
	k_n        int := 0;
	k_g        int[] := '{}';
	k_t        uuid[] := '{}';
	k_m        text[] := '{}';
	k_kind     text[] := '{}';
	k_start    timestamptz[] := '{}';
	k_add      bigint[] := '{}';
	r          record;
	gi         int;
	j          int;
	v_has_day  boolean;
	v_amt      bigint;
	v_cnt      int;
	v_stored   int := 0;
	v_missing  boolean := false;
BEGIN
	IF n = 0 THEN
		RETURN;
	END IF;
	IF array_length(p_metrics, 1) IS DISTINCT FROM n
	   OR array_length(p_amounts, 1) IS DISTINCT FROM n
	   OR array_length(p_keys, 1) IS DISTINCT FROM n
	   OR array_length(p_ids, 1) IS DISTINCT FROM n
	   OR array_length(p_group, 1) IS DISTINCT FROM n
	   OR array_length(p_dup, 1) IS DISTINCT FROM n THEN
		RAISE invalid_parameter_value USING MESSAGE =
			'reserve_batch: arrays of different lengths';
	END IF;
	PERFORM set_config('parley.tenant_id', '*', true);

	FOR i IN 1 .. n LOOP
		gi := p_group[i];
		IF gi IS NULL OR gi < 1 OR gi > g_n + 1 THEN
			RAISE invalid_parameter_value USING MESSAGE =
				'reserve_batch: bad group number';
		END IF;
		IF gi > g_n THEN
			g_n := gi;
			g_t[gi] := p_tenants[i];
			g_m[gi] := p_metrics[i];
		ELSIF g_t[gi] <> p_tenants[i] OR g_m[gi] <> p_metrics[i] THEN
			RAISE invalid_parameter_value USING MESSAGE =
				'reserve_batch: group of another tenant or metric';
		END IF;
	END LOOP;

	-- Subscriptions, limits, billing month and whether the counter rows
	-- exist (an unlocked look: only to create the missing ones).
	SELECT array_agg(s.status ORDER BY g.i),
	       array_agg(CASE g.m WHEN 'messages' THEN p.limit_messages_per_day
	                          WHEN 'campaigns' THEN p.limit_campaigns_per_day
	                          ELSE -1 END ORDER BY g.i),
	       array_agg(CASE g.m WHEN 'messages' THEN p.limit_messages_per_month
	                          WHEN 'campaigns' THEN p.limit_campaigns_per_month
	                          ELSE p.limit_ai_tokens_per_month END
	                 ORDER BY g.i),
	       array_agg(CASE g.m WHEN 'messages' THEN p.overage_messages_per_1000
	                          WHEN 'campaigns' THEN p.overage_campaigns_per_1000
	                          ELSE p.overage_ai_tokens_per_1000 END
	                 ORDER BY g.i),
	       array_agg(billing.month_start(s.anchor_date, now()) ORDER BY g.i),
	       array_agg(EXISTS (SELECT 1 FROM billing.usage_counters c
	                          WHERE c.tenant_id = g.t AND c.metric = g.m
	                            AND c.period_kind = 'day'
	                            AND c.period_start = v_day) ORDER BY g.i),
	       array_agg(EXISTS (SELECT 1 FROM billing.usage_counters c
	                          WHERE c.tenant_id = g.t AND c.metric = g.m
	                            AND c.period_kind = 'month'
	                            AND c.period_start =
	                                billing.month_start(s.anchor_date, now()))
	                 ORDER BY g.i)
	  INTO g_status, g_dlim, g_mlim, g_over, g_mstart, g_dhave, g_mhave
	  FROM unnest(g_t, g_m) WITH ORDINALITY AS g(t, m, i)
	  LEFT JOIN billing.subscriptions s ON s.tenant_id = g.t
	  LEFT JOIN billing.plans p ON p.id = s.plan_id;

	-- The counter rows of active subscriptions: created when missing,
	-- then locked in (tenant, metric, period_kind) order.
	FOR k IN 1 .. g_n LOOP
		IF g_status[k] IN ('trialing', 'active', 'past_due') THEN
			IF g_m[k] <> 'ai_tokens' THEN
				k_n := k_n + 1;
				k_g[k_n] := k;
				k_t[k_n] := g_t[k];
				k_m[k_n] := g_m[k];
				k_kind[k_n] := 'day';
				k_start[k_n] := v_day;
				v_missing := v_missing OR NOT g_dhave[k];
			END IF;
			k_n := k_n + 1;
			k_g[k_n] := k;
			k_t[k_n] := g_t[k];
			k_m[k_n] := g_m[k];
			k_kind[k_n] := 'month';
			k_start[k_n] := g_mstart[k];
			v_missing := v_missing OR NOT g_mhave[k];
		END IF;
	END LOOP;
	IF v_missing THEN
		INSERT INTO billing.usage_counters (tenant_id, metric,
			period_kind, period_start, used)
		SELECT x.t, x.m, x.kind, x.start, 0
		  FROM unnest(k_t, k_m, k_kind, k_start) AS x(t, m, kind, start)
		 ORDER BY x.t, x.m, x.kind
		ON CONFLICT DO NOTHING;
	END IF;
	g_dused := array_fill(0::bigint, ARRAY[g_n]);
	g_mused := array_fill(0::bigint, ARRAY[g_n]);
	g_dadd := array_fill(0::bigint, ARRAY[g_n]);
	g_madd := array_fill(0::bigint, ARRAY[g_n]);
	IF k_n > 0 THEN
		FOR r IN SELECT x.g, c.period_kind, c.used
		           FROM billing.usage_counters c
		           JOIN unnest(k_g, k_t, k_m, k_kind, k_start)
		                AS x(g, t, m, kind, start)
		             ON c.tenant_id = x.t AND c.metric = x.m
		            AND c.period_kind = x.kind
		            AND c.period_start = x.start
		          ORDER BY c.tenant_id, c.metric, c.period_kind
		            FOR UPDATE OF c
		LOOP
			IF r.period_kind = 'day' THEN
				g_dused[r.g] := r.used;
			ELSE
				g_mused[r.g] := r.used;
			END IF;
		END LOOP;
	END IF;

	-- Stored answers (read under the counter locks).
	s_found := array_fill(false, ARRAY[n]);
	FOR r IN SELECT x.i::int AS i, u.metric, u.amount, u.allowed, u.id,
	                u.remaining_day, u.remaining_month, u.overage,
	                u.refusal
	           FROM unnest(p_tenants, p_keys) WITH ORDINALITY AS x(t, key, i)
	           JOIN billing.usage_reservations u
	             ON u.tenant_id = x.t AND u.idempotency_key = x.key
	LOOP
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

	-- The decisions, item after item.
	o_store := array_fill(false, ARRAY[n]);
	o_repl := array_fill(false, ARRAY[n]);
	FOR i IN 1 .. n LOOP
		gi := p_group[i];
		j := p_dup[i];
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
		ELSIF j IS NOT NULL AND j > 0 AND j < i AND o_store[j] THEN
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
			v_stored := v_stored + 1;
		END IF;
	END LOOP;

	-- One UPDATE for the counters that moved.
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
	-- not wait on our locks: everything is rolled back and the service
	-- runs the batch again, which then replays it.
	IF v_stored > 0 THEN
		INSERT INTO billing.usage_reservations (tenant_id, id,
			idempotency_key, metric, amount, allowed, refusal,
			remaining_day, remaining_month, overage, day_start,
			month_start)
		SELECT p_tenants[x.i], p_ids[x.i], p_keys[x.i], p_metrics[x.i],
		       p_amounts[x.i], o_outcome[x.i] = 'ok', o_refusal[x.i],
		       o_rday[x.i], o_rmon[x.i], o_over[x.i], o_dstart[x.i],
		       o_mstart[x.i]
		  FROM unnest(o_store) WITH ORDINALITY AS x(store, i)
		 WHERE x.store
		ON CONFLICT (tenant_id, idempotency_key) DO NOTHING;
		GET DIAGNOSTICS v_cnt = ROW_COUNT;
		IF v_cnt <> v_stored THEN
			RAISE unique_violation USING MESSAGE =
				'reserve_batch: an idempotency key was taken '
				'concurrently';
		END IF;
		IF p_emit_refusal THEN
			INSERT INTO billing.outbox (id, destination, tenant_id,
				type, payload)
			SELECT p_ids[x.i], 'analytics', p_tenants[x.i],
			       'usage.refused',
			       jsonb_build_object('metric', p_metrics[x.i],
			                          'amount', p_amounts[x.i],
			                          'limit', o_refusal[x.i])
			  FROM unnest(o_store) WITH ORDINALITY AS x(store, i)
			 WHERE x.store AND o_outcome[x.i] = 'exhausted';
		END IF;
	END IF;

	RETURN QUERY
	SELECT x.i::int, o_outcome[x.i], o_id[x.i], o_rday[x.i], o_rmon[x.i],
	       o_over[x.i], o_repl[x.i], o_refusal[x.i], o_dlim[x.i],
	       o_mlim[x.i]
	  FROM generate_series(1, n) AS x(i);
END
$$;

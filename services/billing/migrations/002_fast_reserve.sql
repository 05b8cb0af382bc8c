-- billing 002: a cheaper ReserveUsage (issue 4's benchmark). The rules are
-- those of 001 (README "ReserveUsage"); what changes is the work per call:
--
--   * the billing month's start is an inlinable SQL expression
--     (billing.month_start) computed in the subscription lookup, instead of
--     a nested plpgsql call;
--   * the same lookup reads the day and month counters without locking
--     them: a request that the committed counters already refuse is
--     answered from them, without waiting for the counter row locks (a
--     hot tenant past its limit no longer queues on its counter rows);
--     anything that may be allowed still goes through the locking upsert,
--     which alone decides admissions;
--   * the reservation row is written once, last, with its final answer (no
--     insert-then-update). A key already used makes that INSERT fail with
--     unique_violation, which rolls the whole statement back (counter
--     increments included, never seen by anyone: their row locks are held
--     to the end); the caller then reads the stored answer with
--     billing.reserve_replay. Replays cost a second round trip; first
--     calls, the common case, cost one.

-- The start of the billing month containing p_at (billing.month_period's
-- period_start), as one expression so the planner inlines it: no function
-- call per row. Not STRICT on purpose (a STRICT SQL function whose body has
-- a CASE is not inlined); NULL in gives NULL out all the same.
CREATE FUNCTION billing.month_start(p_anchor date, p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT (CASE
		WHEN p_anchor + make_interval(months =>
			(extract(year FROM p_at AT TIME ZONE 'UTC')::int
			 - extract(year FROM p_anchor)::int) * 12
			+ extract(month FROM p_at AT TIME ZONE 'UTC')::int
			- extract(month FROM p_anchor)::int)
		     > p_at AT TIME ZONE 'UTC'
		THEN p_anchor + make_interval(months =>
			(extract(year FROM p_at AT TIME ZONE 'UTC')::int
			 - extract(year FROM p_anchor)::int) * 12
			+ extract(month FROM p_at AT TIME ZONE 'UTC')::int
			- extract(month FROM p_anchor)::int - 1)
		ELSE p_anchor + make_interval(months =>
			(extract(year FROM p_at AT TIME ZONE 'UTC')::int
			 - extract(year FROM p_anchor)::int) * 12
			+ extract(month FROM p_at AT TIME ZONE 'UTC')::int
			- extract(month FROM p_anchor)::int)
		END) AT TIME ZONE 'UTC'
$$;

-- ReserveUsage in one round trip; same outcomes and result columns as 001.
-- A key that was already used raises unique_violation (SQLSTATE 23505) and
-- changes nothing: the caller answers with billing.reserve_replay.
CREATE OR REPLACE FUNCTION billing.reserve_usage(p_tenant uuid,
	p_metric text, p_amount bigint, p_key text, p_id uuid,
	p_emit_refusal boolean)
RETURNS TABLE (outcome text, reservation_id uuid, remaining_day bigint,
	remaining_month bigint, overage bigint, replayed boolean,
	refusal text, day_limit bigint, month_limit bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_status      text;
	v_day_lim     bigint;
	v_month_lim   bigint;
	v_over_price  bigint;
	v_has_day     boolean := p_metric <> 'ai_tokens';
	v_day_start   timestamptz;
	v_month_start timestamptz;
	v_day_used    bigint;
	v_month_used  bigint;
BEGIN
	PERFORM set_config('parley.tenant_id', p_tenant::text, true);
	-- Subscription, plan limits, periods and the committed counters in
	-- one statement. The counters are read without locks: they only
	-- decide refusals (a refusal as of this snapshot is a correct answer;
	-- an admission is decided below under the row locks).
	SELECT s.status,
	       CASE p_metric WHEN 'messages' THEN p.limit_messages_per_day
	                     WHEN 'campaigns' THEN p.limit_campaigns_per_day
	                     ELSE -1 END,
	       CASE p_metric WHEN 'messages' THEN p.limit_messages_per_month
	                     WHEN 'campaigns' THEN p.limit_campaigns_per_month
	                     ELSE p.limit_ai_tokens_per_month END,
	       CASE p_metric WHEN 'messages' THEN p.overage_messages_per_1000
	                     WHEN 'campaigns' THEN p.overage_campaigns_per_1000
	                     ELSE p.overage_ai_tokens_per_1000 END,
	       d.start, m.start,
	       coalesce((SELECT c.used FROM billing.usage_counters c
	                  WHERE c.tenant_id = p_tenant AND c.metric = p_metric
	                    AND c.period_kind = 'day'
	                    AND c.period_start = d.start), 0),
	       coalesce((SELECT c.used FROM billing.usage_counters c
	                  WHERE c.tenant_id = p_tenant AND c.metric = p_metric
	                    AND c.period_kind = 'month'
	                    AND c.period_start = m.start), 0)
	  INTO v_status, v_day_lim, v_month_lim, v_over_price, v_day_start,
	       v_month_start, v_day_used, v_month_used
	  FROM billing.subscriptions s
	  JOIN billing.plans p ON p.id = s.plan_id
	 CROSS JOIN LATERAL (SELECT date_trunc('day', now() AT TIME ZONE 'UTC')
	                            AT TIME ZONE 'UTC' AS start) d
	 CROSS JOIN LATERAL (SELECT billing.month_start(s.anchor_date, now())
	                            AS start) m
	 WHERE s.tenant_id = p_tenant;
	IF NOT FOUND OR v_status NOT IN ('trialing', 'active', 'past_due') THEN
		-- Stores nothing (a retry after tenant.created can succeed),
		-- but a key already used keeps its stored answer.
		IF EXISTS (SELECT 1 FROM billing.usage_reservations r
		            WHERE r.tenant_id = p_tenant
		              AND r.idempotency_key = p_key) THEN
			RAISE unique_violation USING MESSAGE =
				'idempotency key already used';
		END IF;
		outcome := CASE WHEN v_status IS NULL THEN 'no_subscription'
		                ELSE 'inactive' END;
		refusal := v_status;
		RETURN NEXT;
		RETURN;
	END IF;
	day_limit := v_day_lim;
	month_limit := v_month_lim;

	outcome := 'ok';
	IF v_has_day AND v_day_lim >= 0
	   AND p_amount > v_day_lim - v_day_used THEN
		outcome := 'exhausted';
		refusal := p_metric || '_per_day';
	ELSIF v_month_lim >= 0 AND v_over_price IS NULL
	      AND p_amount > v_month_lim - v_month_used THEN
		outcome := 'exhausted';
		refusal := p_metric || '_per_month';
	END IF;

	-- Admission: day row then month row (always this order: no
	-- deadlocks), each incremented only while its limit holds.
	IF outcome = 'ok' AND v_has_day THEN
		INSERT INTO billing.usage_counters AS c (tenant_id, metric,
			period_kind, period_start, used)
		VALUES (p_tenant, p_metric, 'day', v_day_start, p_amount)
		ON CONFLICT (tenant_id, metric, period_kind, period_start)
		DO UPDATE SET used = c.used + EXCLUDED.used
		 WHERE v_day_lim < 0 OR c.used + EXCLUDED.used <= v_day_lim
		RETURNING c.used INTO v_day_used;
		IF NOT FOUND THEN
			outcome := 'exhausted';
			refusal := p_metric || '_per_day';
		END IF;
	END IF;
	IF outcome = 'ok' THEN
		INSERT INTO billing.usage_counters AS c (tenant_id, metric,
			period_kind, period_start, used)
		VALUES (p_tenant, p_metric, 'month', v_month_start, p_amount)
		ON CONFLICT (tenant_id, metric, period_kind, period_start)
		DO UPDATE SET used = c.used + EXCLUDED.used
		 WHERE v_month_lim < 0 OR v_over_price IS NOT NULL
		    OR c.used + EXCLUDED.used <= v_month_lim
		RETURNING c.used INTO v_month_used;
		IF NOT FOUND THEN
			outcome := 'exhausted';
			refusal := p_metric || '_per_month';
			IF v_has_day THEN
				-- Take the day increment back (still under
				-- our lock: nobody saw it).
				UPDATE billing.usage_counters c
				   SET used = c.used - p_amount
				 WHERE c.tenant_id = p_tenant
				   AND c.metric = p_metric
				   AND c.period_kind = 'day'
				   AND c.period_start = v_day_start;
			END IF;
		END IF;
	END IF;
	IF outcome = 'exhausted' AND refusal IS NOT NULL
	   AND (v_day_used IS NULL OR v_month_used IS NULL) THEN
		-- Refused by an upsert: read what the counters hold now.
		SELECT coalesce(max(c.used) FILTER (WHERE c.period_kind = 'day'), 0),
		       coalesce(max(c.used) FILTER (WHERE c.period_kind = 'month'), 0)
		  INTO v_day_used, v_month_used
		  FROM billing.usage_counters c
		 WHERE c.tenant_id = p_tenant AND c.metric = p_metric
		   AND ((c.period_kind = 'day' AND c.period_start = v_day_start)
		     OR (c.period_kind = 'month'
		         AND c.period_start = v_month_start));
	END IF;

	remaining_day := CASE WHEN NOT v_has_day OR v_day_lim < 0 THEN -1
	                      ELSE greatest(v_day_lim - v_day_used, 0) END;
	remaining_month := CASE WHEN v_month_lim < 0 THEN -1
	                        ELSE greatest(v_month_lim - v_month_used, 0) END;
	overage := 0;
	IF outcome = 'ok' AND v_over_price IS NOT NULL AND v_month_lim >= 0 THEN
		overage := greatest(v_month_used - v_month_lim, 0)
		         - greatest(v_month_used - p_amount - v_month_lim, 0);
	END IF;
	reservation_id := p_id;
	replayed := false;
	-- The answer, written once. A used key fails here (23505) and the
	-- statement, counters included, is rolled back.
	INSERT INTO billing.usage_reservations (tenant_id, id, idempotency_key,
		metric, amount, allowed, refusal, remaining_day, remaining_month,
		overage, day_start, month_start)
	VALUES (p_tenant, p_id, p_key, p_metric, p_amount, outcome = 'ok',
		coalesce(refusal, ''), remaining_day, remaining_month, overage,
		CASE WHEN outcome = 'ok' AND v_has_day THEN v_day_start END,
		CASE WHEN outcome = 'ok' THEN v_month_start END);
	IF outcome = 'exhausted' AND p_emit_refusal THEN
		INSERT INTO billing.outbox (id, destination, tenant_id, type,
			payload)
		VALUES (p_id, 'analytics', p_tenant, 'usage.refused',
		        jsonb_build_object('metric', p_metric, 'amount', p_amount,
		                           'limit', refusal));
	END IF;
	RETURN NEXT;
END
$$;

-- The stored answer for a used key (after reserve_usage's unique
-- violation): same columns, replayed true; 'conflict' when the key was used
-- for another metric or amount. No row: outcome 'not_found'.
CREATE FUNCTION billing.reserve_replay(p_tenant uuid, p_metric text,
	p_amount bigint, p_key text)
RETURNS TABLE (outcome text, reservation_id uuid, remaining_day bigint,
	remaining_month bigint, overage bigint, replayed boolean,
	refusal text, day_limit bigint, month_limit bigint)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('parley.tenant_id', p_tenant::text, true);
	RETURN QUERY
	SELECT CASE WHEN r.metric <> p_metric OR r.amount <> p_amount
	            THEN 'conflict'
	            WHEN r.allowed THEN 'ok' ELSE 'exhausted' END,
	       r.id, r.remaining_day, r.remaining_month, r.overage, true,
	       r.refusal, NULL::bigint, NULL::bigint
	  FROM billing.usage_reservations r
	 WHERE r.tenant_id = p_tenant AND r.idempotency_key = p_key;
	IF NOT FOUND THEN
		outcome := 'not_found';
		RETURN NEXT;
	END IF;
END
$$;

-- Reservations are written once per ReserveUsage and pruned by age: the
-- btree on created_at (one more index insertion on every call) becomes a
-- BRIN index, which rows appended in time order barely touch and which
-- still serves the prune job's "created_at < now() - ttl".
DROP INDEX billing.usage_reservations_created;
CREATE INDEX usage_reservations_created_brin ON billing.usage_reservations
	USING brin (created_at);

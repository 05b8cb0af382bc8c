-- Leases found by their key whatever the planner's statistics say, and
-- reserve_leased (005) in two statements instead of four.
--
-- 1. reserve_leased's join to usage_leases, its "lease gone" check and
--    lease_return's DELETE ... USING were planned (generic plans, cached
--    per connection) from the table's statistics, which say "one row"
--    while the table is young or churns without an ANALYZE: the plans
--    read the whole primary-key index, every live lease, for every batch.
--    With 1,000 live leases (the bench's 1,000 tenants) and such a plan,
--    a call of reserve_leased with 4 items took 1.7-3.2 ms instead of
--    0.2, and lease_return 0.75 ms instead of 0.28. Each lookup is now a
--    LATERAL subquery with LIMIT 1 (one index probe per item, as the
--    planner cannot pull it up into a join), and lease_return deletes by
--    the row's ctid found that way.
-- 2. Every statement of a PL/pgSQL function pays its executor start and
--    end whatever it does: with no item, reserve_leased's four cost ~45 us
--    more than these two. The tenant setting and the shared lock are one
--    statement, the writes and the answer one. The leases gone are read
--    with the insert's snapshot: an item is written or gone, never both
--    (005 took a new snapshot between the two, in which a lease returned
--    meanwhile made a written item "gone" too).
CREATE OR REPLACE FUNCTION billing.reserve_leased(p_tenants uuid[],
	p_metrics text[], p_amounts bigint[], p_keys text[], p_ids uuid[],
	p_leases uuid[], p_rday bigint[], p_rmonth bigint[])
RETURNS TABLE (ord int, gone boolean)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
	PERFORM set_config('parley.tenant_id', '*', true),
	        pg_advisory_xact_lock_shared(hashtext('billing.usage_leases'), 0);
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
		 CROSS JOIN LATERAL (
		       SELECT l.id, l.day_start, l.month_start
		         FROM billing.usage_leases l
		        WHERE l.tenant_id = u.t AND l.id = u.lid
		          AND l.metric = u.m AND l.expires_at > now()
		        LIMIT 1) l
		    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
		RETURNING r.tenant_id, r.idempotency_key),
	u AS MATERIALIZED (
		SELECT u.t, u.k, u.lid, u.i
		  FROM unnest(p_tenants, p_keys, p_leases)
		       WITH ORDINALITY AS u(t, k, lid, i))
	SELECT u.i::int, false
	  FROM u JOIN ins ON ins.tenant_id = u.t AND ins.idempotency_key = u.k
	UNION ALL
	SELECT u.i::int, true
	  FROM u
	  LEFT JOIN LATERAL (
	       SELECT 1 AS live FROM billing.usage_leases l
	        WHERE l.tenant_id = u.t AND l.id = u.lid
	          AND l.expires_at > now()
	        LIMIT 1) l ON true
	 WHERE l.live IS NULL;
END
$$;

-- lease_return (005): the leases deleted by the ctid their key finds.
CREATE OR REPLACE FUNCTION billing.lease_return(p_tenants uuid[], p_ids uuid[],
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
			 USING (SELECT k.tid, x.unused
			          FROM unnest(p_tenants, p_ids, p_unused)
			               AS x(t, id, unused)
			         CROSS JOIN LATERAL (
			               SELECT l2.ctid AS tid
			                 FROM billing.usage_leases l2
			                WHERE l2.tenant_id = x.t AND l2.id = x.id
			                LIMIT 1) k) y
			 WHERE l.ctid = y.tid
			RETURNING l.tenant_id, l.metric, l.day_start,
			          l.month_start,
			          least(greatest(y.unused, 0), l.units) AS unused)
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

-- Group commit across tenants: reply_finish_batch found its sessions with
-- `tenant_id = ANY (tenants) AND id = ANY (ids)` (to keep the plan on the
-- primary key), and an index scan with two arrays probes every
-- combination of them: a group of 64 replies from 64 tenants made 4,096
-- probes to update 64 rows, a cost growing with the square of the group
-- (the bench, one tenant, never saw it). The pairs are now probed as
-- pairs: a nested loop over the group's sessions, sequential scans and
-- hash and merge joins off in this function, as billing.reserve_batch
-- and messaging's batch functions (messaging 012) plan. Otherwise 003's
-- function unchanged.
CREATE OR REPLACE FUNCTION agents.reply_finish_batch(p_items json, p_sessions json,
    p_usage json, p_touch_ms bigint)
RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  -- The items parsed once; their events and both messages of each in
  -- one statement (different tables).
  WITH x AS MATERIALIZED (
    SELECT * FROM json_to_recordset(p_items)
      AS x(t uuid, s uuid, um uuid, ut text, am uuid, "at" text, ti int,
           "to" int, lat int, mo text, en text, "in" text, cf float8,
           m text, r text, er text, ev uuid, dm jsonb, pl jsonb)),
  o AS (
    INSERT INTO agents.outbox (id, destination, tenant_id, type,
        dimensions, payload)
    SELECT x.ev, 'analytics', x.t, 'agent.replied', coalesce(x.dm, '{}'),
           coalesce(x.pl, '{}')
      FROM x WHERE x.ev IS NOT NULL)
  INSERT INTO agents.agent_messages (tenant_id, id, session_id, role,
      content, tokens_in, tokens_out, latency_ms, model, engine, intent,
      confidence, message_id, reply, error)
  SELECT y.t, y.id, y.s, y.role, y.c, y.ti, y.tout, y.lat, y.mo, y.en,
         y.inte, y.cf, y.m, y.r, y.er
    FROM (SELECT x.t, x.um AS id, x.s, 'user' AS role, x.ut AS c, 0 AS ti,
                 0 AS tout, 0 AS lat, '' AS mo, '' AS en, '' AS inte,
                 0::float8 AS cf, NULL::text AS m, NULL::jsonb AS r,
                 '' AS er
            FROM x
          UNION ALL
          SELECT x.t, x.am, x.s, 'assistant', x."at", x.ti, x."to", x.lat,
                 x.mo, x.en, x."in", x.cf, x.m, x.r::jsonb, x.er
            FROM x) y
   ORDER BY y.id;

  -- By primary key, one probe per session (a nested loop: hash and merge
  -- joins are off in this function).
  UPDATE agents.agent_sessions x
     SET message_count = x.message_count + w.n, bot_turns = w.bt,
         agent_id = w.a,
         last_activity_at = CASE WHEN x.last_activity_at
             < now() - p_touch_ms * interval '1 millisecond'
             THEN now() ELSE x.last_activity_at END,
         context = jsonb_set(x.context || w.cx, '{captured}',
                             coalesce(x.context -> 'captured', '{}')
                             || w.cp)
    FROM json_to_recordset(p_sessions)
         AS w(t uuid, id uuid, n int, bt int, a uuid, cx jsonb, cp jsonb)
   WHERE x.tenant_id = w.t AND x.id = w.id;

  INSERT INTO agents.knowledge_usage AS u (tenant_id, entry_id, usage_count)
  SELECT w.t, w.e, w.n
    FROM ROWS FROM (json_to_recordset(p_usage)
         AS (t uuid, e uuid, n int)) WITH ORDINALITY AS w(t, e, n, o)
   ORDER BY w.o
  ON CONFLICT (tenant_id, entry_id)
    DO UPDATE SET usage_count = u.usage_count + excluded.usage_count;

END $$;

-- One round trip for most groups (issue 5's p99). A group's first round
-- trip (reply_begin_batch: the agents' published versions, the session
-- locks, replays, the sessions) tells a replica what it needs to answer
-- again in the same sessions; each replica remembers it (reply.c's
-- cache), answers from memory and sends the rows with what it assumed.
-- This function locks the sessions (the same advisory locks as
-- reply_begin_batch, in the same order), checks those assumptions and
-- writes the replies whose assumptions hold, with the COMMIT in the same
-- round trip. The others are returned and answered again by the two
-- round trips of migration 003, in a new transaction.
--
-- It is also step two of that path (p_agents NULL: the locks are held
-- and the sessions read in this transaction; nothing to check), in place
-- of reply_finish_batch, so that every committed group tells the replica
-- its sessions' message counts.
--
--   p_items:    [{t, s: session, a: agent, e: knowledge entry (or null),
--                 um, ut, am, at, ti, to, lat, mo, en, in, cf, m, r, er,
--                 ev, dm, pl}] (reply_finish_batch's, plus a and e)
--   p_sessions: one per session: [{t, id, k: session key, n, bt, a, cx,
--                 cp, mc: its message_count when the replica last saw it}]
--   p_agents:   [{t, a, v: published version, kn: knowledge bases, ks:
--                 the sum of their content versions}], or NULL
--   p_touch_ms: last_activity_at moves when older than this.
--   p_idle_ms:  a session idle longer than this is not answered here.
-- Rows: 'w' one per written session (session_id, its message_count now);
-- 'a' one per item not written because its agent's published version or
-- knowledge changed (item: its index in p_items); 's' one per other item
-- not written: its session changed (another reply, ended, expired) or
-- one of its session's items was answered before (a replay).
--
-- knowledge_usage is counted from the written items (one upsert per
-- entry, in (tenant, entry) order: concurrent groups lock those rows in
-- one order).
CREATE FUNCTION agents.reply_commit_batch(p_items json, p_sessions json,
    p_agents json, p_touch_ms bigint, p_idle_ms bigint)
RETURNS TABLE (kind text, item int, session_id uuid, message_count bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
  v_bad_t uuid[] := '{}'; v_bad uuid[] := '{}'; -- sessions not written
  v_bat uuid[] := '{}'; v_ba uuid[] := '{}';     -- agents that changed
  v_wid uuid[]; v_wmc bigint[];
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  IF p_agents IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(l.h)
       FROM (SELECT DISTINCT hashtextextended(w.t::text || '/' || w.k, 0)
                    AS h
               FROM json_to_recordset(p_sessions) AS w(t uuid, k text)
              ORDER BY 1) l;

    -- Agents whose published version or knowledge changed.
    SELECT coalesce(array_agg(g.t), '{}'), coalesce(array_agg(g.a), '{}')
      INTO v_bat, v_ba
      FROM json_to_recordset(p_agents)
           AS g(t uuid, a uuid, v int, kn bigint, ks numeric)
     WHERE NOT EXISTS (
           SELECT 1
             FROM agents.agents a,
                  LATERAL (SELECT count(*) AS n,
                                  coalesce(sum(b.content_version), 0) AS s
                             FROM agents.agent_versions v
                             JOIN agents.knowledge_bases b
                               ON b.tenant_id = v.tenant_id
                              AND b.id = ANY(v.knowledge_base_ids)
                            WHERE v.tenant_id = a.tenant_id
                              AND v.agent_id = a.id
                              AND v.version = a.version) k
            WHERE a.tenant_id = g.t AND a.id = g.a AND a.version = g.v
              AND a.status <> 'archived' AND k.n = g.kn AND k.s = g.ks);

    -- Sessions not to write: the session changed, or one of its items'
    -- agents changed, or one of its items was answered before. Every
    -- lookup is one index probe per row (LATERAL ... LIMIT 1): as a
    -- hashed subplan, the session check read every active session.
    WITH i AS MATERIALIZED (
      SELECT i.t, i.s
        FROM json_to_recordset(p_items) AS i(t uuid, s uuid, a uuid, m text)
        LEFT JOIN LATERAL (
             SELECT 1 AS hit FROM agents.agent_messages y
              WHERE y.tenant_id = i.t AND y.message_id = i.m
                AND y.role = 'assistant' AND y.message_id IS NOT NULL
              LIMIT 1) y ON true
       WHERE y.hit IS NOT NULL
          OR EXISTS (SELECT 1 FROM unnest(v_bat, v_ba) AS g(t, a)
                      WHERE g.t = i.t AND g.a = i.a))
    SELECT coalesce(array_agg(w.t), '{}'), coalesce(array_agg(w.id), '{}')
      INTO v_bad_t, v_bad
      FROM json_to_recordset(p_sessions) AS w(t uuid, id uuid, mc bigint)
      LEFT JOIN LATERAL (
           SELECT x.status, x.message_count, x.last_activity_at
             FROM agents.agent_sessions x
            WHERE x.tenant_id = w.t AND x.id = w.id
            LIMIT 1) x ON true
     WHERE x.status IS DISTINCT FROM 'active'
        OR x.message_count IS DISTINCT FROM w.mc
        OR x.last_activity_at < now() - p_idle_ms * interval '1 millisecond'
        OR EXISTS (SELECT 1 FROM i WHERE i.t = w.t AND i.s = w.id);
  END IF;

  -- The items written, parsed once; their events and both messages of
  -- each in one statement (different tables).
  WITH x AS MATERIALIZED (
    SELECT x.* FROM json_to_recordset(p_items)
      AS x(t uuid, s uuid, um uuid, ut text, am uuid, "at" text, ti int,
           "to" int, lat int, mo text, en text, "in" text, cf float8,
           m text, r text, er text, ev uuid, dm jsonb, pl jsonb)
     WHERE NOT EXISTS (SELECT 1 FROM unnest(v_bad_t, v_bad) AS b(t, s)
                        WHERE b.t = x.t AND b.s = x.s)),
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

  -- By primary key, one probe per session.
  WITH u AS (
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
     WHERE x.tenant_id = w.t AND x.id = w.id
       AND NOT EXISTS (SELECT 1 FROM unnest(v_bad_t, v_bad) AS b(t, s)
                        WHERE b.t = w.t AND b.s = w.id)
    RETURNING x.id, x.message_count)
  SELECT array_agg(u.id), array_agg(u.message_count) INTO v_wid, v_wmc
    FROM u;

  INSERT INTO agents.knowledge_usage AS u (tenant_id, entry_id, usage_count)
  SELECT x.t, x.e, count(*)
    FROM json_to_recordset(p_items) AS x(t uuid, s uuid, e uuid)
   WHERE x.e IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM unnest(v_bad_t, v_bad) AS b(t, s)
                      WHERE b.t = x.t AND b.s = x.s)
   GROUP BY x.t, x.e
   ORDER BY x.t, x.e
  ON CONFLICT (tenant_id, entry_id)
    DO UPDATE SET usage_count = u.usage_count + excluded.usage_count;

  RETURN QUERY
  SELECT 'w'::text, NULL::int, w.id, w.mc
    FROM unnest(v_wid, v_wmc) AS w(id, mc)
  UNION ALL
  SELECT CASE WHEN EXISTS (SELECT 1 FROM unnest(v_bat, v_ba) AS g(t, a)
                            WHERE g.t = x.t AND g.a = x.a)
              THEN 'a' ELSE 's' END,
         (x.o - 1)::int, x.s, NULL::bigint
    FROM ROWS FROM (json_to_recordset(p_items) AS (t uuid, s uuid, a uuid))
         WITH ORDINALITY AS x(t, s, a, o)
   WHERE EXISTS (SELECT 1 FROM unnest(v_bad_t, v_bad) AS b(t, s)
                  WHERE b.t = x.t AND b.s = x.s);
END $$;

-- agents 013: a new conversation's first reply in one round trip. The
-- one-round-trip path (006, 009) answered from memory only in sessions
-- this replica remembered; a conversation's first message, whose session
-- does not exist yet, took BEGIN + reply_begin_batch (to create it) and
-- the commit: two round trips. When messaging sends no history (nothing
-- was said before in the conversation), a replica that remembers the agent
-- now composes the reply in a session it names itself, and the commit
-- creates that session ("nw" in p_sessions, with the columns
-- reply_begin_batch would have written), under the same advisory lock,
-- unless an active session of the key exists by then: that item comes back
-- as 's' and takes the two round trips, as any assumption that did not
-- hold. Two replicas creating one key's session at once are kept apart by
-- the lock and, behind it, by agent_sessions_active (unique): the loser's
-- statement fails and its items take the two round trips.
--
-- The new row holds what reply_begin_batch's INSERT and then this
-- function's UPDATE would have left in it: the item's counts, turns and
-- agent, context '{}' || cx with captured '{}' || cp.
CREATE OR REPLACE FUNCTION agents.reply_commit_batch(p_items json,
    p_sessions json, p_agents json, p_touch_ms bigint, p_idle_ms bigint)
RETURNS TABLE (kind text, item int, session_id uuid, message_count bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
  v_bad_t uuid[] := '{}'; v_bad uuid[] := '{}'; -- sessions not written
  v_bat uuid[] := '{}'; v_ba uuid[] := '{}';     -- agents that changed
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  IF p_agents IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(l.h)
       FROM (SELECT DISTINCT hashtextextended(w.t::text || '/' || w.k, 0)
                    AS h
               FROM json_to_recordset(p_sessions) AS w(t uuid, k text)
              ORDER BY 1) l;

    -- Agents whose published version or knowledge changed (g); sessions
    -- not to write (b): the session changed, or one of its items' agents
    -- changed, or one of its items was answered before. Every lookup is
    -- one index probe per row (LATERAL ... LIMIT 1): as a hashed subplan,
    -- the session check read every active session.
    WITH g AS MATERIALIZED (
      SELECT g.t, g.a
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
                AND a.status <> 'archived' AND k.n = g.kn
                AND k.s = g.ks)),
    i AS MATERIALIZED (
      SELECT i.t, i.s
        FROM json_to_recordset(p_items) AS i(t uuid, s uuid, a uuid, m text)
        LEFT JOIN LATERAL (
             SELECT 1 AS hit FROM agents.agent_messages y
              WHERE y.tenant_id = i.t AND y.message_id = i.m
                AND y.role = 'assistant' AND y.message_id IS NOT NULL
              LIMIT 1) y ON true
       WHERE y.hit IS NOT NULL
          OR EXISTS (SELECT 1 FROM g WHERE g.t = i.t AND g.a = i.a)),
    b AS MATERIALIZED (
      SELECT w.t, w.id
        FROM json_to_recordset(p_sessions)
             AS w(t uuid, id uuid, mc bigint, k text, nw boolean)
        LEFT JOIN LATERAL (
             SELECT x.status, x.message_count, x.last_activity_at
               FROM agents.agent_sessions x
              WHERE x.tenant_id = w.t AND x.id = w.id
              LIMIT 1) x ON w.nw IS NOT TRUE
        -- A session to create: none of its key may be active.
        LEFT JOIN LATERAL (
             SELECT 1 AS hit
               FROM agents.agent_sessions z
              WHERE z.tenant_id = w.t AND z.session_key = w.k
                AND z.status = 'active'
              LIMIT 1) z ON w.nw IS TRUE
       WHERE (w.nw IS TRUE AND z.hit IS NOT NULL)
          OR (w.nw IS NOT TRUE
              AND (x.status IS DISTINCT FROM 'active'
                   OR x.message_count IS DISTINCT FROM w.mc
                   OR x.last_activity_at
                      < now() - p_idle_ms * interval '1 millisecond'))
          OR EXISTS (SELECT 1 FROM i WHERE i.t = w.t AND i.s = w.id))
    SELECT (SELECT coalesce(array_agg(g.t), '{}') FROM g),
           (SELECT coalesce(array_agg(g.a), '{}') FROM g),
           (SELECT coalesce(array_agg(b.t), '{}') FROM b),
           (SELECT coalesce(array_agg(b.id), '{}') FROM b)
      INTO v_bat, v_ba, v_bad_t, v_bad;
  END IF;

  -- The writes and the answer. x: the items written (o: their position in
  -- p_items, for the rows of those not written).
  RETURN QUERY
  WITH p AS MATERIALIZED (
    SELECT p.*, (p.o - 1)::int AS k,
           EXISTS (SELECT 1 FROM unnest(v_bad_t, v_bad) AS b(t, s)
                    WHERE b.t = p.t AND b.s = p.s) AS bad
      FROM ROWS FROM (json_to_recordset(p_items)
             AS (t uuid, s uuid, a uuid, e uuid, um uuid, ut text, am uuid,
                 "at" text, ti int, "to" int, lat int, mo text, en text,
                 "in" text, cf float8, m text, r text, er text, ev uuid,
                 dm jsonb, pl jsonb))
           WITH ORDINALITY AS p(t, s, a, e, um, ut, am, "at", ti, "to", lat,
                                mo, en, "in", cf, m, r, er, ev, dm, pl, o)),
  x AS MATERIALIZED (SELECT * FROM p WHERE NOT p.bad),
  o AS (
    INSERT INTO agents.outbox (id, destination, tenant_id, type,
        dimensions, payload)
    SELECT x.ev, 'analytics', x.t, 'agent.replied', coalesce(x.dm, '{}'),
           coalesce(x.pl, '{}')
      FROM x WHERE x.ev IS NOT NULL),
  mm AS (
    INSERT INTO agents.agent_messages (tenant_id, id, session_id, role,
        content, tokens_in, tokens_out, latency_ms, model, engine, intent,
        confidence, message_id, reply, error)
    SELECT y.t, y.id, y.s, y.role, y.c, y.ti, y.tout, y.lat, y.mo, y.en,
           y.inte, y.cf, y.m, y.r, y.er
      FROM (SELECT x.t, x.um AS id, x.s, 'user' AS role, x.ut AS c,
                   0 AS ti, 0 AS tout, 0 AS lat, '' AS mo, '' AS en,
                   '' AS inte, 0::float8 AS cf, NULL::text AS m,
                   NULL::jsonb AS r, '' AS er
              FROM x
            UNION ALL
            SELECT x.t, x.am, x.s, 'assistant', x."at", x.ti, x."to", x.lat,
                   x.mo, x.en, x."in", x.cf, x.m, x.r::jsonb, x.er
              FROM x) y
     ORDER BY y.id),
  ku AS (
    INSERT INTO agents.knowledge_usage AS u (tenant_id, entry_id,
        usage_count)
    SELECT x.t, x.e, count(*)
      FROM x
     WHERE x.e IS NOT NULL
     GROUP BY x.t, x.e
     ORDER BY x.t, x.e
    ON CONFLICT (tenant_id, entry_id)
      DO UPDATE SET usage_count = u.usage_count + excluded.usage_count),
  -- By primary key, one probe per session.
  u AS (
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
           AS w(t uuid, id uuid, n int, bt int, a uuid, cx jsonb, cp jsonb,
                nw boolean)
     WHERE x.tenant_id = w.t AND x.id = w.id AND w.nw IS NOT TRUE
       AND NOT EXISTS (SELECT 1 FROM unnest(v_bad_t, v_bad) AS b(t, s)
                        WHERE b.t = w.t AND b.s = w.id)
    RETURNING x.id, x.message_count),
  -- The sessions to create (013), as reply_begin_batch's INSERT and the
  -- UPDATE above would have left them.
  ns AS (
    INSERT INTO agents.agent_sessions AS s (tenant_id, id, agent_id,
        session_key, channel_id, conversation_id, contact_id,
        website_domain, client_ip, message_count, bot_turns, context)
    SELECT w.t, w.id, w.a, w.k, coalesce(w.ch, ''), coalesce(w.cv, ''),
           coalesce(w.ct, ''), coalesce(w.d, ''), coalesce(w.ip, ''), w.n,
           w.bt, jsonb_set('{}'::jsonb || w.cx, '{captured}',
                           '{}'::jsonb || w.cp)
      FROM json_to_recordset(p_sessions)
           AS w(t uuid, id uuid, k text, n int, bt int, a uuid, cx jsonb,
                cp jsonb, nw boolean, ch text, cv text, ct text, d text,
                ip text)
     WHERE w.nw IS TRUE
       AND NOT EXISTS (SELECT 1 FROM unnest(v_bad_t, v_bad) AS b(t, s)
                        WHERE b.t = w.t AND b.s = w.id)
    RETURNING s.id, s.message_count)
  SELECT 'w'::text, NULL::int, u.id, u.message_count FROM u
  UNION ALL
  SELECT 'w'::text, NULL::int, ns.id, ns.message_count FROM ns
  UNION ALL
  SELECT CASE WHEN EXISTS (SELECT 1 FROM unnest(v_bat, v_ba) AS g(t, a)
                            WHERE g.t = p.t AND g.a = p.a)
              THEN 'a' ELSE 's' END,
         p.k, p.s, NULL::bigint
    FROM p WHERE p.bad;
END $$;

-- Group commit for Reply (issue 5's benchmark): the replies that arrive
-- together in one process are answered in one transaction, two round
-- trips for the whole group: agents.reply_begin_batch, the engine in C,
-- then agents.reply_finish_batch + COMMIT. Each statement works on every
-- item of the group at once (set-based), so PostgreSQL's cost per reply is
-- its rows, not its statements, round trips and commits.
--
-- A group may hold several tenants: the functions run with the tenant
-- setting '*' (as analytics' batches do) and every statement keys each row
-- by its item's tenant_id explicitly.
--
-- agent_sessions is updated on every reply (counters, memory): leave room
-- on its pages so that those updates stay HOT (same page, no index entry).
ALTER TABLE agents.agent_sessions SET (fillfactor = 70);

-- Step one for a group. The items, in arrival order (item n is element
-- n + 1 of every array): tenant, agent, session key, message id (or
-- null), a new session's id, channel, conversation, contact, website
-- domain, client IP. Rows, by kind:
--   'a'  one per distinct (tenant, agent): item is its first item; the
--        columns of reply_begin (status .. kb_versions); no row when the
--        agent does not exist for that tenant.
--   'r'  an item answered before (its message id has an answer): replay,
--        session_id.
--   's'  an item to answer: session_id and bot_turns of its active
--        session (expired when idle, created when missing).
-- Items of agents that cannot answer here (unknown, archived, nothing
-- published, or an LLM engine, answered one at a time) get no 'r' or 's'
-- row and take no lock. The others' session keys are locked
-- (pg_advisory_xact_lock, the same key as reply_begin) in hash order, so
-- concurrent groups on several replicas cannot deadlock.
CREATE FUNCTION agents.reply_begin_batch(v_t uuid[], v_a uuid[], v_k text[],
    v_m text[], v_s uuid[], v_ch text[], v_cv text[], v_ct text[],
    v_d text[], v_ip text[], p_idle_ms bigint)
RETURNS TABLE (
  kind text, item int,
  status text, version int, version_id uuid, engine text,
  llm_provider text, llm_base_url text, llm_model text,
  llm_temperature float8, llm_max_tokens int, llm_timeout_ms int,
  llm_context_entries int, has_key boolean, system_prompt text,
  greeting text, fallback_message text, kb_ids text, keywords text,
  threshold float8, max_bot_turns int, language text, voice_provider text,
  voice_id text, voice_settings text, key_ct bytea, key_kid text,
  kb_versions text, replay text, session_id uuid, bot_turns int)
LANGUAGE plpgsql
-- One plan per statement for every group (built once per connection):
-- every lookup is an index probe whatever the group's size, and planning
-- again on each call (custom plans for array parameters) costs more than
-- the work.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_ok int[]; v_new int[]; v_ri int[]; v_rr text[]; v_rs uuid[];
  v_idle uuid[]; v_idle_t uuid[]; v_missing boolean;
  v_si int[]; v_sid uuid[]; v_sbt int[];
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  IF cardinality(v_t) IS NULL THEN
    RETURN;
  END IF;

  RETURN QUERY
  SELECT 'a'::text, (f.n - 1)::int, a.status, a.version, v.id, v.engine,
         v.llm_provider, v.llm_base_url, v.llm_model, v.llm_temperature,
         v.llm_max_tokens, v.llm_timeout_ms, v.llm_context_entries,
         v.llm_api_key_ct IS NOT NULL, v.system_prompt, v.greeting,
         v.fallback_message, array_to_json(v.knowledge_base_ids)::text,
         array_to_json(v.handoff_keywords)::text,
         v.handoff_confidence_threshold, v.max_bot_turns, v.language,
         v.voice_provider, v.voice_id, v.voice_settings::text,
         v.llm_api_key_ct, coalesce(v.llm_api_key_kid, ''),
         coalesce((SELECT json_agg(json_build_array(b.id,
                           b.content_version))::text
                     FROM agents.knowledge_bases b
                    WHERE b.tenant_id = a.tenant_id
                      AND b.id = ANY(v.knowledge_base_ids)), '[]'),
         NULL::text, NULL::uuid, 0
    FROM (SELECT DISTINCT ON (u.t, u.a) u.t, u.a, u.n
            FROM unnest(v_t, v_a) WITH ORDINALITY AS u(t, a, n)
           ORDER BY u.t, u.a, u.n) f
    JOIN agents.agents a ON a.tenant_id = f.t AND a.id = f.a
    LEFT JOIN agents.agent_versions v
      ON v.tenant_id = a.tenant_id AND v.agent_id = a.id
     AND v.version = a.version;

  -- The items this group answers.
  SELECT array_agg(u.n::int ORDER BY u.n) INTO v_ok
    FROM unnest(v_t, v_a) WITH ORDINALITY AS u(t, a, n)
    JOIN agents.agents a ON a.tenant_id = u.t AND a.id = u.a
    JOIN agents.agent_versions v
      ON v.tenant_id = a.tenant_id AND v.agent_id = a.id
     AND v.version = a.version
   WHERE a.status <> 'archived' AND v.engine <> 'openai_compatible';
  IF v_ok IS NULL THEN
    RETURN;
  END IF;

  PERFORM pg_advisory_xact_lock(l.h)
     FROM (SELECT DISTINCT hashtextextended(v_t[i]::text || '/' || v_k[i],
                                            0) AS h
             FROM unnest(v_ok) AS i ORDER BY 1) l;

  -- Answered before: replays (nothing else is done for them). Every
  -- lookup below is one index probe per item (LATERAL ... LIMIT 1), so
  -- that the plan does not depend on the tables' sizes.
  SELECT array_agg(i), array_agg(m.reply), array_agg(m.session_id)
    INTO v_ri, v_rr, v_rs
    FROM unnest(v_ok) AS i,
         LATERAL (SELECT y.reply::text AS reply, y.session_id
                    FROM agents.agent_messages y
                   WHERE y.tenant_id = v_t[i] AND y.message_id = v_m[i]
                     AND y.role = 'assistant'
                   LIMIT 1) m
   WHERE v_m[i] IS NOT NULL;
  IF v_ri IS NOT NULL THEN
    RETURN QUERY
    SELECT 'r'::text, (r.i - 1)::int, NULL::text, NULL::int, NULL::uuid,
           NULL::text, NULL::text, NULL::text, NULL::text, NULL::float8,
           NULL::int, NULL::int, NULL::int, NULL::boolean, NULL::text,
           NULL::text, NULL::text, NULL::text, NULL::text, NULL::float8,
           NULL::int, NULL::text, NULL::text, NULL::text, NULL::text,
           NULL::bytea, NULL::text, NULL::text, r.reply, r.sid, 0
      FROM unnest(v_ri, v_rr, v_rs) AS r(i, reply, sid);
    SELECT array_agg(i ORDER BY i) INTO v_new
      FROM unnest(v_ok) AS i WHERE i <> ALL(v_ri);
  ELSE
    v_new := v_ok;
  END IF;
  IF v_new IS NULL THEN
    RETURN;
  END IF;

  -- The active session of each item's key: idle ones end, missing ones
  -- start (the first item of a key gives the new session's id and
  -- origin).
  SELECT array_agg(s.id) FILTER (WHERE s.idle),
         array_agg(v_t[i]) FILTER (WHERE s.idle),
         bool_or(s.id IS NULL OR s.idle),
         array_agg(i ORDER BY i), array_agg(s.id ORDER BY i),
         array_agg(s.bot_turns ORDER BY i)
    INTO v_idle, v_idle_t, v_missing, v_si, v_sid, v_sbt
    FROM unnest(v_new) AS i
    LEFT JOIN LATERAL (
         SELECT x.id, x.bot_turns, x.last_activity_at
                        < now() - p_idle_ms * interval '1 millisecond' AS idle
           FROM agents.agent_sessions x
          WHERE x.tenant_id = v_t[i] AND x.session_key = v_k[i]
            AND x.status = 'active'
          LIMIT 1) s ON true;
  IF NOT v_missing THEN
    -- Every item has its active session (the usual case): done.
    RETURN QUERY
    SELECT 's'::text, (u.i - 1)::int, NULL::text, NULL::int, NULL::uuid,
           NULL::text, NULL::text, NULL::text, NULL::text, NULL::float8,
           NULL::int, NULL::int, NULL::int, NULL::boolean, NULL::text,
           NULL::text, NULL::text, NULL::text, NULL::text, NULL::float8,
           NULL::int, NULL::text, NULL::text, NULL::text, NULL::text,
           NULL::bytea, NULL::text, NULL::text, NULL::text, u.id, u.bt
      FROM unnest(v_si, v_sid, v_sbt) AS u(i, id, bt);
    RETURN;
  END IF;
  IF v_idle IS NOT NULL THEN
    UPDATE agents.agent_sessions SET status = 'expired', ended_at = now()
     WHERE tenant_id = ANY(v_idle_t) AND id = ANY(v_idle)
       AND status = 'active';
  END IF;
  IF v_missing THEN
    INSERT INTO agents.agent_sessions (tenant_id, id, agent_id,
        session_key, channel_id, conversation_id, contact_id,
        website_domain, client_ip)
    SELECT DISTINCT ON (v_t[i], v_k[i]) v_t[i], v_s[i], v_a[i], v_k[i],
           v_ch[i], v_cv[i], v_ct[i], v_d[i], v_ip[i]
      FROM unnest(v_new) AS i
     WHERE NOT EXISTS (SELECT 1 FROM agents.agent_sessions x
                        WHERE x.tenant_id = v_t[i]
                          AND x.session_key = v_k[i]
                          AND x.status = 'active')
     ORDER BY v_t[i], v_k[i], i;
  END IF;

  RETURN QUERY
  SELECT 's'::text, (i - 1)::int, NULL::text, NULL::int, NULL::uuid,
         NULL::text, NULL::text, NULL::text, NULL::text, NULL::float8,
         NULL::int, NULL::int, NULL::int, NULL::boolean, NULL::text,
         NULL::text, NULL::text, NULL::text, NULL::text, NULL::float8,
         NULL::int, NULL::text, NULL::text, NULL::text, NULL::text,
         NULL::bytea, NULL::text, NULL::text, NULL::text, s.id, s.bot_turns
    FROM unnest(v_new) AS i,
         LATERAL (SELECT x.id, x.bot_turns FROM agents.agent_sessions x
                   WHERE x.tenant_id = v_t[i] AND x.session_key = v_k[i]
                     AND x.status = 'active'
                   LIMIT 1) s;
END $$;

-- Step two for a group: what reply_finish writes, for every answered item
-- at once.
--   p_items: [{t, s: session, um: user message id, ut: user text,
--              am: answer id, at: answer text, ti, to, lat, mo: model,
--              en: engine, in: intent, cf: confidence, m: message id,
--              r: the whole ReplyResponse (or null), er: LLM error,
--              ev: event id, dm: event dimensions, pl: event payload}]
--   p_sessions: one per session: [{t, id, n: messages added, bt: bot
--              turns, a: agent, cx: memory patch, cp: captured patch}]
--              (the group's patches merged in order by the caller)
--   p_usage:   one per answering entry: [{t, e: entry, n: answers}]
--              sorted (rows are locked in that order)
--   p_touch_ms: last_activity_at moves when older than this.
CREATE FUNCTION agents.reply_finish_batch(p_items json, p_sessions json,
    p_usage json, p_touch_ms bigint)
RETURNS void
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
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

  -- By primary key (= ANY probes the index whatever the table's size),
  -- one row per session.
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
     AND x.tenant_id = ANY(ARRAY(SELECT (e ->> 't')::uuid
                                   FROM json_array_elements(p_sessions) e))
     AND x.id = ANY(ARRAY(SELECT (e ->> 'id')::uuid
                            FROM json_array_elements(p_sessions) e));

  INSERT INTO agents.knowledge_usage AS u (tenant_id, entry_id, usage_count)
  SELECT w.t, w.e, w.n
    FROM ROWS FROM (json_to_recordset(p_usage)
         AS (t uuid, e uuid, n int)) WITH ORDINALITY AS w(t, e, n, o)
   ORDER BY w.o
  ON CONFLICT (tenant_id, entry_id)
    DO UPDATE SET usage_count = u.usage_count + excluded.usage_count;

END $$;

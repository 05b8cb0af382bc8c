-- The reply path without full scans (issue 5's benchmark):
--
-- 1. knowledge_bases.content_version, bumped in the same transaction by
--    every change to an entry's searchable content (insert, delete, update
--    of question, answer, keywords, intent, is_active, base): each process
--    keeps an in-memory retrieval index per base and rebuilds it when the
--    version it reads with the agent has moved (usage_count updates do not
--    bump it).
-- 2. agents.knowledge_usage: the answers counted per entry since this
--    migration (an entry's usage count is knowledge_entries.usage_count
--    plus this). Counting in knowledge_entries rewrote a wide row per
--    reply, with its generated tsvector and trigram text recomputed and,
--    on a full page, every GIN and GiST index updated.
-- 3. agents.reply_begin / agents.reply_finish: the reply's statements in
--    two calls (cached plans), run inside the reply's transaction.

ALTER TABLE agents.knowledge_bases
  ADD COLUMN content_version bigint NOT NULL DEFAULT 0;

-- Bumps a base's content version once per transaction: a row already
-- written by this transaction (xmin is its id) is not written again, so a
-- bulk import of n entries does not make n versions of the base's row.
CREATE FUNCTION agents.knowledge_bump(p_tenant uuid, p_kb uuid) RETURNS void
LANGUAGE sql AS $$
  UPDATE agents.knowledge_bases SET content_version = content_version + 1
   WHERE tenant_id = p_tenant AND id = p_kb
     AND xmin::text <> (pg_current_xact_id()::text::bigint
                        % 4294967296)::text;
$$;

CREATE TABLE agents.knowledge_usage (
  tenant_id   uuid   NOT NULL,
  entry_id    uuid   NOT NULL,
  usage_count bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, entry_id),
  FOREIGN KEY (tenant_id, entry_id)
    REFERENCES agents.knowledge_entries (tenant_id, id) ON DELETE CASCADE
);
ALTER TABLE agents.knowledge_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents.knowledge_usage FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents.knowledge_usage
  USING (current_setting('parley.tenant_id', true) = '*'
         OR tenant_id::text = current_setting('parley.tenant_id', true))
  WITH CHECK (current_setting('parley.tenant_id', true) = '*'
         OR tenant_id::text = current_setting('parley.tenant_id', true));

CREATE FUNCTION agents.knowledge_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM agents.knowledge_bump(OLD.tenant_id, OLD.knowledge_base_id);
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE'
      AND NEW.knowledge_base_id IS DISTINCT FROM OLD.knowledge_base_id) THEN
    PERFORM agents.knowledge_bump(NEW.tenant_id, NEW.knowledge_base_id);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER knowledge_entries_touch
  AFTER INSERT OR DELETE ON agents.knowledge_entries
  FOR EACH ROW EXECUTE FUNCTION agents.knowledge_touch();

CREATE TRIGGER knowledge_entries_touch_update
  AFTER UPDATE ON agents.knowledge_entries
  FOR EACH ROW
  WHEN (OLD.question IS DISTINCT FROM NEW.question
     OR OLD.answer IS DISTINCT FROM NEW.answer
     OR OLD.keywords IS DISTINCT FROM NEW.keywords
     OR OLD.intent IS DISTINCT FROM NEW.intent
     OR OLD.is_active IS DISTINCT FROM NEW.is_active
     OR OLD.question_norm IS DISTINCT FROM NEW.question_norm
     OR OLD.keywords_norm IS DISTINCT FROM NEW.keywords_norm
     OR OLD.answer_norm IS DISTINCT FROM NEW.answer_norm
     OR OLD.knowledge_base_id IS DISTINCT FROM NEW.knowledge_base_id)
  EXECUTE FUNCTION agents.knowledge_touch();

-- Step one of a reply, inside its transaction: the agent's status and its
-- latest published version (the columns agents_store_reply_version read,
-- then the content versions of its bases as JSON [[id, version], ...]).
-- When the agent can answer: the session lock (one reply at a time per
-- session key), the earlier answer to p_message_id (a replay), and the
-- active session, expired when idle past p_idle_ms and then replaced by a
-- new one with id p_new_session (the new id is returned either way).
CREATE FUNCTION agents.reply_begin(
    p_tenant uuid, p_agent uuid, p_key text, p_message_id text,
    p_idle_ms bigint, p_new_session uuid, p_channel text,
    p_conversation text, p_contact text, p_domain text, p_ip text)
RETURNS TABLE (
  status text, version int, version_id uuid, engine text,
  llm_provider text, llm_base_url text, llm_model text,
  llm_temperature float8, llm_max_tokens int, llm_timeout_ms int,
  llm_context_entries int, has_key boolean, system_prompt text,
  greeting text, fallback_message text, kb_ids text, keywords text,
  threshold float8, max_bot_turns int, language text, voice_provider text,
  voice_id text, voice_settings text, key_ct bytea, key_kid text,
  kb_versions text, replay text, session_id uuid, bot_turns int)
LANGUAGE plpgsql AS $$
DECLARE
  s record;
  v_stop boolean;
BEGIN
  PERFORM set_config('parley.tenant_id', p_tenant::text, true);
  RETURN QUERY
  SELECT a.status, a.version, v.id, v.engine, v.llm_provider,
         v.llm_base_url, v.llm_model, v.llm_temperature, v.llm_max_tokens,
         v.llm_timeout_ms, v.llm_context_entries,
         v.llm_api_key_ct IS NOT NULL, v.system_prompt, v.greeting,
         v.fallback_message, array_to_json(v.knowledge_base_ids)::text,
         array_to_json(v.handoff_keywords)::text,
         v.handoff_confidence_threshold, v.max_bot_turns, v.language,
         v.voice_provider, v.voice_id, v.voice_settings::text,
         v.llm_api_key_ct, coalesce(v.llm_api_key_kid, ''),
         coalesce((SELECT json_agg(json_build_array(b.id,
                           b.content_version))::text
                     FROM agents.knowledge_bases b
                    WHERE b.tenant_id = p_tenant
                      AND b.id = ANY(v.knowledge_base_ids)), '[]'),
         NULL::text, NULL::uuid, 0
    FROM agents.agents a
    LEFT JOIN agents.agent_versions v
      ON v.tenant_id = a.tenant_id AND v.agent_id = a.id
     AND v.version = a.version
   WHERE a.tenant_id = p_tenant AND a.id = p_agent;
  -- Row 0 says why the agent cannot answer (no row, archived, nothing
  -- published): stop there, before any lock or session.
  IF NOT FOUND THEN
    RETURN;
  END IF;
  SELECT a.status = 'archived' OR v.id IS NULL INTO v_stop
    FROM agents.agents a
    LEFT JOIN agents.agent_versions v
      ON v.tenant_id = a.tenant_id AND v.agent_id = a.id
     AND v.version = a.version
   WHERE a.tenant_id = p_tenant AND a.id = p_agent;
  IF v_stop IS NOT FALSE THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended(p_tenant::text || '/'
                                                 || p_key, 0));
  IF p_message_id IS NOT NULL THEN
    RETURN QUERY
    SELECT NULL::text, NULL::int, NULL::uuid, NULL::text, NULL::text,
           NULL::text, NULL::text, NULL::float8, NULL::int, NULL::int,
           NULL::int, NULL::boolean, NULL::text, NULL::text, NULL::text,
           NULL::text, NULL::text, NULL::float8, NULL::int, NULL::text,
           NULL::text, NULL::text, NULL::text, NULL::bytea, NULL::text,
           NULL::text, m.reply::text, m.session_id, 0
      FROM agents.agent_messages m
     WHERE m.tenant_id = p_tenant AND m.message_id = p_message_id
       AND m.role = 'assistant';
    IF FOUND THEN
      RETURN;
    END IF;
  END IF;
  SELECT x.id, x.bot_turns,
         x.last_activity_at < now() - p_idle_ms * interval '1 millisecond'
           AS idle
    INTO s
    FROM agents.agent_sessions x
   WHERE x.tenant_id = p_tenant AND x.session_key = p_key
     AND x.status = 'active';
  IF FOUND AND NOT s.idle THEN
    session_id := s.id;
    bot_turns := s.bot_turns;
  ELSE
    IF FOUND THEN
      UPDATE agents.agent_sessions SET status = 'expired', ended_at = now()
       WHERE tenant_id = p_tenant AND id = s.id;
    END IF;
    INSERT INTO agents.agent_sessions (tenant_id, id, agent_id, session_key,
        channel_id, conversation_id, contact_id, website_domain, client_ip)
    VALUES (p_tenant, p_new_session, p_agent, p_key, p_channel,
        p_conversation, p_contact, p_domain, p_ip);
    session_id := p_new_session;
    bot_turns := 0;
  END IF;
  status := NULL; version := NULL; version_id := NULL; engine := NULL;
  llm_provider := NULL; llm_base_url := NULL; llm_model := NULL;
  llm_temperature := NULL; llm_max_tokens := NULL; llm_timeout_ms := NULL;
  llm_context_entries := NULL; has_key := NULL; system_prompt := NULL;
  greeting := NULL; fallback_message := NULL; kb_ids := NULL;
  keywords := NULL; threshold := NULL; max_bot_turns := NULL;
  language := NULL; voice_provider := NULL; voice_id := NULL;
  voice_settings := NULL; key_ct := NULL; key_kid := NULL;
  kb_versions := NULL; replay := NULL;
  RETURN NEXT;
END $$;

-- Step two: records one exchange (what agents_store_reply_record wrote:
-- the user's message, the answer with the whole ReplyResponse, the
-- session's counters and memory, the answering entry's usage count) and
-- the agent.replied event in the outbox (the row pl_outbox_add writes).
CREATE FUNCTION agents.reply_finish(
    p_tenant uuid, p_session uuid, p_user_msg uuid, p_text text,
    p_answer_msg uuid, p_reply_text text, p_tokens_in int,
    p_tokens_out int, p_latency int, p_model text, p_engine text,
    p_intent text, p_confidence float8, p_message_id text, p_reply jsonb,
    p_error text, p_entry uuid, p_bot_turns int, p_context jsonb,
    p_captured jsonb, p_agent uuid, p_event uuid, p_event_dest text,
    p_event_type text, p_event_dims jsonb, p_event_payload jsonb,
    p_touch_ms bigint)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('parley.tenant_id', p_tenant::text, true);
  INSERT INTO agents.agent_messages (tenant_id, id, session_id, role,
      content)
  VALUES (p_tenant, p_user_msg, p_session, 'user', p_text);
  INSERT INTO agents.agent_messages (tenant_id, id, session_id, role,
      content, tokens_in, tokens_out, latency_ms, model, engine, intent,
      confidence, message_id, reply, error)
  VALUES (p_tenant, p_answer_msg, p_session, 'assistant', p_reply_text,
      p_tokens_in, p_tokens_out, p_latency, p_model, p_engine, p_intent,
      p_confidence, p_message_id, p_reply, p_error);
  UPDATE agents.agent_sessions
     SET message_count = message_count + 2, bot_turns = p_bot_turns,
         agent_id = p_agent,
         -- last_activity_at is indexed (agent_sessions_recent): moving it
         -- on every reply made every update non-HOT (four index entries
         -- and a dead tuple each). It moves when older than p_touch_ms
         -- (a tenth of the inactivity limit, at most a minute).
         last_activity_at = CASE WHEN last_activity_at
             < now() - p_touch_ms * interval '1 millisecond'
             THEN now() ELSE last_activity_at END,
         context = jsonb_set(context || p_context, '{captured}',
                             coalesce(context -> 'captured', '{}')
                             || p_captured)
   WHERE tenant_id = p_tenant AND id = p_session;
  IF p_entry IS NOT NULL THEN
    INSERT INTO agents.knowledge_usage AS u (tenant_id, entry_id,
        usage_count)
    VALUES (p_tenant, p_entry, 1)
    ON CONFLICT (tenant_id, entry_id)
      DO UPDATE SET usage_count = u.usage_count + 1;
  END IF;
  IF p_event IS NOT NULL THEN
    INSERT INTO agents.outbox (id, destination, tenant_id, type,
        dimensions, payload)
    VALUES (p_event, p_event_dest, p_tenant, p_event_type,
        coalesce(p_event_dims, '{}'), coalesce(p_event_payload, '{}'));
  END IF;
END $$;

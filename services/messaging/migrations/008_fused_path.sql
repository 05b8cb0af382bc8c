-- One worker carries a message from the webhook to the provider when it
-- can (issue 6's throughput: two claims of five statements per message
-- were ~40 % of PostgreSQL's time, the reply claim's scan growing with the
-- backlog).
--
-- reply_claim_ids: the inbox worker claims the messages it has just
-- ingested, in the same transaction, under the same rules as reply_claim
-- (each the oldest pending message of its conversation, not leased),
-- without scanning the queue; what it does not get (a conversation's later
-- message, one leased elsewhere) stays for the reply workers.
--
-- reply_finish: an item with "lease" (ms) has its delivery inserted
-- claimed by the caller (attempt 1, next attempt after the lease, as
-- delivery_claim would leave it) and its result carries the recipient
-- (ext, ek), so the worker sends the reply at once; a crash before the
-- send's result is recorded leaves it to the delivery workers after the
-- lease. Items without "lease" (a replica of the previous build) are
-- queued as before.
CREATE FUNCTION messaging.reply_claim_ids(p_t uuid[], p_id uuid[], p_lease_ms int,
                                          p_history int)
RETURNS TABLE (tenant_id uuid, id uuid, conversation_id uuid, channel_id uuid,
               provider_message_id text, text text, created_at text, owner text,
               agent_id text, contact_id uuid, contact_name text, contact_phone text,
               contact_language text, history text)
LANGUAGE plpgsql AS
$$
#variable_conflict use_column
DECLARE
  r record;
  v_t uuid[] := '{}';
  v_id uuid[] := '{}';
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  -- One message at a time by its primary key, its state checked here: a
  -- set-based join put the pending index first (its statistics said
  -- "nearly empty") and compared every pending message with every other,
  -- 1.4 ms a batch at 500 msgs/s and seconds with a backlog.
  FOR i IN 1 .. coalesce(cardinality(p_id), 0) LOOP
    SELECT m.tenant_id, m.id, m.conversation_id, m.created_at, m.reply_state,
           m.reply_lease_until INTO r
      FROM messaging.messages m WHERE m.tenant_id = p_t[i] AND m.id = p_id[i]
       FOR UPDATE SKIP LOCKED;
    CONTINUE WHEN NOT FOUND OR r.reply_state <> 'pending' OR r.reply_lease_until >= now();
    CONTINUE WHEN EXISTS (
      SELECT 1 FROM messaging.messages e
       WHERE e.tenant_id = r.tenant_id AND e.conversation_id = r.conversation_id
         AND e.reply_state = 'pending' AND e.created_at <= r.created_at
         AND (e.created_at, e.id) < (r.created_at, r.id));
    v_t := v_t || r.tenant_id;
    v_id := v_id || r.id;
  END LOOP;
  IF cardinality(v_id) = 0 THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH u AS (
    UPDATE messaging.messages m SET reply_lease_until = now() + p_lease_ms * interval '1 millisecond'
     WHERE m.tenant_id = ANY (v_t) AND m.id = ANY (v_id)
    RETURNING m.tenant_id, m.id, m.conversation_id, m.channel_id, m.provider_message_id,
              m.text, m.created_at)
  SELECT u.tenant_id, u.id, u.conversation_id, u.channel_id,
         coalesce(u.provider_message_id, ''), u.text, messaging.fmt_ts(u.created_at), cv.owner,
         coalesce(cv.agent_id::text, ''), k.id, k.name, coalesce(k.phone, ''), k.language,
         (SELECT coalesce(jsonb_agg(jsonb_build_array(h.direction, h.text,
                                    messaging.fmt_ts(h.created_at)) ORDER BY h.id), '[]')::text
            FROM (SELECT x.direction, x.text, x.created_at, x.id FROM messaging.messages x
                   WHERE x.tenant_id = u.tenant_id AND x.conversation_id = u.conversation_id
                     AND x.id < u.id AND x.text <> ''
                   ORDER BY x.id DESC LIMIT p_history) h)
    FROM u
    JOIN messaging.conversations cv ON cv.tenant_id = u.tenant_id AND cv.id = u.conversation_id
    JOIN messaging.contacts k ON k.tenant_id = cv.tenant_id AND k.id = cv.contact_id
   ORDER BY u.created_at, u.id;
END
$$;

CREATE OR REPLACE FUNCTION messaging.reply_finish(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS
$$
DECLARE
  it jsonb;
  res jsonb := '[]';
  v_t uuid;
  v_state text;
  v_owner text;
  v_outcome text;
  v_rid uuid;
  v_dims jsonb;
  v_n bigint;
  v_lease bigint;
  v_ts uuid[];
  v_cvs uuid[];
  v_ext text;
  v_ek text;
BEGIN
  -- The batch's conversations locked first, in one order (see
  -- ingest_batch).
  PERFORM set_config('parley.tenant_id', '*', true);
  -- By the primary key with arrays (a join with jsonb_to_recordset, 100
  -- rows to the planner, was a hash join over every conversation).
  SELECT array_agg(x.t), array_agg(x.cv) INTO v_ts, v_cvs
    FROM jsonb_to_recordset(p) AS x(t uuid, cv uuid);
  SELECT count(*) INTO v_n FROM (
    SELECT c.id FROM messaging.conversations c
     WHERE c.tenant_id = ANY (v_ts) AND c.id = ANY (v_cvs)
     ORDER BY c.tenant_id, c.id FOR UPDATE OF c) l;
  FOR it IN SELECT * FROM jsonb_array_elements(p) LOOP
    v_t := (it->>'t')::uuid;
    PERFORM set_config('parley.tenant_id', v_t::text, true);
    SELECT reply_state INTO v_state FROM messaging.messages
     WHERE tenant_id = v_t AND id = (it->>'mid')::uuid FOR UPDATE;
    IF v_state IS DISTINCT FROM 'pending' THEN
      res := res || jsonb_build_object('mid', it->>'mid', 'rid', NULL, 'done', false);
      CONTINUE;
    END IF;
    SELECT owner INTO v_owner FROM messaging.conversations
     WHERE tenant_id = v_t AND id = (it->>'cv')::uuid FOR UPDATE;
    v_outcome := it->>'outcome';
    -- A person took it over while the agent was thinking: the bot stays
    -- silent.
    IF it->>'text' IS NOT NULL AND v_owner = 'human' THEN
      v_outcome := 'human_owned';
    END IF;
    v_dims := jsonb_build_object('channel_id', it->>'ch', 'conversation_id', it->>'cv',
                                 'contact_id', it->>'ct');
    v_rid := NULL;
    v_lease := NULL;
    IF v_outcome <> 'human_owned' AND coalesce(it->>'text', '') <> '' THEN
      v_rid := (it->>'rid')::uuid;
      INSERT INTO messaging.messages (tenant_id, id, conversation_id, channel_id, direction,
          sender, agent_id, type, text, status, queued_at, metadata)
      VALUES (v_t, v_rid, (it->>'cv')::uuid, (it->>'ch')::uuid, 'outbound', 'bot',
              nullif(it->>'agent', '')::uuid, 'text', it->>'text', 'queued', now(), '{}');
      v_lease := (it->>'lease')::bigint;
      IF v_lease IS NULL THEN
        INSERT INTO messaging.deliveries (tenant_id, id, message_id, channel_id)
        VALUES (v_t, (it->>'did')::uuid, v_rid, (it->>'ch')::uuid);
      ELSE
        -- Claimed by the caller (its first attempt, leased as
        -- delivery_claim does), with the recipient.
        INSERT INTO messaging.deliveries (tenant_id, id, message_id, channel_id, attempts,
            next_attempt_at)
        VALUES (v_t, (it->>'did')::uuid, v_rid, (it->>'ch')::uuid, 1,
                now() + v_lease * interval '1 millisecond');
        SELECT k.external_id, k.external_id_kind INTO v_ext, v_ek FROM messaging.contacts k
         WHERE k.tenant_id = v_t AND k.id = (it->>'ct')::uuid;
      END IF;
    END IF;
    IF v_rid IS NOT NULL OR (v_outcome <> 'human_owned' AND coalesce((it->>'handoff')::boolean, false)) THEN
      UPDATE messaging.conversations SET
        message_count = message_count + CASE WHEN v_rid IS NULL THEN 0 ELSE 1 END,
        last_activity_at = CASE WHEN v_rid IS NULL THEN last_activity_at ELSE now() END,
        last_bot_message_at = CASE WHEN v_rid IS NULL THEN last_bot_message_at ELSE now() END,
        owner = CASE WHEN (it->>'handoff')::boolean THEN 'human' ELSE owner END,
        status = CASE WHEN (it->>'handoff')::boolean THEN 'pending' ELSE status END,
        handoff_reason = CASE WHEN (it->>'handoff')::boolean THEN coalesce(it->>'reason', '')
                              ELSE handoff_reason END,
        updated_at = now()
       WHERE tenant_id = v_t AND id = (it->>'cv')::uuid;
      IF (it->>'handoff')::boolean THEN
        PERFORM messaging.emit(v_t, 'conversation.handoff', v_dims,
          jsonb_build_object('reason', coalesce(it->>'reason', ''), 'by', 'bot'));
      END IF;
    END IF;
    IF it->>'limit' IS NOT NULL THEN
      PERFORM messaging.emit(v_t, 'limit.reached', v_dims,
        jsonb_build_object('metric', 'messages', 'limit', it->>'limit',
                           'message_id', it->>'mid'));
    END IF;
    UPDATE messaging.messages SET reply_state = 'done', reply_outcome = v_outcome,
           reply_lease_until = NULL, metadata = metadata || coalesce(it->'meta', '{}')
     WHERE tenant_id = v_t AND id = (it->>'mid')::uuid;
    res := res || CASE WHEN v_rid IS NOT NULL AND v_lease IS NOT NULL
                       THEN jsonb_build_object('mid', it->>'mid', 'rid', v_rid, 'done', true,
                                               'ext', v_ext, 'ek', v_ek)
                       ELSE jsonb_build_object('mid', it->>'mid', 'rid', v_rid, 'done', true) END;
  END LOOP;
  RETURN res;
END
$$;

-- Nothing reads pending messages in created_at order alone, and with
-- statistics taken while few messages were pending the planner preferred
-- this index to the primary key for single-message lookups.
DROP INDEX messaging.messages_reply_due;

-- The outbox insert in PL/pgSQL: a LANGUAGE sql function that is not
-- inlinable (an INSERT) is parsed and planned again at each call site in
-- every transaction, and the batch functions call it once or twice per
-- message (base_yyparse and the planner were ~5 % of PostgreSQL's samples
-- in the messaging bench); PL/pgSQL keeps the plan for the session.
CREATE OR REPLACE FUNCTION messaging.emit(p_tenant uuid, p_type text, p_dims jsonb,
                                          p_payload jsonb)
RETURNS void LANGUAGE plpgsql AS
$$
BEGIN
  INSERT INTO messaging.outbox (id, destination, tenant_id, type, dimensions, payload)
  VALUES (messaging.uuid7(), 'analytics', p_tenant, p_type, coalesce(p_dims, '{}'),
          coalesce(p_payload, '{}'));
END
$$;

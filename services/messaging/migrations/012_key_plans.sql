-- The hot path's batch functions address rows by key: a batch's ids
-- (jsonb_to_recordset, unnest, = ANY) probed into inbox, messages,
-- conversations and contacts. The planner rates a set-returning function
-- at 100 rows whatever it holds, so on a young table (a new deployment,
-- a bench, a tenant's first thousand messages) it preferred a hash join
-- over a sequential scan of the whole table: auto_explain on issue 6's
-- bench found the inbox's processed_at UPDATE reading 250-640 buffers for
-- 25 rows, and seq scans of conversations, messages and inbox in
-- reply_claim_ids, reply_finish and inbox_lock. Those plans are cached
-- per connection until the next invalidation, so the cost stayed.
--
-- These functions now plan as billing.reserve_batch does: no sequential
-- scans where an index reaches the rows, nested loops of index probes.
-- inbox_lock's scan of the due bodies reads its partial index inbox_due
-- either way; the claim functions (reply_claim, delivery_claim) keep
-- 006's custom plans.
--
-- A batch's rows were also found with `tenant_id = ANY (tenants) AND id =
-- ANY (ids)`: the index scan probes every (tenant, id) combination of the
-- two arrays, so a batch of 25 messages from 8 tenants made 200 probes
-- (reply_claim_ids' UPDATE read ~460 buffers a call). The pairs are now
-- matched as pairs, `(tenant_id, id) IN (SELECT * FROM unnest(...))`: one
-- probe each. Same rows, same order, same locks.
ALTER FUNCTION messaging.ingest_batch(jsonb)
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION messaging.delivery_done(jsonb)
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan;

-- 009's inbox_lock, the pairs matched as pairs.
CREATE OR REPLACE FUNCTION messaging.inbox_lock(p_limit int)
RETURNS TABLE (tenant_id uuid, id uuid, channel_id uuid, channel_type text, body text)
LANGUAGE plpgsql
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan AS
$$
#variable_conflict use_column
DECLARE
  v_ts uuid[];
  v_ids uuid[];
  v_direct uuid[];
  v_blocked text[] := '{}';
  c record;
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  SELECT array_agg(l.tenant_id), array_agg(l.id) INTO v_ts, v_ids FROM (
    SELECT i.tenant_id, i.id FROM messaging.inbox i
     WHERE i.processed_at IS NULL AND (i.lease_until IS NULL OR i.lease_until < now())
     ORDER BY i.received_at, i.id LIMIT p_limit FOR UPDATE SKIP LOCKED) l;
  IF v_ids IS NULL THEN
    RETURN;
  END IF;
  SELECT array_agg(r.id) INTO v_direct FROM messaging.inbox r
   WHERE (r.tenant_id, r.id) IN (SELECT * FROM unnest(v_ts, v_ids)) AND r.senders IS NOT NULL
     AND EXISTS (
       SELECT 1 FROM messaging.inbox e
        WHERE e.processed_at IS NULL AND e.received_at <= r.received_at
          AND (e.received_at, e.id) < (r.received_at, r.id)
          AND e.tenant_id = r.tenant_id AND e.senders && r.senders
          AND NOT (e.id = ANY (v_ids)));
  FOR c IN SELECT i.tenant_id, i.id, i.channel_id, i.channel_type, i.senders,
                  encode(i.body, 'base64') AS b64
             FROM messaging.inbox i
            WHERE (i.tenant_id, i.id) IN (SELECT * FROM unnest(v_ts, v_ids))
            ORDER BY i.received_at, i.id LOOP
    IF c.senders IS NOT NULL AND (c.id = ANY (coalesce(v_direct, '{}')) OR c.senders && v_blocked) THEN
      v_blocked := v_blocked || c.senders;
      CONTINUE;
    END IF;
    tenant_id := c.tenant_id;
    id := c.id;
    channel_id := c.channel_id;
    channel_type := c.channel_type;
    body := c.b64;
    RETURN NEXT;
  END LOOP;
END
$$;

-- 008's reply_claim_ids, the pairs matched as pairs.
CREATE OR REPLACE FUNCTION messaging.reply_claim_ids(p_t uuid[], p_id uuid[], p_lease_ms int,
                                          p_history int)
RETURNS TABLE (tenant_id uuid, id uuid, conversation_id uuid, channel_id uuid,
               provider_message_id text, text text, created_at text, owner text,
               agent_id text, contact_id uuid, contact_name text, contact_phone text,
               contact_language text, history text)
LANGUAGE plpgsql
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan AS
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
     WHERE (m.tenant_id, m.id) IN (SELECT * FROM unnest(v_t, v_id))
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

-- 008's reply_finish, the batch's conversations locked as pairs.
CREATE OR REPLACE FUNCTION messaging.reply_finish(p jsonb) RETURNS jsonb
LANGUAGE plpgsql
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan AS
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
     WHERE (c.tenant_id, c.id) IN (SELECT * FROM unnest(v_ts, v_cvs))
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

-- 005's reply_claim (custom plans, as 006 set), the pairs matched as pairs.
CREATE OR REPLACE FUNCTION messaging.reply_claim(p_limit int, p_lease_ms int, p_history int)
RETURNS TABLE (tenant_id uuid, id uuid, conversation_id uuid, channel_id uuid,
               provider_message_id text, text text, created_at text, owner text,
               agent_id text, contact_id uuid, contact_name text, contact_phone text,
               contact_language text, history text)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS
$$
#variable_conflict use_column
DECLARE
  v_t uuid[];
  v_id uuid[];
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  -- The oldest pending message of each conversation (one scan of the
  -- pending ones), the oldest of those not leased first. Steps with arrays
  -- keep the plans on the primary key whatever the statistics say.
  SELECT array_agg(f.tenant_id), array_agg(f.id) INTO v_t, v_id FROM (
    SELECT f0.tenant_id, f0.id FROM (
      SELECT DISTINCT ON (p.tenant_id, p.conversation_id) p.tenant_id, p.id, p.created_at,
             p.reply_lease_until
        FROM messaging.messages p WHERE p.reply_state = 'pending'
       ORDER BY p.tenant_id, p.conversation_id, p.created_at, p.id) f0
     WHERE f0.reply_lease_until IS NULL OR f0.reply_lease_until < now()
     ORDER BY f0.created_at, f0.id LIMIT p_limit * 2) f;
  IF v_id IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH c AS (
    SELECT p.tenant_id, p.id FROM messaging.messages p
     WHERE (p.tenant_id, p.id) IN (SELECT * FROM unnest(v_t, v_id))
       AND p.reply_state = 'pending'
       AND (p.reply_lease_until IS NULL OR p.reply_lease_until < now())
     ORDER BY p.created_at, p.id LIMIT p_limit FOR UPDATE SKIP LOCKED),
  u AS (
    UPDATE messaging.messages m SET reply_lease_until = now() + p_lease_ms * interval '1 millisecond'
      FROM c WHERE m.tenant_id = c.tenant_id AND m.id = c.id
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

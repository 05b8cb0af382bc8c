-- The message path in batches (issue 6's throughput): each stage is one
-- statement for a whole batch instead of ~10 round trips per message.
--   webhook   messaging.inbox_add       one row, one round trip
--   inbox     messaging.ingest_batch    every item of the rows the worker
--                                       locked, and the rows marked done
--   reply     messaging.reply_claim     N pending messages with their
--                                       contact and history (the lease)
--             messaging.reply_finish    N bot turns stored and queued
--   delivery  messaging.delivery_claim  N due deliveries with what to send
--             messaging.delivery_done   N results (sent, retry, failed)
-- Ids of new rows come from the caller (UUIDv7, monotonic in a process), so
-- rows made in one batch keep their order. Functions that span tenants set
-- parley.tenant_id to each item's tenant before touching its rows, and to
-- '*' (service level) only for the queues' claims.

-- One event for the outbox relay (pl/outbox.h's row shape; destination
-- analytics, as store.c's event()).
CREATE FUNCTION messaging.emit(p_tenant uuid, p_type text, p_dims jsonb, p_payload jsonb)
RETURNS void LANGUAGE sql AS
$$ INSERT INTO messaging.outbox (id, destination, tenant_id, type, dimensions, payload)
   VALUES (messaging.uuid7(), 'analytics', p_tenant, p_type,
           coalesce(p_dims, '{}'), coalesce(p_payload, '{}')) $$;

-- messaging_status_advances (webhook.c) in SQL.
CREATE FUNCTION messaging.status_advances(p_cur text, p_next text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE
     WHEN messaging.status_rank(p_next) <= 1 THEN false
     WHEN p_cur = 'failed' THEN false
     WHEN p_next = 'failed' THEN messaging.status_rank(p_cur) < 4
     ELSE messaging.status_rank(p_next) > messaging.status_rank(p_cur) END $$;

-- Applies one status to a message whose current status is p_cur, forward
-- only (a late status fills its own time column without moving the status
-- back; failed is terminal); message.status when it moved. True when it
-- moved.
CREATE FUNCTION messaging.status_apply(p_tenant uuid, p_msg uuid, p_cur text, p_st text,
                                       p_at timestamptz, p_code text, p_text text)
RETURNS boolean LANGUAGE plpgsql AS
$$
DECLARE
  adv boolean := messaging.status_advances(p_cur, p_st);
  t timestamptz := coalesce(p_at, now());
BEGIN
  IF p_st NOT IN ('sent', 'delivered', 'read', 'played', 'failed') THEN
    RETURN adv;
  END IF;
  IF NOT adv AND (p_cur = 'failed' OR p_st = 'failed') THEN
    RETURN false;
  END IF;
  UPDATE messaging.messages SET
    status = CASE WHEN adv THEN p_st ELSE status END,
    sent_at = CASE WHEN p_st = 'sent' THEN coalesce(sent_at, t) ELSE sent_at END,
    delivered_at = CASE WHEN p_st = 'delivered' THEN coalesce(delivered_at, t) ELSE delivered_at END,
    read_at = CASE WHEN p_st = 'read' THEN coalesce(read_at, t) ELSE read_at END,
    played_at = CASE WHEN p_st = 'played' THEN coalesce(played_at, t) ELSE played_at END,
    failed_at = CASE WHEN p_st = 'failed' THEN coalesce(failed_at, t) ELSE failed_at END,
    error_code = CASE WHEN p_st = 'failed' THEN coalesce(p_code, '') ELSE error_code END,
    error_text = CASE WHEN p_st = 'failed' THEN coalesce(p_text, '') ELSE error_text END
  WHERE tenant_id = p_tenant AND id = p_msg;
  IF adv THEN
    PERFORM messaging.emit(p_tenant, 'message.status', NULL,
      jsonb_build_object('message_id', p_msg, 'status', p_st, 'previous_status', p_cur));
  END IF;
  RETURN adv;
END
$$;

-- HandleWebhook's one statement: the raw body into the inbox, or the id of
-- the same bytes accepted before.
CREATE FUNCTION messaging.inbox_add(p_tenant uuid, p_id uuid, p_channel uuid, p_type text,
                                    p_body_b64 text, p_ip text,
                                    OUT o_id uuid, OUT o_duplicate boolean)
LANGUAGE plpgsql AS
$$
DECLARE
  b bytea := decode(p_body_b64, 'base64');
BEGIN
  PERFORM set_config('parley.tenant_id', p_tenant::text, true);
  INSERT INTO messaging.inbox (tenant_id, id, channel_id, channel_type, body, body_sha256, source_ip)
  VALUES (p_tenant, p_id, p_channel, p_type, b, sha256(b), coalesce(p_ip, ''))
  ON CONFLICT (tenant_id, channel_id, body_sha256) DO NOTHING
  RETURNING id INTO o_id;
  o_duplicate := o_id IS NULL;
  IF o_duplicate THEN
    SELECT id INTO o_id FROM messaging.inbox
     WHERE tenant_id = p_tenant AND channel_id = p_channel AND body_sha256 = sha256(b);
  END IF;
END
$$;

-- The inbox worker's batch, in the caller's transaction (which locked the
-- inbox rows FOR UPDATE SKIP LOCKED). p: {"inbox": [{t, id, err}], "items":
-- [...]} with items in arrival order:
--   message {k:"m", t, ch, cht, ag, pid, mid, kid, vid, ext, kind, ph, phr,
--            bu, pu, nm, pr, ty, tx, mu, mm, pc, md, rw}
--   status  {k:"s", t, ch, pid, sid, st, at, ec, et}
-- Per message, as one transaction did before: the sender's advisory lock
-- (all taken first, in a fixed order: no deadlock between batches), the
-- duplicate check by provider id (a duplicate makes nothing new), the
-- contact (business-scoped id first, else the external id), the open
-- conversation, the message, the conversation's times, the events. Returns
-- [{mid, t, ch, cv, ct, dup, kw}] per message; kw: the text may be an
-- opt-out/opt-in keyword (the caller runs engage_on_inbound for it).
CREATE FUNCTION messaging.ingest_batch(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS
$$
DECLARE
  it jsonb;
  res jsonb := '[]';
  v_t uuid;
  v_ch uuid;
  v_mid uuid;
  v_contact uuid;
  v_conv uuid;
  v_new boolean;
  v_cur text;
  v_dims jsonb;
  v_kw boolean;
  v_n bigint;
  v_ws text := E' \t\n\r\v\f';
  k record;
BEGIN
  PERFORM pg_advisory_xact_lock(h)
     FROM (SELECT DISTINCT hashtextextended((i->>'t') || '|' || (i->>'ch') || '|' || (i->>'ext'), 0) AS h
             FROM jsonb_array_elements(p->'items') i WHERE i->>'k' = 'm' ORDER BY 1) s;
  -- The open conversations of those senders, locked in one order, as
  -- reply_finish and delivery_done lock theirs, before any other row: the
  -- three batch statements never deadlock on each other.
  WITH snd AS (
    SELECT DISTINCT (i->>'t')::uuid AS t, (i->>'ch')::uuid AS ch, i->>'ext' AS ext,
           i->>'bu' AS bu
      FROM jsonb_array_elements(p->'items') i WHERE i->>'k' = 'm'),
  who AS (
    SELECT ct.tenant_id, ct.id FROM messaging.contacts ct
      JOIN snd ON ct.tenant_id = snd.t AND ct.channel_id = snd.ch AND ct.external_id = snd.ext
    UNION
    SELECT ct.tenant_id, ct.id FROM messaging.contacts ct
      JOIN snd ON ct.tenant_id = snd.t AND ct.channel_id = snd.ch AND ct.business_user_id = snd.bu),
  l AS (
    SELECT c.id FROM messaging.conversations c
      JOIN who ON c.tenant_id = who.tenant_id AND c.contact_id = who.id
     WHERE c.status <> 'closed'
     ORDER BY c.tenant_id, c.id FOR UPDATE OF c)
  SELECT count(*) INTO v_n FROM l;
  FOR it IN SELECT * FROM jsonb_array_elements(p->'items') LOOP
    v_t := (it->>'t')::uuid;
    v_ch := (it->>'ch')::uuid;
    PERFORM set_config('parley.tenant_id', v_t::text, true);
    IF it->>'k' = 's' THEN
      SELECT m.id, m.status INTO v_mid, v_cur FROM messaging.messages m
       WHERE m.tenant_id = v_t AND m.channel_id = v_ch AND m.provider_message_id = it->>'pid'
       FOR UPDATE;
      IF FOUND THEN
        PERFORM messaging.status_apply(v_t, v_mid, v_cur, it->>'st', (it->>'at')::timestamptz,
                                       it->>'ec', it->>'et');
      ELSE
        INSERT INTO messaging.pending_statuses (tenant_id, id, channel_id, provider_message_id,
                                                status, at, error_code, error_text)
        VALUES (v_t, (it->>'sid')::uuid, v_ch, it->>'pid', it->>'st',
                coalesce((it->>'at')::timestamptz, now()), coalesce(it->>'ec', ''),
                coalesce(it->>'et', ''));
      END IF;
      CONTINUE;
    END IF;
    SELECT m.id, m.conversation_id INTO v_mid, v_conv FROM messaging.messages m
     WHERE m.tenant_id = v_t AND m.channel_id = v_ch AND m.provider_message_id = it->>'pid';
    IF FOUND THEN
      res := res || jsonb_build_object('mid', v_mid, 't', v_t, 'ch', v_ch, 'cv', v_conv,
                                       'dup', true, 'kw', false);
      CONTINUE;
    END IF;
    -- The contact: a contact first seen by its business-scoped id keeps it
    -- when the phone becomes visible, and the other way round.
    v_contact := NULL;
    IF coalesce(it->>'bu', '') <> '' THEN
      SELECT id INTO v_contact FROM messaging.contacts
       WHERE tenant_id = v_t AND channel_id = v_ch AND business_user_id = it->>'bu' LIMIT 1;
    END IF;
    IF v_contact IS NOT NULL THEN
      UPDATE messaging.contacts c SET
        name = CASE WHEN coalesce(it->>'nm', '') <> '' THEN it->>'nm' ELSE c.name END,
        phone = coalesce(c.phone, it->>'ph'), phone_raw = coalesce(c.phone_raw, it->>'phr'),
        parent_user_id = coalesce(it->>'pu', c.parent_user_id), updated_at = now()
       WHERE tenant_id = v_t AND id = v_contact;
    ELSE
      SELECT * INTO k FROM messaging.contacts
       WHERE tenant_id = v_t AND channel_id = v_ch AND external_id = it->>'ext';
      IF NOT FOUND THEN
        INSERT INTO messaging.contacts AS c (tenant_id, id, channel_id, external_id,
            external_id_kind, phone, phone_raw, business_user_id, parent_user_id, name, profile)
        VALUES (v_t, (it->>'kid')::uuid, v_ch, it->>'ext', it->>'kind', it->>'ph', it->>'phr',
                it->>'bu', it->>'pu', coalesce(it->>'nm', ''), coalesce(it->'pr', '{}'))
        ON CONFLICT (tenant_id, channel_id, external_id) DO UPDATE SET updated_at = now()
        RETURNING id INTO v_contact;
      ELSE
        v_contact := k.id;
        -- Written only when the provider said something new.
        IF (coalesce(it->>'nm', '') <> '' AND it->>'nm' <> k.name)
           OR (it->>'bu' IS NOT NULL AND it->>'bu' IS DISTINCT FROM k.business_user_id)
           OR (it->>'pu' IS NOT NULL AND it->>'pu' IS DISTINCT FROM k.parent_user_id)
           OR (it->'pr' IS NOT NULL AND it->'pr' <> k.profile) THEN
          UPDATE messaging.contacts c SET
            name = CASE WHEN coalesce(it->>'nm', '') <> '' THEN it->>'nm' ELSE c.name END,
            business_user_id = coalesce(it->>'bu', c.business_user_id),
            parent_user_id = coalesce(it->>'pu', c.parent_user_id),
            profile = coalesce(it->'pr', c.profile), updated_at = now()
           WHERE tenant_id = v_t AND id = v_contact;
        END IF;
      END IF;
    END IF;
    -- The open conversation (its times moved in the same statement).
    v_new := false;
    UPDATE messaging.conversations SET last_inbound_at = now(), last_activity_at = now(),
           message_count = message_count + 1, updated_at = now()
     WHERE tenant_id = v_t AND contact_id = v_contact AND status <> 'closed'
     RETURNING id INTO v_conv;
    IF NOT FOUND THEN
      v_conv := (it->>'vid')::uuid;
      v_new := true;
      INSERT INTO messaging.conversations (tenant_id, id, contact_id, channel_id, agent_id,
          message_count, last_inbound_at, last_activity_at)
      VALUES (v_t, v_conv, v_contact, v_ch, nullif(it->>'ag', '')::uuid, 1, now(), now());
    END IF;
    v_mid := (it->>'mid')::uuid;
    INSERT INTO messaging.messages (tenant_id, id, conversation_id, channel_id, direction, sender,
        type, text, media_url, media_mime_type, provider_message_id, status,
        provider_created_at, metadata, reply_state)
    VALUES (v_t, v_mid, v_conv, v_ch, 'inbound', 'contact', it->>'ty', coalesce(it->>'tx', ''),
            coalesce(it->>'mu', ''), coalesce(it->>'mm', ''), it->>'pid', 'received',
            (it->>'pc')::timestamptz, coalesce(it->'md', '{}'),
            CASE WHEN (it->>'rw')::boolean THEN 'pending' ELSE 'done' END);
    v_dims := jsonb_build_object('channel_id', v_ch, 'conversation_id', v_conv,
                                 'contact_id', v_contact);
    IF v_new THEN
      PERFORM messaging.emit(v_t, 'conversation.started', v_dims, '{}');
    END IF;
    PERFORM messaging.emit(v_t, 'message.received', v_dims,
      jsonb_build_object('message_id', v_mid, 'type', it->>'ty', 'channel_type',
        CASE it->>'cht' WHEN '1' THEN 'whatsapp_cloud' WHEN '2' THEN 'infobip'
                        WHEN '3' THEN 'webchat' ELSE '' END));
    -- Whole-message keywords (engage_keyword_match: trimmed, trailing '.'
    -- and '!' dropped, any case; STOP, UNSUBSCRIBE, BAJA when the tenant
    -- set none): a superset is flagged, engage_on_inbound decides.
    v_kw := false;
    IF coalesce(it->>'tx', '') <> '' AND length(it->>'tx') <= 64 THEN
      SELECT upper(rtrim(ltrim(it->>'tx', v_ws), v_ws || '.!')) = ANY (
               coalesce(nullif(s.opt_out_keywords, '{}'), ARRAY['STOP', 'UNSUBSCRIBE', 'BAJA'])
               || s.opt_in_keywords)
        INTO v_kw
        FROM (SELECT NULL) d
        LEFT JOIN messaging.settings s ON s.tenant_id = v_t
       LIMIT 1;
      v_kw := coalesce(v_kw, false);
    END IF;
    res := res || jsonb_build_object('mid', v_mid, 't', v_t, 'ch', v_ch, 'cv', v_conv,
                                     'ct', v_contact, 'dup', false, 'kw', v_kw);
  END LOOP;
  PERFORM set_config('parley.tenant_id', '*', true);
  UPDATE messaging.inbox i SET processed_at = now(), attempts = attempts + 1,
         last_error = x.err, lease_until = NULL
    FROM jsonb_to_recordset(coalesce(p->'inbox', '[]')) AS x(t uuid, id uuid, err text)
   WHERE i.tenant_id = x.t AND i.id = x.id;
  RETURN res;
END
$$;

-- The reply workers' claim (service level): up to p_limit pending inbound
-- messages, each the oldest pending one of its conversation (one at a time
-- per conversation, in order), leased for p_lease_ms, with what the agent
-- needs: the conversation's owner and agent, the contact, and the last
-- p_history turns (oldest first, as JSON [[direction, text, at], ...]).
CREATE FUNCTION messaging.reply_claim(p_limit int, p_lease_ms int, p_history int)
RETURNS TABLE (tenant_id uuid, id uuid, conversation_id uuid, channel_id uuid,
               provider_message_id text, text text, created_at text, owner text,
               agent_id text, contact_id uuid, contact_name text, contact_phone text,
               contact_language text, history text)
LANGUAGE plpgsql AS
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
     WHERE p.tenant_id = ANY (v_t) AND p.id = ANY (v_id)
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

-- The bot's turns of a batch, in one transaction: for each inbound message
-- still pending (another worker may have finished it: then nothing), the
-- reply stored and queued for delivery unless a person owns the
-- conversation now, the handoff applied, limit.reached, the message marked
-- done. p: [{t, mid, cv, ch, ct, outcome, text, agent, handoff, reason,
-- meta, limit, rid, did}]. Returns [{mid, rid, done}] (rid null: nothing
-- queued; done false: it was finished before).
CREATE FUNCTION messaging.reply_finish(p jsonb) RETURNS jsonb
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
BEGIN
  -- The batch's conversations locked first, in one order (see
  -- ingest_batch).
  PERFORM set_config('parley.tenant_id', '*', true);
  SELECT count(*) INTO v_n FROM (
    SELECT c.id FROM messaging.conversations c
      JOIN jsonb_to_recordset(p) AS x(t uuid, cv uuid) ON c.tenant_id = x.t AND c.id = x.cv
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
    IF v_outcome <> 'human_owned' AND coalesce(it->>'text', '') <> '' THEN
      v_rid := (it->>'rid')::uuid;
      INSERT INTO messaging.messages (tenant_id, id, conversation_id, channel_id, direction,
          sender, agent_id, type, text, status, queued_at, metadata)
      VALUES (v_t, v_rid, (it->>'cv')::uuid, (it->>'ch')::uuid, 'outbound', 'bot',
              nullif(it->>'agent', '')::uuid, 'text', it->>'text', 'queued', now(), '{}');
      INSERT INTO messaging.deliveries (tenant_id, id, message_id, channel_id)
      VALUES (v_t, (it->>'did')::uuid, v_rid, (it->>'ch')::uuid);
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
    res := res || jsonb_build_object('mid', it->>'mid', 'rid', v_rid, 'done', true);
  END LOOP;
  RETURN res;
END
$$;

-- The delivery workers' claim (service level): up to p_limit due
-- deliveries, their next attempt pushed past the send's budget (the lease),
-- with the message and the recipient, oldest first.
CREATE FUNCTION messaging.delivery_claim(p_limit int, p_lease_ms int)
RETURNS TABLE (tenant_id uuid, id uuid, message_id uuid, channel_id uuid, attempts int,
               conversation_id uuid, type text, text text, media_url text,
               external_id text, external_id_kind text)
LANGUAGE plpgsql AS
$$
#variable_conflict use_column
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  RETURN QUERY
  WITH c AS (
    SELECT d.tenant_id, d.id FROM messaging.deliveries d
     WHERE d.done_at IS NULL AND d.next_attempt_at <= now()
     ORDER BY d.next_attempt_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
  u AS (
    UPDATE messaging.deliveries d SET next_attempt_at = now() + p_lease_ms * interval '1 millisecond',
           attempts = d.attempts + 1
      FROM c WHERE d.tenant_id = c.tenant_id AND d.id = c.id
    RETURNING d.tenant_id, d.id, d.message_id, d.channel_id, d.attempts)
  SELECT u.tenant_id, u.id, u.message_id, u.channel_id, u.attempts, m.conversation_id, m.type,
         m.text, m.media_url, k.external_id, k.external_id_kind
    FROM u
    JOIN messaging.messages m ON m.tenant_id = u.tenant_id AND m.id = u.message_id
    JOIN messaging.conversations cv ON cv.tenant_id = m.tenant_id AND cv.id = m.conversation_id
    JOIN messaging.contacts k ON k.tenant_id = cv.tenant_id AND k.id = cv.contact_id
   ORDER BY m.id;
END
$$;

-- The results of a batch of sends. p: [{t, did, mid, cv, ch, r, pid, ms,
-- code, text}] with r one of
--   sent   the message sent with its provider id (statuses kept for that id
--          applied), the conversation's last outbound time, message.sent
--   retry  the next attempt in ms, last_error = text
--   failed the message failed with the provider's code and text
CREATE FUNCTION messaging.delivery_done(p jsonb) RETURNS void
LANGUAGE plpgsql AS
$$
DECLARE
  it jsonb;
  v_t uuid;
  v_mid uuid;
  v_sender text;
  v_conv uuid;
  v_cur text;
  v_n bigint;
  ps record;
BEGIN
  -- The batch's conversations locked first, in one order (see
  -- ingest_batch).
  PERFORM set_config('parley.tenant_id', '*', true);
  SELECT count(*) INTO v_n FROM (
    SELECT c.id FROM messaging.conversations c
      JOIN jsonb_to_recordset(p) AS x(t uuid, cv uuid, r text) ON c.tenant_id = x.t AND c.id = x.cv
     WHERE x.r = 'sent'
     ORDER BY c.tenant_id, c.id FOR UPDATE OF c) l;
  FOR it IN SELECT * FROM jsonb_array_elements(p) LOOP
    v_t := (it->>'t')::uuid;
    v_mid := (it->>'mid')::uuid;
    PERFORM set_config('parley.tenant_id', v_t::text, true);
    IF it->>'r' = 'sent' THEN
      UPDATE messaging.messages SET provider_message_id = it->>'pid',
             status = CASE WHEN messaging.status_rank(status) < 3 THEN 'sent' ELSE status END,
             sent_at = coalesce(sent_at, now())
       WHERE tenant_id = v_t AND id = v_mid
      RETURNING sender, conversation_id INTO v_sender, v_conv;
      UPDATE messaging.deliveries SET done_at = now(), last_error = NULL
       WHERE tenant_id = v_t AND id = (it->>'did')::uuid;
      UPDATE messaging.conversations SET last_outbound_at = now(), updated_at = now()
       WHERE tenant_id = v_t AND id = v_conv;
      PERFORM messaging.emit(v_t, 'message.sent', NULL,
        jsonb_build_object('message_id', v_mid, 'sender', coalesce(v_sender, ''), 'type', 'text'));
      FOR ps IN DELETE FROM messaging.pending_statuses
                 WHERE tenant_id = v_t AND channel_id = (it->>'ch')::uuid
                   AND provider_message_id = it->>'pid'
                RETURNING status, at, error_code, error_text LOOP
        SELECT status INTO v_cur FROM messaging.messages WHERE tenant_id = v_t AND id = v_mid;
        PERFORM messaging.status_apply(v_t, v_mid, v_cur, ps.status, ps.at, ps.error_code,
                                       ps.error_text);
      END LOOP;
    ELSIF it->>'r' = 'retry' THEN
      UPDATE messaging.deliveries
         SET next_attempt_at = now() + (it->>'ms')::bigint * interval '1 millisecond',
             last_error = it->>'text'
       WHERE tenant_id = v_t AND id = (it->>'did')::uuid;
    ELSE
      UPDATE messaging.messages SET status = 'failed', failed_at = now(),
             error_code = coalesce(it->>'code', ''), error_text = coalesce(it->>'text', '')
       WHERE tenant_id = v_t AND id = v_mid;
      UPDATE messaging.deliveries SET done_at = now(), last_error = coalesce(it->>'text', '')
       WHERE tenant_id = v_t AND id = (it->>'did')::uuid;
      PERFORM messaging.emit(v_t, 'message.status', NULL,
        jsonb_build_object('message_id', v_mid, 'status', 'failed', 'previous_status', 'queued'));
    END IF;
  END LOOP;
END
$$;

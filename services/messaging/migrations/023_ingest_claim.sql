-- messaging 023: ingest_batch claims a new message for its bot turn as it
-- inserts it (issue 9's CPU a message).
--
-- The inbox worker claimed its round's new messages with one more
-- statement in the same transaction, reply_claim_ids (migration 008): for
-- each message a locking read and a check that nothing is pending before
-- it in its conversation, then an UPDATE writing the lease, joined with
-- the conversation, the contact and the last turns. At 500 msgs/s through
-- the whole stack that was 366-434 us of PostgreSQL a round of ~2.5
-- messages (pg_stat_statements). Both forms of ingest_batch now make that
-- check as they write the message (p->'lease', milliseconds; absent:
-- nothing is claimed, as before) and write a message that passes it with
-- its reply lease, answering 'cl'. The keyword check moves before the
-- insert: a message that may be an opt-out keyword goes through
-- engage_on_inbound first and is not claimed here (reply_claim_ids still
-- claims it afterwards, when engage leaves it pending).
--
-- A new customer's first message (the contact and the conversation made
-- by this batch) needs nothing read: no history, the owner is the bot, the
-- agent is the channel's, the contact's name and phone are the ones
-- written. The answer carries them ('cx', 'at': created_at, 'ag', 'nm',
-- 'ph'). For the other claimed messages the caller reads them with
-- reply_context (below), one read-only statement, which reply_claim_ids
-- now also reads through.
--
-- ingest_batch_items also writes a message's events with one INSERT
-- instead of one or two calls of emit.

CREATE OR REPLACE FUNCTION messaging.ingest_batch(p jsonb) RETURNS jsonb
LANGUAGE plpgsql
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan AS
$$
DECLARE
  res jsonb := '[]';
  it jsonb;
  v_fast boolean;
  v_n bigint;
  v_t uuid;
  v_ch uuid;
  v_mid uuid;
  v_cur text;
  v_o bigint[];
  v_dmid uuid[];
  v_dcv uuid[];
  v_ct uuid[];
  v_upd text[];
  v_lease bigint := (p->>'lease')::bigint;
BEGIN
  -- Fewer than three messages: the loop costs less (pgbench, one client,
  -- known senders, a transaction with one call: 1 message 1.22 ms against
  -- 1.55, 2 1.62 against 1.77, 4 1.92 against 1.67, 8 5.01 against 3.40,
  -- 16 6.98 against 3.72): the one statement starts its six table writes
  -- whatever the batch holds.
  SELECT count(*) >= 3
         AND count(*) = count(DISTINCT (i->>'t') || '|' || (i->>'ch') || '|' || (i->>'ext'))
         AND count(i->>'pid')
             = count(DISTINCT (i->>'t') || '|' || (i->>'ch') || '|' || (i->>'pid'))
         AND count(nullif(i->>'bu', ''))
             = count(DISTINCT (i->>'t') || '|' || (i->>'ch') || '|' || nullif(i->>'bu', ''))
    INTO v_fast
    FROM jsonb_array_elements(p->'items') i WHERE i->>'k' = 'm';
  IF NOT v_fast THEN
    RETURN messaging.ingest_batch_items(p);
  END IF;
  -- The senders' advisory locks and their open conversations, as
  -- ingest_batch_items takes them.
  PERFORM pg_advisory_xact_lock(h)
     FROM (SELECT DISTINCT hashtextextended((i->>'t') || '|' || (i->>'ch') || '|' || (i->>'ext'), 0) AS h
             FROM jsonb_array_elements(p->'items') i WHERE i->>'k' = 'm' ORDER BY 1) s;
  PERFORM set_config('parley.tenant_id', '*', true);
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

  -- Each message: the stored one with its provider id (a duplicate), else
  -- its contact (by business-scoped id first, else by external id) and
  -- whether that contact is written ('b': found by business-scoped id,
  -- always; 'e': found by external id and the provider said something new).
  SELECT array_agg(x.o ORDER BY x.o), array_agg(d.id ORDER BY x.o),
         array_agg(d.cv ORDER BY x.o), array_agg(coalesce(cb.id, ce.id) ORDER BY x.o),
         array_agg(CASE
           WHEN d.id IS NOT NULL THEN ''
           WHEN cb.id IS NOT NULL THEN 'b'
           WHEN ce.id IS NOT NULL
                AND ((coalesce(x.i->>'nm', '') <> '' AND x.i->>'nm' <> ce.name)
                     OR (x.i->>'bu' IS NOT NULL AND x.i->>'bu' IS DISTINCT FROM ce.business_user_id)
                     OR (x.i->>'pu' IS NOT NULL AND x.i->>'pu' IS DISTINCT FROM ce.parent_user_id)
                     OR (x.i->'pr' IS NOT NULL AND x.i->'pr' <> ce.profile)) THEN 'e'
           ELSE '' END ORDER BY x.o)
    INTO v_o, v_dmid, v_dcv, v_ct, v_upd
    FROM jsonb_array_elements(p->'items') WITH ORDINALITY AS x(i, o)
    LEFT JOIN LATERAL (
         SELECT m.id, m.conversation_id AS cv FROM messaging.messages m
          WHERE m.tenant_id = (x.i->>'t')::uuid AND m.channel_id = (x.i->>'ch')::uuid
            AND m.provider_message_id = x.i->>'pid' LIMIT 1) d ON true
    LEFT JOIN LATERAL (
         SELECT c.id FROM messaging.contacts c
          WHERE d.id IS NULL AND coalesce(x.i->>'bu', '') <> ''
            AND c.tenant_id = (x.i->>'t')::uuid AND c.channel_id = (x.i->>'ch')::uuid
            AND c.business_user_id = x.i->>'bu' LIMIT 1) cb ON true
    LEFT JOIN LATERAL (
         SELECT c.id, c.name, c.business_user_id, c.parent_user_id, c.profile
           FROM messaging.contacts c
          WHERE d.id IS NULL AND cb.id IS NULL
            AND c.tenant_id = (x.i->>'t')::uuid AND c.channel_id = (x.i->>'ch')::uuid
            AND c.external_id = x.i->>'ext' LIMIT 1) ce ON true
   WHERE x.i->>'k' = 'm';
  -- Two new messages of one contact (reached by two ids): item after item.
  IF (SELECT count(*) <> count(DISTINCT u.ct) FROM unnest(v_dmid, v_ct) AS u(dmid, ct)
       WHERE u.dmid IS NULL AND u.ct IS NOT NULL) THEN
    RETURN messaging.ingest_batch_items(p);
  END IF;

  IF v_o IS NOT NULL THEN
    WITH x AS MATERIALIZED (
      SELECT r.o, r.dmid, r.dcv, r.ct, r.upd, (j.i->>'t')::uuid AS t, (j.i->>'ch')::uuid AS ch,
             j.i->>'cht' AS cht, j.i->>'ag' AS ag, j.i->>'pid' AS pid,
             (j.i->>'mid')::uuid AS mid, (j.i->>'kid')::uuid AS kid, (j.i->>'vid')::uuid AS vid,
             j.i->>'ext' AS ext, j.i->>'kind' AS kind, j.i->>'ph' AS ph, j.i->>'phr' AS phr,
             j.i->>'bu' AS bu, j.i->>'pu' AS pu, j.i->>'nm' AS nm, j.i->'pr' AS pr,
             j.i->>'ty' AS ty, j.i->>'tx' AS tx, j.i->>'mu' AS mu, j.i->>'mm' AS mm,
             (j.i->>'pc')::timestamptz AS pc, j.i->'md' AS md, (j.i->>'rw')::boolean AS rw
        FROM unnest(v_o, v_dmid, v_dcv, v_ct, v_upd) AS r(o, dmid, dcv, ct, upd)
        JOIN jsonb_array_elements(p->'items') WITH ORDINALITY AS j(i, o) ON j.o = r.o),
    uk AS (
      -- The contact as ingest_batch_items writes it ('b' and 'e' above).
      UPDATE messaging.contacts c SET
        name = CASE WHEN coalesce(x.nm, '') <> '' THEN x.nm ELSE c.name END,
        phone = CASE WHEN x.upd = 'b' THEN coalesce(c.phone, x.ph) ELSE c.phone END,
        phone_raw = CASE WHEN x.upd = 'b' THEN coalesce(c.phone_raw, x.phr) ELSE c.phone_raw END,
        business_user_id = CASE WHEN x.upd = 'e' THEN coalesce(x.bu, c.business_user_id)
                                ELSE c.business_user_id END,
        parent_user_id = coalesce(x.pu, c.parent_user_id),
        profile = CASE WHEN x.upd = 'e' THEN coalesce(x.pr, c.profile) ELSE c.profile END,
        updated_at = now()
        FROM x
       WHERE x.upd IN ('b', 'e') AND c.tenant_id = x.t AND c.id = x.ct),
    kc AS (
      INSERT INTO messaging.contacts AS c (tenant_id, id, channel_id, external_id,
          external_id_kind, phone, phone_raw, business_user_id, parent_user_id, name, profile)
      SELECT x.t, x.kid, x.ch, x.ext, x.kind, x.ph, x.phr, x.bu, x.pu, coalesce(x.nm, ''),
             coalesce(x.pr, '{}')
        FROM x WHERE x.dmid IS NULL AND x.ct IS NULL ORDER BY x.o
      ON CONFLICT (tenant_id, channel_id, external_id) DO UPDATE SET updated_at = now()
      RETURNING c.tenant_id, c.channel_id, c.external_id, c.id),
    k AS (
      SELECT x.*, coalesce(x.ct, kc.id) AS cid
        FROM x LEFT JOIN kc ON x.ct IS NULL AND kc.tenant_id = x.t AND kc.channel_id = x.ch
                             AND kc.external_id = x.ext
       WHERE x.dmid IS NULL),
    uc AS (
      -- The open conversation, its times moved.
      UPDATE messaging.conversations c SET last_inbound_at = now(), last_activity_at = now(),
             message_count = c.message_count + 1, updated_at = now()
        FROM k
       WHERE c.tenant_id = k.t AND c.contact_id = k.cid AND c.status <> 'closed'
      RETURNING c.tenant_id, c.contact_id, c.id),
    cv0 AS MATERIALIZED (
      SELECT k.*, coalesce(uc.id, k.vid) AS conv, uc.id IS NULL AS new,
             coalesce(kw.hit, false) AS kw
        FROM k LEFT JOIN uc ON uc.tenant_id = k.t AND uc.contact_id = k.cid
        -- Whole-message keywords as ingest_batch_items flags them.
        LEFT JOIN LATERAL (
             SELECT upper(rtrim(ltrim(k.tx, E' \t\n\r\v\f'), E' \t\n\r\v\f.!')) = ANY (
                      coalesce(nullif(s.opt_out_keywords, '{}'),
                               ARRAY['STOP', 'UNSUBSCRIBE', 'BAJA'])
                      || s.opt_in_keywords) AS hit
               FROM (SELECT NULL) d
               LEFT JOIN messaging.settings s ON s.tenant_id = k.t
              WHERE coalesce(k.tx, '') <> '' AND length(k.tx) <= 64
              LIMIT 1) kw ON true),
    cv AS MATERIALIZED (
      -- Claimed for its bot turn as it is inserted when nothing is pending
      -- before it in its conversation and it cannot be a keyword (cl), as
      -- ingest_batch_items decides it; with what the turn needs when its
      -- contact and conversation are new (cx).
      SELECT cv0.*, cl.cl, cl.cl AND cv0.new AND cv0.ct IS NULL AS cx
        FROM cv0,
        LATERAL (SELECT v_lease IS NOT NULL AND cv0.rw AND NOT cv0.kw
                        AND (cv0.new OR NOT EXISTS (
                              SELECT 1 FROM messaging.messages e
                               WHERE e.tenant_id = cv0.t AND e.conversation_id = cv0.conv
                                 AND e.reply_state = 'pending')) AS cl) cl),
    ic AS (
      INSERT INTO messaging.conversations (tenant_id, id, contact_id, channel_id, agent_id,
          message_count, last_inbound_at, last_activity_at)
      SELECT cv.t, cv.vid, cv.cid, cv.ch, nullif(cv.ag, '')::uuid, 1, now(), now()
        FROM cv WHERE cv.new ORDER BY cv.o),
    im AS (
      INSERT INTO messaging.messages (tenant_id, id, conversation_id, channel_id, direction,
          sender, type, text, media_url, media_mime_type, provider_message_id, status,
          provider_created_at, metadata, reply_state, reply_lease_until)
      SELECT cv.t, cv.mid, cv.conv, cv.ch, 'inbound', 'contact', cv.ty, coalesce(cv.tx, ''),
             coalesce(cv.mu, ''), coalesce(cv.mm, ''), cv.pid, 'received', cv.pc,
             coalesce(cv.md, '{}'), CASE WHEN cv.rw THEN 'pending' ELSE 'done' END,
             CASE WHEN cv.cl THEN now() + v_lease * interval '1 millisecond' END
        FROM cv ORDER BY cv.o),
    ev AS (
      INSERT INTO messaging.outbox (id, destination, tenant_id, type, dimensions, payload)
      SELECT messaging.uuid7(), 'analytics', e.t, e.type,
             jsonb_build_object('channel_id', e.ch, 'conversation_id', e.conv,
                                'contact_id', e.cid), e.payload
        FROM (SELECT cv.o, 1 AS k, cv.t, cv.ch, cv.conv, cv.cid,
                     'conversation.started' AS type, '{}'::jsonb AS payload
                FROM cv WHERE cv.new
              UNION ALL
              SELECT cv.o, 2, cv.t, cv.ch, cv.conv, cv.cid, 'message.received',
                     jsonb_build_object('message_id', cv.mid, 'type', cv.ty, 'channel_type',
                       CASE cv.cht WHEN '1' THEN 'whatsapp_cloud' WHEN '2' THEN 'infobip'
                                   WHEN '3' THEN 'webchat' ELSE '' END)
                FROM cv) e
       ORDER BY e.o, e.k)
    SELECT coalesce(jsonb_agg(
             CASE WHEN x.dmid IS NOT NULL
                  THEN jsonb_build_object('mid', x.dmid, 't', x.t, 'ch', x.ch, 'cv', x.dcv,
                                          'dup', true, 'kw', false)
                  WHEN cv.cx
                  THEN jsonb_build_object('mid', cv.mid, 't', cv.t, 'ch', cv.ch,
                                          'cv', cv.conv, 'ct', cv.cid, 'dup', false,
                                          'kw', false, 'cl', true, 'cx', true,
                                          'at', messaging.fmt_ts(now()),
                                          'ag', coalesce(nullif(cv.ag, '')::uuid::text, ''),
                                          'nm', coalesce(cv.nm, ''), 'ph', coalesce(cv.ph, ''))
                  ELSE jsonb_build_object('mid', cv.mid, 't', cv.t, 'ch', cv.ch,
                                          'cv', cv.conv, 'ct', cv.cid, 'dup', false,
                                          'kw', cv.kw, 'cl', cv.cl) END
             ORDER BY x.o), '[]')
      INTO res
      FROM x
      LEFT JOIN cv ON cv.o = x.o;
  END IF;

  -- Statuses (of outbound messages: no row above), in order: 005's loop
  -- restated. Handing them to ingest_batch_items would cost every batch a
  -- second function entry, and hide from track_functions which batches
  -- took the loop (test_messaging_batches counts them).
  FOR it IN SELECT i FROM jsonb_array_elements(p->'items') i WHERE i->>'k' = 's' LOOP
    v_t := (it->>'t')::uuid;
    v_ch := (it->>'ch')::uuid;
    PERFORM set_config('parley.tenant_id', v_t::text, true);
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
  END LOOP;
  PERFORM set_config('parley.tenant_id', '*', true);
  UPDATE messaging.inbox i SET processed_at = now(), attempts = attempts + 1,
         last_error = x.err, lease_until = NULL
    FROM jsonb_to_recordset(coalesce(p->'inbox', '[]')) AS x(t uuid, id uuid, err text)
   WHERE i.tenant_id = x.t AND i.id = x.id;
  RETURN res;
END
$$;

CREATE OR REPLACE FUNCTION messaging.ingest_batch_items(p jsonb) RETURNS jsonb
LANGUAGE plpgsql
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan AS
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
  v_newk boolean;
  v_cl boolean;
  v_cx boolean;
  v_lease bigint := (p->>'lease')::bigint;
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
    v_newk := false;
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
        v_newk := true;
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
    -- Claimed for its bot turn as it is inserted when nothing is pending
    -- before it in its conversation (nothing can be in one this item
    -- opened) and it cannot be a keyword; the caller answers it. With what
    -- the turn needs when the contact and the conversation were made just
    -- now (v_cx).
    -- (The check is a statement of its own, so it runs only when needed;
    -- the rest are simple expressions.)
    v_cl := v_lease IS NOT NULL AND (it->>'rw')::boolean AND NOT v_kw;
    IF v_cl AND NOT v_new THEN
      v_cl := NOT EXISTS (SELECT 1 FROM messaging.messages e
                           WHERE e.tenant_id = v_t AND e.conversation_id = v_conv
                             AND e.reply_state = 'pending');
    END IF;
    v_cx := v_cl AND v_new AND v_newk;
    v_mid := (it->>'mid')::uuid;
    INSERT INTO messaging.messages (tenant_id, id, conversation_id, channel_id, direction, sender,
        type, text, media_url, media_mime_type, provider_message_id, status,
        provider_created_at, metadata, reply_state, reply_lease_until)
    VALUES (v_t, v_mid, v_conv, v_ch, 'inbound', 'contact', it->>'ty', coalesce(it->>'tx', ''),
            coalesce(it->>'mu', ''), coalesce(it->>'mm', ''), it->>'pid', 'received',
            (it->>'pc')::timestamptz, coalesce(it->'md', '{}'),
            CASE WHEN (it->>'rw')::boolean THEN 'pending' ELSE 'done' END,
            CASE WHEN v_cl THEN now() + v_lease * interval '1 millisecond' END);
    v_dims := jsonb_build_object('channel_id', v_ch, 'conversation_id', v_conv,
                                 'contact_id', v_contact);
    -- The events as emit writes them, in one statement instead of one or
    -- two emit calls (each a statement and a function's INSERT).
    INSERT INTO messaging.outbox (id, destination, tenant_id, type, dimensions, payload)
    SELECT messaging.uuid7(), 'analytics', v_t, e.type, v_dims, e.payload
      FROM (VALUES (1, 'conversation.started', '{}'::jsonb),
                   (2, 'message.received',
                    jsonb_build_object('message_id', v_mid, 'type', it->>'ty', 'channel_type',
                      CASE it->>'cht' WHEN '1' THEN 'whatsapp_cloud' WHEN '2' THEN 'infobip'
                                      WHEN '3' THEN 'webchat' ELSE '' END))) AS e(k, type, payload)
     WHERE e.k = 2 OR v_new
     ORDER BY e.k;
    res := res || (jsonb_build_object('mid', v_mid, 't', v_t, 'ch', v_ch, 'cv', v_conv,
                                      'ct', v_contact, 'dup', false, 'kw', v_kw, 'cl', v_cl)
                   || CASE WHEN v_cx
                           THEN jsonb_build_object('cx', true, 'at', messaging.fmt_ts(now()),
                                  'ag', coalesce(nullif(it->>'ag', '')::uuid::text, ''),
                                  'nm', coalesce(it->>'nm', ''), 'ph', coalesce(it->>'ph', ''))
                           ELSE '{}' END);
  END LOOP;
  PERFORM set_config('parley.tenant_id', '*', true);
  UPDATE messaging.inbox i SET processed_at = now(), attempts = attempts + 1,
         last_error = x.err, lease_until = NULL
    FROM jsonb_to_recordset(coalesce(p->'inbox', '[]')) AS x(t uuid, id uuid, err text)
   WHERE i.tenant_id = x.t AND i.id = x.id;
  RETURN res;
END
$$;

-- What the bot turns of messages ingest_batch claimed need, when it did not
-- answer it (a returning customer's message: the conversation's owner and
-- agent, the contact as the batch left it, the last p_history turns): the
-- read of reply_claim_ids without its claim, in the caller's transaction.
CREATE FUNCTION messaging.reply_context(p_t uuid[], p_id uuid[], p_history int)
RETURNS TABLE (tenant_id uuid, id uuid, conversation_id uuid, channel_id uuid,
               provider_message_id text, text text, created_at text, owner text,
               agent_id text, contact_id uuid, contact_name text, contact_phone text,
               contact_language text, history text)
LANGUAGE plpgsql
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan AS
$$
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  RETURN QUERY
  SELECT m.tenant_id, m.id, m.conversation_id, m.channel_id,
         coalesce(m.provider_message_id, ''), m.text, messaging.fmt_ts(m.created_at), cv.owner,
         coalesce(cv.agent_id::text, ''), k.id, k.name, coalesce(k.phone, ''), k.language,
         (SELECT coalesce(jsonb_agg(jsonb_build_array(h.direction, h.text,
                                    messaging.fmt_ts(h.created_at)) ORDER BY h.id), '[]')::text
            FROM (SELECT x.direction, x.text, x.created_at, x.id FROM messaging.messages x
                   WHERE x.tenant_id = m.tenant_id AND x.conversation_id = m.conversation_id
                     AND x.id < m.id AND x.text <> ''
                   ORDER BY x.id DESC LIMIT p_history) h)
    FROM messaging.messages m
    JOIN messaging.conversations cv ON cv.tenant_id = m.tenant_id AND cv.id = m.conversation_id
    JOIN messaging.contacts k ON k.tenant_id = cv.tenant_id AND k.id = cv.contact_id
   WHERE (m.tenant_id, m.id) IN (SELECT * FROM unnest(p_t, p_id))
   ORDER BY m.created_at, m.id;
END
$$;

-- 012's reply_claim_ids (now only for the possible keywords that
-- engage_on_inbound leaves pending), its read made reply_context's: one
-- definition of what a claimed turn is given. Same claims, same rows.
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
  -- The lease, then what the turns need, read as reply_context reads it
  -- for the messages ingest_batch claimed.
  UPDATE messaging.messages m SET reply_lease_until = now() + p_lease_ms * interval '1 millisecond'
   WHERE (m.tenant_id, m.id) IN (SELECT * FROM unnest(v_t, v_id));
  RETURN QUERY SELECT * FROM messaging.reply_context(v_t, v_id, p_history);
END
$$;

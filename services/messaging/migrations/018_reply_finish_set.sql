-- messaging 018: reply_finish writes a batch with one statement when its
-- items are in different conversations (issue 6's CPU per message).
--
-- pg_stat_statements on the bench's cluster (track = all, max run, batches
-- of ~8): reply_finish took 4.8 ms a batch, 0.65 ms a message, in eight
-- statements an item (the message and conversation locks, the reply and its
-- delivery, the conversation's update, the events, the message's update),
-- each paying its executor start-up. The claim takes one pending message a
-- conversation, so a batch's items are in different conversations: they are
-- now decided together (data-modifying CTEs, one snapshot; the
-- conversations and then the messages locked first, each in one order), with
-- the same answers and rows as item after item. A batch with two items of
-- one conversation (not made by the claim; kept for callers that do) keeps
-- 012's loop (renamed reply_finish_items), whose later items see what the
-- earlier did.
ALTER FUNCTION messaging.reply_finish(jsonb) RENAME TO reply_finish_items;

CREATE FUNCTION messaging.reply_finish(p jsonb) RETURNS jsonb
LANGUAGE plpgsql
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan AS
$$
DECLARE
  res jsonb;
  v_n bigint;
  v_ts uuid[];
  v_cvs uuid[];
  v_mids uuid[];
BEGIN
  -- The batch's conversations locked first, in one order (see
  -- ingest_batch).
  PERFORM set_config('parley.tenant_id', '*', true);
  -- By the primary key with arrays (a join with jsonb_to_recordset, 100
  -- rows to the planner, was a hash join over every conversation).
  SELECT array_agg(x.t), array_agg(x.cv), array_agg(x.mid) INTO v_ts, v_cvs, v_mids
    FROM jsonb_to_recordset(p) AS x(t uuid, cv uuid, mid uuid);
  SELECT count(*) INTO v_n FROM (
    SELECT c.id FROM messaging.conversations c
     WHERE (c.tenant_id, c.id) IN (SELECT * FROM unnest(v_ts, v_cvs))
     ORDER BY c.tenant_id, c.id FOR UPDATE OF c) l;

  -- One item a conversation (the claim takes one pending message a
  -- conversation): the whole batch with one statement. Otherwise the
  -- items one after another, below, so that a later item sees what an
  -- earlier one did to its conversation.
  IF (SELECT count(DISTINCT (u.t, u.cv)) FROM unnest(v_ts, v_cvs) AS u(t, cv))
     = coalesce(array_length(v_ts, 1), 0) THEN
    PERFORM 1 FROM (
      SELECT m.id FROM messaging.messages m
       WHERE (m.tenant_id, m.id) IN (SELECT * FROM unnest(v_ts, v_mids))
       ORDER BY m.tenant_id, m.id FOR UPDATE OF m) l;
    WITH x AS MATERIALIZED (
      SELECT x.o, x.t, x.mid, x.cv, x.ch, x.ct, x.rid, x.did, x.agent, x.text, x.reason,
             x.lim, x.meta, x.lease::bigint AS lease, x.handoff,
             coalesce(m.reply_state = 'pending', false) AS pend,
             CASE WHEN x.text IS NOT NULL AND c.owner = 'human' THEN 'human_owned'
                  ELSE x.outcome END AS outcome
        FROM ROWS FROM (jsonb_to_recordset(p) AS (t uuid, mid uuid, cv uuid, ch uuid,
               ct text, rid uuid, did uuid, agent text, text text, outcome text,
               reason text, "limit" text, meta jsonb, lease text, handoff boolean))
             WITH ORDINALITY AS x(t, mid, cv, ch, ct, rid, did, agent, text, outcome,
                                  reason, lim, meta, lease, handoff, o)
        LEFT JOIN LATERAL (
             SELECT m.reply_state FROM messaging.messages m
              WHERE m.tenant_id = x.t AND m.id = x.mid LIMIT 1) m ON true
        LEFT JOIN LATERAL (
             SELECT c.owner FROM messaging.conversations c
              WHERE c.tenant_id = x.t AND c.id = x.cv LIMIT 1) c ON true),
    s AS MATERIALIZED (
      SELECT x.*,
             coalesce(x.outcome <> 'human_owned', false)
               AND coalesce(x.text, '') <> '' AS sends,
             coalesce(x.outcome <> 'human_owned', false)
               AND coalesce(x.handoff, false) AS hands
        FROM x WHERE x.pend),
    im AS (
      INSERT INTO messaging.messages (tenant_id, id, conversation_id, channel_id, direction,
          sender, agent_id, type, text, status, queued_at, metadata)
      SELECT s.t, s.rid, s.cv, s.ch, 'outbound', 'bot', nullif(s.agent, '')::uuid, 'text',
             s.text, 'queued', now(), '{}'
        FROM s WHERE s.sends ORDER BY s.o),
    idl AS (
      -- A lease: claimed by the caller (its first attempt, leased as
      -- delivery_claim does).
      INSERT INTO messaging.deliveries (tenant_id, id, message_id, channel_id, attempts,
          next_attempt_at)
      SELECT s.t, s.did, s.rid, s.ch, CASE WHEN s.lease IS NULL THEN 0 ELSE 1 END,
             CASE WHEN s.lease IS NULL THEN now()
                  ELSE now() + s.lease * interval '1 millisecond' END
        FROM s WHERE s.sends ORDER BY s.o),
    uc AS (
      UPDATE messaging.conversations c SET
        message_count = c.message_count + CASE WHEN s.sends THEN 1 ELSE 0 END,
        last_activity_at = CASE WHEN s.sends THEN now() ELSE c.last_activity_at END,
        last_bot_message_at = CASE WHEN s.sends THEN now() ELSE c.last_bot_message_at END,
        owner = CASE WHEN s.handoff THEN 'human' ELSE c.owner END,
        status = CASE WHEN s.handoff THEN 'pending' ELSE c.status END,
        handoff_reason = CASE WHEN s.handoff THEN coalesce(s.reason, '')
                              ELSE c.handoff_reason END,
        updated_at = now()
        FROM s
       WHERE c.tenant_id = s.t AND c.id = s.cv AND (s.sends OR s.hands)),
    ev AS (
      INSERT INTO messaging.outbox (id, destination, tenant_id, type, dimensions, payload)
      SELECT messaging.uuid7(), 'analytics', e.t, e.type,
             jsonb_build_object('channel_id', e.ch, 'conversation_id', e.cv,
                                'contact_id', e.ct), e.payload
        FROM (SELECT s.o, 1 AS k, s.t, s.ch, s.cv, s.ct, 'conversation.handoff' AS type,
                     jsonb_build_object('reason', coalesce(s.reason, ''), 'by', 'bot')
                       AS payload
                FROM s WHERE s.hands
              UNION ALL
              SELECT s.o, 2, s.t, s.ch, s.cv, s.ct, 'limit.reached',
                     jsonb_build_object('metric', 'messages', 'limit', s.lim,
                                        'message_id', s.mid)
                FROM s WHERE s.lim IS NOT NULL) e
       ORDER BY e.o, e.k),
    um AS (
      UPDATE messaging.messages m SET reply_state = 'done', reply_outcome = s.outcome,
             reply_lease_until = NULL, metadata = m.metadata || coalesce(s.meta, '{}')
        FROM s
       WHERE m.tenant_id = s.t AND m.id = s.mid)
    SELECT coalesce(jsonb_agg(
             CASE WHEN s.o IS NULL
                  THEN jsonb_build_object('mid', x.mid, 'rid', NULL, 'done', false)
                  WHEN s.sends AND s.lease IS NOT NULL
                  THEN jsonb_build_object('mid', x.mid, 'rid', s.rid, 'done', true,
                                          'ext', k.external_id, 'ek', k.external_id_kind)
                  ELSE jsonb_build_object('mid', x.mid,
                                          'rid', CASE WHEN s.sends THEN s.rid END,
                                          'done', true) END
             ORDER BY x.o), '[]')
      INTO res
      FROM x
      LEFT JOIN s ON s.o = x.o
      LEFT JOIN LATERAL (
           SELECT k.external_id, k.external_id_kind FROM messaging.contacts k
            WHERE k.tenant_id = s.t
              AND k.id = CASE WHEN s.sends AND s.lease IS NOT NULL THEN s.ct::uuid END
            LIMIT 1) k ON true;
    RETURN res;
  END IF;
  RETURN messaging.reply_finish_items(p);
END
$$;


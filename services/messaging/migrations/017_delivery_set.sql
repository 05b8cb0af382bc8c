-- messaging 017: delivery_done decides a batch's sent items with one
-- statement instead of five statements an item (issue 6's CPU per message).
--
-- pg_stat_statements on the bench's cluster (track = all, max run, batches
-- of ~8) had delivery_done at 3.0 ms a batch, 0.39 ms a message: per sent
-- item an UPDATE of the message, of the delivery and of the conversation,
-- an emit (a function call and its INSERT) and a DELETE of the pending
-- statuses, each paying its executor start-up. Now the message, delivery
-- and conversation updates and the 'message.sent' events of every sent item
-- are one statement (data-modifying CTEs, same snapshot; the conversations
-- were locked first, as before), and the statuses that arrived before the
-- send's answer are taken with one DELETE and applied per message in the
-- order of the provider's times (before: the DELETE's order), after that
-- message's 'message.sent' (as before). Retries and
-- failures (rare) keep the loop of 005, renamed delivery_done_items.
--
-- One difference: a sent item whose message is gone (never seen: messages
-- are not deleted while their delivery runs) emits no 'message.sent';
-- before, it emitted one with an empty sender.
ALTER FUNCTION messaging.delivery_done(jsonb) RENAME TO delivery_done_items;

CREATE FUNCTION messaging.delivery_done(p jsonb) RETURNS void
LANGUAGE plpgsql
  SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
  SET plan_cache_mode = force_generic_plan AS
$$
DECLARE
  v_rest jsonb;
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

  -- Every sent item at once.
  WITH x AS MATERIALIZED (
    SELECT x.t, x.mid, x.did, x.pid, x.o
      FROM ROWS FROM (jsonb_to_recordset(p) AS (t uuid, mid uuid, did uuid, pid text, r text))
           WITH ORDINALITY AS x(t, mid, did, pid, r, o)
     WHERE x.r = 'sent'),
  m AS (
    UPDATE messaging.messages m SET provider_message_id = x.pid,
           status = CASE WHEN messaging.status_rank(m.status) < 3 THEN 'sent' ELSE m.status END,
           sent_at = coalesce(m.sent_at, now())
      FROM x
     WHERE m.tenant_id = x.t AND m.id = x.mid
    RETURNING m.tenant_id, m.id, m.sender, m.conversation_id, x.o),
  d AS (
    UPDATE messaging.deliveries d SET done_at = now(), last_error = NULL
      FROM x
     WHERE d.tenant_id = x.t AND d.id = x.did),
  c AS (
    UPDATE messaging.conversations c SET last_outbound_at = now(), updated_at = now()
      FROM (SELECT DISTINCT m.tenant_id, m.conversation_id FROM m) mc
     WHERE c.tenant_id = mc.tenant_id AND c.id = mc.conversation_id)
  INSERT INTO messaging.outbox (id, destination, tenant_id, type, dimensions, payload)
  SELECT messaging.uuid7(), 'analytics', m.tenant_id, 'message.sent', '{}',
         jsonb_build_object('message_id', m.id, 'sender', coalesce(m.sender, ''),
                            'type', 'text')
    FROM m
   ORDER BY m.o;

  -- Statuses the provider reported before the send's answer (webhooks
  -- racing the send): applied now, after the 'message.sent' above.
  FOR ps IN
    WITH s AS (
      DELETE FROM messaging.pending_statuses s
       USING jsonb_to_recordset(p) AS x(t uuid, mid uuid, ch uuid, pid text, r text)
       WHERE x.r = 'sent' AND s.tenant_id = x.t AND s.channel_id = x.ch
         AND s.provider_message_id = x.pid
      RETURNING x.t, x.mid, s.status, s.at, s.error_code, s.error_text)
    SELECT * FROM s ORDER BY s.t, s.mid, s.at
  LOOP
    SELECT status INTO v_cur FROM messaging.messages WHERE tenant_id = ps.t AND id = ps.mid;
    PERFORM messaging.status_apply(ps.t, ps.mid, v_cur, ps.status, ps.at, ps.error_code,
                                   ps.error_text);
  END LOOP;

  -- Retries and failures (rare): 005's loop, given only them.
  SELECT jsonb_agg(e ORDER BY o) INTO v_rest
    FROM jsonb_array_elements(p) WITH ORDINALITY AS x(e, o)
   WHERE x.e->>'r' IS DISTINCT FROM 'sent';
  IF v_rest IS NOT NULL THEN
    PERFORM messaging.delivery_done_items(v_rest);
  END IF;
END
$$;

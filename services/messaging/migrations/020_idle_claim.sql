-- messaging 020: delivery_claim and reply_claim ask first whether anything
-- is due.
--
-- Its statement (the due deliveries locked, leased, joined to their
-- message, conversation and contact) is planned at every call (006:
-- force_custom_plan, so that a plan never outlives the table sizes it was
-- made for), and a worker calls it every poll interval whether or not
-- anything is due. With pg_stat_statements on an idle stack after a bench
-- run, it was the dearest statement of all: 14 calls in 1.5 s, 1.6 ms each,
-- to find nothing. The question below is one table and its partial index
-- (deliveries_due), planned in microseconds; the claim runs only when it
-- answers yes. A delivery that falls due between the two is claimed at the
-- next poll or kick, as one that falls due just after the claim always
-- was.
CREATE OR REPLACE FUNCTION messaging.delivery_claim(p_limit int, p_lease_ms int)
RETURNS TABLE (tenant_id uuid, id uuid, message_id uuid, channel_id uuid, attempts int,
               conversation_id uuid, type text, text text, media_url text,
               external_id text, external_id_kind text)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS
$$
#variable_conflict use_column
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  IF NOT EXISTS (SELECT 1 FROM messaging.deliveries d
                  WHERE d.done_at IS NULL AND d.next_attempt_at <= now()) THEN
    RETURN;
  END IF;
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

-- reply_claim (012) the same way: one pending message not leased is what
-- its first statement needs to find anything (it takes each
-- conversation's oldest pending message, then drops the leased ones), so
-- without one it returns nothing and is skipped. Idle, it took 0.3 ms a
-- call.
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
  -- Nothing pending and unleased: nothing to claim (the statement below,
  -- planned at every call, is the dearer question).
  IF NOT EXISTS (SELECT 1 FROM messaging.messages p
                  WHERE p.reply_state = 'pending'
                    AND (p.reply_lease_until IS NULL OR p.reply_lease_until < now())) THEN
    RETURN;
  END IF;
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

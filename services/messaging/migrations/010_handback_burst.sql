-- The two settings the core stored without using (issue 6):
-- auto_handback_minutes and reply_burst_window_ms.
--
-- A person's last activity in a conversation they own: set when they take
-- it over and when they send a message. After auto_handback_minutes of
-- nothing from a person (counted from the conversation's last change when
-- no person touched it yet, e.g. after the bot's handoff), the
-- conversation goes back to the bot.
ALTER TABLE messaging.conversations ADD COLUMN human_active_at timestamptz;

-- The sweep reads only the conversations people own.
CREATE INDEX conversations_human ON messaging.conversations (tenant_id, human_active_at)
  WHERE owner = 'human';

-- Hands back up to p_limit conversations whose person has been inactive
-- for their tenant's auto_handback_minutes (service level: it spans
-- tenants; each row under its own tenant key), as HandBack does, with
-- conversation.handed_back {"by": "inactivity"}. Returns how many.
CREATE FUNCTION messaging.handback_due(p_limit int) RETURNS int
LANGUAGE plpgsql AS
$$
DECLARE
  n int;
BEGIN
  PERFORM set_config('parley.tenant_id', '*', true);
  WITH d AS (
    SELECT c.tenant_id, c.id FROM messaging.settings s
      JOIN messaging.conversations c ON c.tenant_id = s.tenant_id AND c.owner = 'human'
     WHERE s.auto_handback_minutes > 0 AND c.status <> 'closed'
       AND coalesce(c.human_active_at, c.updated_at)
           < now() - s.auto_handback_minutes * interval '1 minute'
     ORDER BY c.tenant_id, c.id LIMIT p_limit FOR UPDATE OF c SKIP LOCKED),
  u AS (
    UPDATE messaging.conversations c SET owner = 'bot', assigned_user_id = NULL,
           status = 'open', handoff_reason = '', updated_at = now()
      FROM d WHERE c.tenant_id = d.tenant_id AND c.id = d.id AND c.owner = 'human'
    RETURNING c.tenant_id, c.id, c.channel_id, c.contact_id)
  INSERT INTO messaging.outbox (id, destination, tenant_id, type, dimensions, payload)
  SELECT messaging.uuid7(), 'analytics', u.tenant_id, 'conversation.handed_back',
         jsonb_build_object('channel_id', u.channel_id, 'conversation_id', u.id,
                            'contact_id', u.contact_id),
         '{"by": "inactivity"}'
    FROM u;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$$;

-- A burst (reply_burst_window_ms): the pending messages of the head's
-- conversation that arrived within the window after it, oldest first;
-- they are answered with it, once. Under the caller's tenant.
CREATE FUNCTION messaging.reply_burst(p_tenant uuid, p_conv uuid, p_head uuid, p_window_ms int)
RETURNS TABLE (id uuid, text text)
LANGUAGE sql STABLE AS
$$
  SELECT m.id, m.text FROM messaging.messages m, messaging.messages h
   WHERE h.tenant_id = p_tenant AND h.id = p_head
     AND m.tenant_id = p_tenant AND m.conversation_id = p_conv AND m.reply_state = 'pending'
     AND m.id <> p_head AND m.created_at >= h.created_at
     AND m.created_at <= h.created_at + p_window_ms * interval '1 millisecond'
   ORDER BY m.created_at, m.id
   LIMIT 50
$$;

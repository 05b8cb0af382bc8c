-- Messages of one conversation in arrival order (issue 6), across webhook
-- bodies: two inbox workers could each take one body of the same sender
-- and store the later message first. Each body now names its senders
-- (the external ids of its messages, found when HandleWebhook validates
-- it), and a worker takes a body only when no earlier unprocessed body of
-- any of its senders is held by someone else; such a body waits for the
-- next round. Bodies without senders (statuses only; rows written by the
-- previous build) are taken as before.
ALTER TABLE messaging.inbox ADD COLUMN senders text[];

-- inbox_add with the body's senders (a JSON array of strings).
CREATE FUNCTION messaging.inbox_put(p_tenant uuid, p_id uuid, p_channel uuid, p_type text,
                                    p_body_b64 text, p_ip text, p_senders jsonb,
                                    OUT o_id uuid, OUT o_duplicate boolean)
LANGUAGE plpgsql AS
$$
DECLARE
  b bytea := decode(p_body_b64, 'base64');
  s text[];
BEGIN
  PERFORM set_config('parley.tenant_id', p_tenant::text, true);
  IF jsonb_typeof(p_senders) = 'array' AND jsonb_array_length(p_senders) > 0 THEN
    s := ARRAY(SELECT jsonb_array_elements_text(p_senders));
  END IF;
  INSERT INTO messaging.inbox (tenant_id, id, channel_id, channel_type, body, body_sha256,
                               source_ip, senders)
  VALUES (p_tenant, p_id, p_channel, p_type, b, sha256(b), coalesce(p_ip, ''), s)
  ON CONFLICT (tenant_id, channel_id, body_sha256) DO NOTHING
  RETURNING id INTO o_id;
  o_duplicate := o_id IS NULL;
  IF o_duplicate THEN
    SELECT id INTO o_id FROM messaging.inbox
     WHERE tenant_id = p_tenant AND channel_id = p_channel AND body_sha256 = sha256(b);
  END IF;
END
$$;

-- The inbox worker's lock, in its transaction (tenant '*'): up to p_limit
-- due bodies, oldest first, locked (SKIP LOCKED: the locks are the lease),
-- less those that must wait: a body with an earlier unprocessed body of one
-- of its senders that this call did not lock (another worker holds it, or
-- the leased path), and, behind it, every later body of those senders.
-- What waits stays locked until the caller commits and is taken by a later
-- round. Rows come back in arrival order, bodies in base64.
CREATE FUNCTION messaging.inbox_lock(p_limit int)
RETURNS TABLE (tenant_id uuid, id uuid, channel_id uuid, channel_type text, body text)
LANGUAGE plpgsql AS
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
   WHERE r.tenant_id = ANY (v_ts) AND r.id = ANY (v_ids) AND r.senders IS NOT NULL
     AND EXISTS (
       SELECT 1 FROM messaging.inbox e
        WHERE e.processed_at IS NULL AND e.received_at <= r.received_at
          AND (e.received_at, e.id) < (r.received_at, r.id)
          AND e.tenant_id = r.tenant_id AND e.senders && r.senders
          AND NOT (e.id = ANY (v_ids)));
  FOR c IN SELECT i.tenant_id, i.id, i.channel_id, i.channel_type, i.senders,
                  encode(i.body, 'base64') AS b64
             FROM messaging.inbox i
            WHERE i.tenant_id = ANY (v_ts) AND i.id = ANY (v_ids)
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

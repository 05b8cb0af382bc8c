-- The campaign sender's claim from a cursor. Recipients are claimed in id
-- order, and a sent recipient leaves a dead entry in the pending index until
-- VACUUM comes by: each batch claimed from the start of the campaign walked
-- every recipient sent before it (20,000 index entries a batch at 20,000
-- recipients). With p_after the claim starts after the last id the sender
-- took (o_last); the sender goes back to the start (p_after NULL) when a
-- claim from its cursor finds nothing, which also picks up rows a dead
-- sender held, and completes the campaign only after such a full pass.
-- Otherwise as in 002.
DROP FUNCTION messaging.campaign_send_batch(uuid, uuid, int);

CREATE FUNCTION messaging.campaign_send_batch(p_tenant uuid, p_campaign uuid, p_limit int,
                                              p_after uuid DEFAULT NULL,
                                              OUT o_sent int, OUT o_skipped int,
                                              OUT o_last uuid)
LANGUAGE plpgsql AS
$$
DECLARE
  c record;
  t record;
  v_r uuid[];
  v_k uuid[];
BEGIN
  PERFORM set_config('parley.tenant_id', p_tenant::text, true);
  o_sent := 0;
  o_skipped := 0;
  -- FOR SHARE: a pause or cancel waits for the batch in flight.
  SELECT * INTO c FROM messaging.campaigns
   WHERE tenant_id = p_tenant AND id = p_campaign FOR SHARE;
  IF NOT FOUND OR c.status <> 'running' THEN
    o_sent := -1;
    RETURN;
  END IF;
  SELECT * INTO t FROM messaging.templates WHERE tenant_id = p_tenant AND id = c.template_id;
  SELECT array_agg(id ORDER BY id), array_agg(contact_id ORDER BY id) INTO v_r, v_k FROM (
    SELECT id, contact_id FROM messaging.campaign_recipients
     WHERE tenant_id = p_tenant AND campaign_id = p_campaign AND status = 'pending'
       AND (p_after IS NULL OR id > p_after)
     ORDER BY id LIMIT p_limit FOR UPDATE SKIP LOCKED) s;
  IF v_r IS NULL THEN
    RETURN;
  END IF;
  o_last := v_r[array_length(v_r, 1)];
  IF t.category = 'marketing' THEN
    UPDATE messaging.campaign_recipients r SET status = 'skipped_opted_out', updated_at = now()
      FROM messaging.contacts k
     WHERE r.tenant_id = p_tenant AND r.id = ANY (v_r) AND k.tenant_id = p_tenant
       AND k.id = r.contact_id AND k.opted_out_at IS NOT NULL;
    GET DIAGNOSTICS o_skipped = ROW_COUNT;
  END IF;
  -- An open conversation for every contact that has none.
  INSERT INTO messaging.conversations (tenant_id, id, contact_id, channel_id)
  SELECT p_tenant, messaging.uuid7(), r.contact_id, c.channel_id
    FROM messaging.campaign_recipients r
   WHERE r.tenant_id = p_tenant AND r.id = ANY (v_r) AND r.status = 'pending'
     AND NOT EXISTS (SELECT 1 FROM messaging.conversations cv
                      WHERE cv.tenant_id = p_tenant AND cv.contact_id = r.contact_id
                        AND cv.status <> 'closed')
  ON CONFLICT (tenant_id, contact_id) WHERE status <> 'closed' DO NOTHING;
  WITH x AS (
    SELECT r.id AS rid, cv.id AS conv_id, messaging.uuid7() AS mid,
           messaging.bind_params(c.parameters, k.name, coalesce(k.phone, ''),
                                 k.external_id, k.custom_fields) AS params
      FROM messaging.campaign_recipients r
      JOIN messaging.contacts k ON k.tenant_id = p_tenant AND k.id = r.contact_id
      JOIN messaging.conversations cv ON cv.tenant_id = p_tenant
       AND cv.contact_id = r.contact_id AND cv.status <> 'closed'
     WHERE r.tenant_id = p_tenant AND r.id = ANY (v_r) AND r.status = 'pending'),
  m AS (
    INSERT INTO messaging.messages (tenant_id, id, conversation_id, channel_id,
        direction, sender, sender_user_id, type, text, status, queued_at, metadata)
    SELECT p_tenant, x.mid, x.conv_id, c.channel_id, 'outbound', 'system',
           c.created_by_user_id, 'template',
           messaging.render_params(t.components->'body'->>'text', x.params),
           'queued', now(),
           jsonb_build_object('campaign_id', p_campaign,
             'template', jsonb_build_object('id', t.id, 'name', t.name,
               'language', t.language, 'parameters', to_jsonb(x.params)))
      FROM x
    RETURNING id),
  d AS (
    INSERT INTO messaging.deliveries (tenant_id, id, message_id, channel_id)
    SELECT p_tenant, messaging.uuid7(), x.mid, c.channel_id FROM x),
  cv AS (
    UPDATE messaging.conversations v SET message_count = message_count + 1,
           last_activity_at = now(), updated_at = now()
      FROM x WHERE v.tenant_id = p_tenant AND v.id = x.conv_id),
  u AS (
    UPDATE messaging.campaign_recipients r SET status = 'sent', message_id = x.mid,
           sent_at = now(), updated_at = now()
      FROM x WHERE r.tenant_id = p_tenant AND r.id = x.rid)
  SELECT count(*) INTO o_sent FROM x;
END
$$;

ALTER FUNCTION messaging.campaign_send_batch(uuid, uuid, int, uuid)
  SET plan_cache_mode = force_custom_plan;

-- The messaging service's engagement schema (issue 7): per-tenant settings
-- (opt-out keywords), templates, campaigns and their recipients, leads,
-- orders with their items, and the actions center. One source of truth: a
-- lead's stage is its conversation's (view leads_v), a recipient's delivery
-- status is its message's (view campaign_recipients_v), a campaign's
-- counters and an order's total are computed from their rows.

CREATE TABLE messaging.settings (
  tenant_id             uuid        NOT NULL,
  opt_out_keywords      text[]      NOT NULL DEFAULT '{}',  -- upper case; empty: STOP, UNSUBSCRIBE, BAJA
  opt_out_reply         text        NOT NULL DEFAULT '',
  opt_in_keywords       text[]      NOT NULL DEFAULT '{}',
  opt_in_reply          text        NOT NULL DEFAULT '',
  auto_handback_minutes int         NOT NULL DEFAULT 0,
  reply_burst_window_ms int         NOT NULL DEFAULT 0,
  action_rejected_reply text        NOT NULL DEFAULT '',
  order_confirmed_reply text        NOT NULL DEFAULT '',
  updated_at            timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id)
);

CREATE TABLE messaging.templates (
  tenant_id            uuid        NOT NULL,
  id                   uuid        NOT NULL,
  channel_id           uuid        NOT NULL,
  name                 text        NOT NULL,
  language             text        NOT NULL,
  category             text        NOT NULL
                       CHECK (category IN ('marketing', 'utility', 'authentication')),
  components           jsonb       NOT NULL,
  parameter_count      int         NOT NULL DEFAULT 0,  -- {{1}}..{{n}} of the body, counted on write
  status               text        NOT NULL DEFAULT 'draft'
                       CHECK (status IN ('draft', 'submitted', 'approved', 'rejected')),
  status_reason        text        NOT NULL DEFAULT '',
  provider_template_id text        NOT NULL DEFAULT '',
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, channel_id, name, language)
);
CREATE INDEX templates_list ON messaging.templates (tenant_id, id DESC);

CREATE TABLE messaging.campaigns (
  tenant_id            uuid        NOT NULL,
  id                   uuid        NOT NULL,
  name                 text        NOT NULL,
  channel_id           uuid        NOT NULL,
  template_id          uuid        NOT NULL,
  parameters           jsonb       NOT NULL DEFAULT '[]',  -- ParameterBinding[]
  audience             jsonb       NOT NULL DEFAULT '{}',  -- Audience
  status               text        NOT NULL DEFAULT 'draft'
                       CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'canceled')),
  scheduled_at         timestamptz,
  send_rate_per_second int         NOT NULL DEFAULT 0 CHECK (send_rate_per_second >= 0),
  pause_reason         text        NOT NULL DEFAULT '',
  started_at           timestamptz,
  completed_at         timestamptz,
  canceled_at          timestamptz,
  created_by_user_id   uuid,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, template_id) REFERENCES messaging.templates (tenant_id, id)
);
CREATE INDEX campaigns_list ON messaging.campaigns (tenant_id, id DESC);
CREATE INDEX campaigns_by_template ON messaging.campaigns (tenant_id, template_id);
-- The senders' scan (cross-tenant, small partial indexes).
CREATE INDEX campaigns_due ON messaging.campaigns (scheduled_at) WHERE status = 'scheduled';
CREATE INDEX campaigns_running ON messaging.campaigns (updated_at) WHERE status = 'running';

-- status here is what the sender decided (pending, sent, failed, skipped_*);
-- after "sent" the delivery status is the message's (campaign_recipients_v).
CREATE TABLE messaging.campaign_recipients (
  tenant_id    uuid        NOT NULL,
  id           uuid        NOT NULL,
  campaign_id  uuid        NOT NULL,
  contact_id   uuid        NOT NULL,
  status       text        NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'failed',
                                 'skipped_opted_out', 'skipped_limit')),
  message_id   uuid,
  error_code   text        NOT NULL DEFAULT '',
  error_text   text        NOT NULL DEFAULT '',
  opted_in_at  timestamptz,
  opted_out_at timestamptz,
  sent_at      timestamptz,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, campaign_id, contact_id),
  FOREIGN KEY (tenant_id, campaign_id) REFERENCES messaging.campaigns (tenant_id, id),
  FOREIGN KEY (tenant_id, contact_id) REFERENCES messaging.contacts (tenant_id, id)
);
CREATE INDEX campaign_recipients_pending ON messaging.campaign_recipients (tenant_id, campaign_id, id)
  WHERE status = 'pending';
CREATE INDEX campaign_recipients_list ON messaging.campaign_recipients (tenant_id, campaign_id, id);

CREATE VIEW messaging.campaign_recipients_v WITH (security_invoker = true) AS
SELECT r.tenant_id, r.id, r.campaign_id, r.contact_id, r.message_id,
       CASE WHEN r.status <> 'sent' OR m.status IS NULL THEN r.status
            WHEN m.status IN ('queued', 'sent') THEN 'sent'
            WHEN m.status = 'delivered' THEN 'delivered'
            WHEN m.status IN ('read', 'played') THEN 'read'
            WHEN m.status = 'failed' THEN 'failed'
            ELSE 'sent' END AS status,
       CASE WHEN m.status = 'failed' THEN m.error_code ELSE r.error_code END AS error_code,
       CASE WHEN m.status = 'failed' THEN m.error_text ELSE r.error_text END AS error_text,
       r.opted_in_at, r.opted_out_at, r.sent_at, greatest(r.updated_at, m.sent_at,
       m.delivered_at, m.read_at, m.failed_at) AS updated_at
  FROM messaging.campaign_recipients r
  LEFT JOIN messaging.messages m ON m.tenant_id = r.tenant_id AND m.id = r.message_id;

CREATE TABLE messaging.leads (
  tenant_id              uuid        NOT NULL,
  id                     uuid        NOT NULL,
  contact_id             uuid        NOT NULL,
  name                   text        NOT NULL DEFAULT '',
  email                  text        NOT NULL DEFAULT '',
  phone                  text        NOT NULL DEFAULT '',
  status                 text        NOT NULL DEFAULT 'new'
                         CHECK (status IN ('new', 'contacted', 'qualified', 'converted', 'lost')),
  source_intent          text        NOT NULL DEFAULT '',
  converted_at           timestamptz,
  conversion_value_minor bigint      NOT NULL DEFAULT 0 CHECK (conversion_value_minor >= 0),
  currency               text        NOT NULL DEFAULT '',
  extra                  jsonb       NOT NULL DEFAULT '{}',
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, contact_id),
  FOREIGN KEY (tenant_id, contact_id) REFERENCES messaging.contacts (tenant_id, id)
);
CREATE INDEX leads_list ON messaging.leads (tenant_id, id DESC);

-- A lead with its contact's latest conversation and that conversation's
-- stage (the lead has no stage of its own).
CREATE VIEW messaging.leads_v WITH (security_invoker = true) AS
SELECT l.*, c.id AS conversation_id, c.stage
  FROM messaging.leads l
  LEFT JOIN LATERAL (
    SELECT cv.id, cv.stage FROM messaging.conversations cv
     WHERE cv.tenant_id = l.tenant_id AND cv.contact_id = l.contact_id
     ORDER BY cv.created_at DESC LIMIT 1) c ON true;

CREATE TABLE messaging.orders (
  tenant_id       uuid        NOT NULL,
  id              uuid        NOT NULL,
  contact_id      uuid        NOT NULL,
  conversation_id uuid,
  message_id      uuid,
  status          text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'confirmed', 'shipped', 'delivered', 'cancelled')),
  currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  address         jsonb       NOT NULL DEFAULT '{}',
  notes           text        NOT NULL DEFAULT '',
  status_reason   text        NOT NULL DEFAULT '',
  confirmed_at    timestamptz,
  shipped_at      timestamptz,
  delivered_at    timestamptz,
  cancelled_at    timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, contact_id) REFERENCES messaging.contacts (tenant_id, id),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES messaging.conversations (tenant_id, id),
  FOREIGN KEY (tenant_id, message_id) REFERENCES messaging.messages (tenant_id, id)
);
CREATE INDEX orders_list ON messaging.orders (tenant_id, id DESC);
CREATE INDEX orders_by_contact ON messaging.orders (tenant_id, contact_id, id DESC);

CREATE TABLE messaging.order_items (
  tenant_id        uuid   NOT NULL,
  order_id         uuid   NOT NULL,
  position         int    NOT NULL,
  sku              text   NOT NULL DEFAULT '',
  name             text   NOT NULL,
  quantity         bigint NOT NULL CHECK (quantity >= 1 AND quantity <= 1000000),
  unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0 AND unit_price_minor <= 1000000000000),
  PRIMARY KEY (tenant_id, order_id, position),
  FOREIGN KEY (tenant_id, order_id) REFERENCES messaging.orders (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE messaging.actions (
  tenant_id             uuid        NOT NULL,
  id                    uuid        NOT NULL,
  kind                  text        NOT NULL
                        CHECK (kind IN ('order_confirmation', 'refund', 'discount', 'custom')),
  status                text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
  conversation_id       uuid,
  contact_id            uuid,
  summary               text        NOT NULL DEFAULT '',
  payload               jsonb       NOT NULL DEFAULT '{}',
  requested_by_agent_id uuid,
  requested_by_user_id  uuid,
  decided_by_user_id    uuid,
  decided_at            timestamptz,
  decision_note         text        NOT NULL DEFAULT '',
  result                jsonb       NOT NULL DEFAULT '{}',
  expires_at            timestamptz NOT NULL,
  dedupe_key            text,
  created_at            timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, dedupe_key),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES messaging.conversations (tenant_id, id)
);
CREATE INDEX actions_list ON messaging.actions (tenant_id, id DESC);
CREATE INDEX actions_expiring ON messaging.actions (expires_at) WHERE status = 'pending';

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['settings', 'templates', 'campaigns', 'campaign_recipients',
                           'leads', 'orders', 'order_items', 'actions'] LOOP
    EXECUTE format('ALTER TABLE messaging.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE messaging.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON messaging.%I
      USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
      WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))$p$, t);
  END LOOP;
END $$;

-- A UUIDv7 made in SQL, for rows created in bulk by one statement
-- (campaign recipients, campaign messages); everything else gets its id
-- from pl_uuid7_str in C. 48 bits of Unix ms, then random; version 7.
CREATE FUNCTION messaging.uuid7() RETURNS uuid
LANGUAGE sql VOLATILE AS
$$ SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
     PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
     FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid $$;

-- Template parameters of one contact from a campaign's bindings
-- (ParameterBinding[] as JSON), in index order.
CREATE FUNCTION messaging.bind_params(b jsonb, p_name text, p_phone text,
                                      p_ext text, p_cf jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS
$$ SELECT coalesce(array_agg(v ORDER BY idx), '{}') FROM (
     SELECT coalesce((e->>'index')::int, ord::int) AS idx,
            coalesce(nullif(CASE coalesce(e->>'contact_field', '')
              WHEN '' THEN e->>'value'
              WHEN 'name' THEN p_name
              WHEN 'phone' THEN p_phone
              WHEN 'external_id' THEN p_ext
              ELSE p_cf->>substr(e->>'contact_field', 15) END, ''),
              e->>'fallback', '') AS v
       FROM jsonb_array_elements(b) WITH ORDINALITY AS x(e, ord)) s $$;

-- The body text with {{1}}..{{n}} replaced.
CREATE FUNCTION messaging.render_params(t text, p text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS
$$ BEGIN
  FOR i IN 1 .. coalesce(array_length(p, 1), 0) LOOP
    t := replace(t, '{{' || i || '}}', p[i]);
  END LOOP;
  RETURN coalesce(t, '');
END $$;

-- One batch of a running campaign, in the caller's transaction: claims up
-- to p_limit pending recipients (SKIP LOCKED: senders in other threads and
-- replicas take other rows), skips opted-out contacts for marketing
-- templates, and for the rest creates the message and its delivery and
-- marks the recipient sent with it: committed together or not at all, so a
-- recipient is enqueued exactly once. Returns the rows enqueued and
-- skipped; -1 when the campaign is not running.
CREATE FUNCTION messaging.campaign_send_batch(p_tenant uuid, p_campaign uuid, p_limit int,
                                              OUT o_sent int, OUT o_skipped int)
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
  SELECT array_agg(id), array_agg(contact_id) INTO v_r, v_k FROM (
    SELECT id, contact_id FROM messaging.campaign_recipients
     WHERE tenant_id = p_tenant AND campaign_id = p_campaign AND status = 'pending'
     ORDER BY id LIMIT p_limit FOR UPDATE SKIP LOCKED) s;
  IF v_r IS NULL THEN
    RETURN;
  END IF;
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

-- Counters of a campaign from its recipients (and their messages).
CREATE FUNCTION messaging.campaign_counters(p_tenant uuid, p_campaign uuid) RETURNS jsonb
LANGUAGE sql STABLE AS
$$ SELECT jsonb_build_object(
     'recipients', count(*),
     'pending', count(*) FILTER (WHERE status = 'pending'),
     'sent', count(*) FILTER (WHERE status IN ('sent', 'delivered', 'read')),
     'delivered', count(*) FILTER (WHERE status IN ('delivered', 'read')),
     'read', count(*) FILTER (WHERE status = 'read'),
     'failed', count(*) FILTER (WHERE status = 'failed'),
     'skipped_opted_out', count(*) FILTER (WHERE status = 'skipped_opted_out'),
     'skipped_limit', count(*) FILTER (WHERE status = 'skipped_limit'))
   FROM messaging.campaign_recipients_v
  WHERE tenant_id = p_tenant AND campaign_id = p_campaign $$;

-- The delivery worker's read of a template message's send spec, one round
-- trip (hot path: the tenant set inside, local to the statement's
-- transaction).
CREATE FUNCTION messaging.template_spec(p_tenant uuid, p_message uuid) RETURNS text
LANGUAGE plpgsql STABLE AS
$$ BEGIN
  PERFORM set_config('parley.tenant_id', p_tenant::text, true);
  RETURN (SELECT (metadata->'template')::text FROM messaging.messages
           WHERE tenant_id = p_tenant AND id = p_message);
END $$;

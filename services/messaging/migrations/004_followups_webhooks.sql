-- The messaging service's engagement schema, part 2 (issue 7): follow-up
-- rules and the follow-ups they schedule, and outbound webhooks to tenants
-- (endpoints and durable deliveries).
--
-- Follow-ups are scheduled by a trigger on messages: a bot message
-- schedules (or re-schedules) the conversation's follow-up from the most
-- specific active rule; an inbound message or a person's reply cancels the
-- pending one. The scheduler (followups.c) claims due rows with SKIP LOCKED.
--
-- Webhook deliveries are made by a trigger on the outbox: every event the
-- service writes (in the transaction of its change) becomes one delivery
-- per active endpoint of the tenant that subscribed to its type, in the same
-- transaction. The sender (outhooks.c) claims due rows with SKIP LOCKED and
-- a lease.

CREATE TABLE messaging.followup_rules (
  tenant_id           uuid        NOT NULL,
  id                  uuid        NOT NULL,
  name                text        NOT NULL,
  agent_id            uuid,                 -- NULL: any agent
  channel_id          uuid,                 -- NULL: any channel
  delay_minutes       int         NOT NULL CHECK (delay_minutes BETWEEN 1 AND 43200),
  text                text        NOT NULL DEFAULT '',   -- inside the 24 h window
  template_id         uuid,                              -- outside it
  template_parameters jsonb       NOT NULL DEFAULT '[]', -- ParameterBinding[]
  max_attempts        int         NOT NULL DEFAULT 1 CHECK (max_attempts BETWEEN 1 AND 10),
  is_active           boolean     NOT NULL DEFAULT true,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, template_id) REFERENCES messaging.templates (tenant_id, id)
);
CREATE INDEX followup_rules_list ON messaging.followup_rules (tenant_id, id DESC);
CREATE INDEX followup_rules_active ON messaging.followup_rules (tenant_id) WHERE is_active;
CREATE INDEX followup_rules_by_template ON messaging.followup_rules (tenant_id, template_id);

-- One row per scheduled follow-up attempt. At most one pending per
-- conversation. anchor_message_id is the bot message the chain follows.
CREATE TABLE messaging.followups (
  tenant_id         uuid        NOT NULL,
  id                uuid        NOT NULL,
  rule_id           uuid        NOT NULL,
  conversation_id   uuid        NOT NULL,
  anchor_message_id uuid        NOT NULL,
  attempt           int         NOT NULL CHECK (attempt >= 1),
  due_at            timestamptz NOT NULL,
  status            text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'canceled', 'skipped')),
  reason            text        NOT NULL DEFAULT '',
  message_id        uuid,
  done_at           timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, rule_id) REFERENCES messaging.followup_rules (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES messaging.conversations (tenant_id, id)
);
CREATE UNIQUE INDEX followups_one_pending ON messaging.followups (tenant_id, conversation_id)
  WHERE status = 'pending';
CREATE INDEX followups_due ON messaging.followups (due_at) WHERE status = 'pending';
CREATE INDEX followups_by_rule ON messaging.followups (tenant_id, rule_id) WHERE status = 'pending';

CREATE TABLE messaging.webhook_endpoints (
  tenant_id        uuid        NOT NULL,
  id               uuid        NOT NULL,
  url              text        NOT NULL,
  description      text        NOT NULL DEFAULT '',
  event_types      text[]      NOT NULL DEFAULT '{}',  -- empty: every type
  secret           text        NOT NULL,               -- "whsec_<base64>", shown once
  is_active        boolean     NOT NULL DEFAULT true,
  disabled_at      timestamptz,
  disabled_reason  text        NOT NULL DEFAULT '',
  failing_since_at timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhook_endpoints_list ON messaging.webhook_endpoints (tenant_id, id DESC);
CREATE INDEX webhook_endpoints_active ON messaging.webhook_endpoints (tenant_id) WHERE is_active;

-- id is the "webhook-id" header: the same on every attempt and replay.
CREATE TABLE messaging.webhook_deliveries (
  tenant_id        uuid        NOT NULL,
  id               uuid        NOT NULL,
  endpoint_id      uuid        NOT NULL,
  event_id         uuid        NOT NULL,
  event_type       text        NOT NULL,
  status           text        NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'delivered', 'retrying', 'failed')),
  attempts         int         NOT NULL DEFAULT 0,
  last_http_status int         NOT NULL DEFAULT 0,
  last_error       text        NOT NULL DEFAULT '',
  last_latency_ms  int         NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),  -- also the claim's lease
  retry_since_at   timestamptz NOT NULL DEFAULT now(),  -- start of the retry budget
  delivered_at     timestamptz,
  payload          jsonb       NOT NULL,                -- sent as payload::text
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, endpoint_id, event_id),
  FOREIGN KEY (tenant_id, endpoint_id) REFERENCES messaging.webhook_endpoints (tenant_id, id)
    ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON messaging.webhook_deliveries (next_attempt_at)
  WHERE status IN ('pending', 'retrying');
CREATE INDEX webhook_deliveries_list ON messaging.webhook_deliveries (tenant_id, endpoint_id, id DESC);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['followup_rules', 'followups', 'webhook_endpoints',
                           'webhook_deliveries'] LOOP
    EXECUTE format('ALTER TABLE messaging.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE messaging.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON messaging.%I
      USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
      WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))$p$, t);
  END LOOP;
END $$;

-- Follow-ups: a bot message (re)starts the conversation's chain at attempt
-- 1 with the most specific active rule (agent and channel, then agent, then
-- channel, then neither; the oldest rule on a tie); an inbound message
-- cancels it ("replied"), a person's message too ("human"). Follow-ups
-- themselves are sent with sender "system" and so never restart a chain.
-- Bot messages older than an hour when written (imported history) schedule
-- nothing.
CREATE FUNCTION messaging.followups_on_message() RETURNS trigger
LANGUAGE plpgsql AS
$$
DECLARE
  r record;
BEGIN
  IF NEW.direction = 'inbound' OR NEW.sender = 'human' THEN
    UPDATE messaging.followups SET status = 'canceled',
           reason = CASE WHEN NEW.direction = 'inbound' THEN 'replied' ELSE 'human' END,
           done_at = now()
     WHERE tenant_id = NEW.tenant_id AND conversation_id = NEW.conversation_id
       AND status = 'pending';
    RETURN NULL;
  END IF;
  -- History written now (the legacy import) is not a live conversation.
  IF NEW.created_at < now() - interval '1 hour' THEN
    RETURN NULL;
  END IF;
  SELECT id, delay_minutes INTO r FROM messaging.followup_rules
   WHERE tenant_id = NEW.tenant_id AND is_active
     AND (agent_id IS NULL OR agent_id = NEW.agent_id)
     AND (channel_id IS NULL OR channel_id = NEW.channel_id)
   ORDER BY (agent_id IS NOT NULL) DESC, (channel_id IS NOT NULL) DESC, id
   LIMIT 1;
  IF NOT FOUND THEN
    UPDATE messaging.followups SET status = 'canceled', reason = 'superseded', done_at = now()
     WHERE tenant_id = NEW.tenant_id AND conversation_id = NEW.conversation_id
       AND status = 'pending';
    RETURN NULL;
  END IF;
  INSERT INTO messaging.followups (tenant_id, id, rule_id, conversation_id,
                                   anchor_message_id, attempt, due_at)
  VALUES (NEW.tenant_id, messaging.uuid7(), r.id, NEW.conversation_id, NEW.id, 1,
          NEW.created_at + make_interval(mins => r.delay_minutes))
  ON CONFLICT (tenant_id, conversation_id) WHERE status = 'pending'
  DO UPDATE SET rule_id = EXCLUDED.rule_id, anchor_message_id = EXCLUDED.anchor_message_id,
                attempt = 1, due_at = EXCLUDED.due_at, reason = '';
  RETURN NULL;
END
$$;

CREATE TRIGGER followups_on_message AFTER INSERT ON messaging.messages
  FOR EACH ROW WHEN (NEW.direction = 'inbound' OR NEW.sender IN ('bot', 'human'))
  EXECUTE FUNCTION messaging.followups_on_message();

-- The event types an endpoint may subscribe to (an empty list: all).
CREATE FUNCTION messaging.webhook_event_types() RETURNS text[]
LANGUAGE sql IMMUTABLE AS
$$ SELECT ARRAY['message.received', 'message.status', 'conversation.started',
                'conversation.handoff', 'conversation.handed_back',
                'conversation.state_changed', 'conversation.closed',
                'conversation.reopened', 'contact.opted_out', 'contact.opted_in',
                'lead.created', 'lead.updated', 'order.created', 'order.updated',
                'action.pending', 'action.decided', 'campaign.completed',
                'followup.sent', 'webhook_endpoint.disabled'] $$;

-- Every outbox event becomes a delivery for each active endpoint of its
-- tenant that wants it, in the event's own transaction (durable with it).
-- Several destinations share one event id: the unique key keeps one.
CREATE FUNCTION messaging.webhooks_on_event() RETURNS trigger
LANGUAGE plpgsql AS
$$
BEGIN
  IF NOT (NEW.type = ANY (messaging.webhook_event_types())) THEN
    RETURN NULL;
  END IF;
  INSERT INTO messaging.webhook_deliveries (tenant_id, id, endpoint_id, event_id,
                                            event_type, payload)
  SELECT NEW.tenant_id, messaging.uuid7(), e.id, NEW.id, NEW.type,
         jsonb_build_object('type', NEW.type,
                            'timestamp', messaging.fmt_ts(NEW.occurred_at),
                            'event_id', NEW.id,
                            'tenant_id', NEW.tenant_id,
                            'data', NEW.dimensions || NEW.payload)
    FROM messaging.webhook_endpoints e
   WHERE e.tenant_id = NEW.tenant_id AND e.is_active
     AND (cardinality(e.event_types) = 0 OR NEW.type = ANY (e.event_types))
  ON CONFLICT (tenant_id, endpoint_id, event_id) DO NOTHING;
  RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_on_event AFTER INSERT ON messaging.outbox
  FOR EACH ROW EXECUTE FUNCTION messaging.webhooks_on_event();

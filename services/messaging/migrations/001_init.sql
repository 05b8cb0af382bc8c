-- The messaging service's core schema (issue 6): contacts, conversations,
-- messages, the inbox of raw webhook bodies, the deliveries queue, statuses
-- waiting for their message, web-chat sessions, and the event outbox.
-- Every tenant table leads with tenant_id and carries the same RLS policy.

CREATE FUNCTION messaging.fmt_ts(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS
$$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

-- Order of delivery statuses: a status only moves forward.
CREATE FUNCTION messaging.status_rank(s text) RETURNS int
LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE s WHEN 'received' THEN 1 WHEN 'queued' THEN 2
  WHEN 'sent' THEN 3 WHEN 'delivered' THEN 4 WHEN 'read' THEN 5
  WHEN 'played' THEN 6 WHEN 'failed' THEN 7 ELSE 0 END $$;

CREATE TABLE messaging.contacts (
  tenant_id        uuid        NOT NULL,
  id               uuid        NOT NULL,
  channel_id       uuid        NOT NULL,
  external_id      text        NOT NULL,
  external_id_kind text        NOT NULL
                   CHECK (external_id_kind IN ('phone', 'business_user_id', 'webchat_session')),
  phone            text,                 -- E.164
  phone_raw        text,
  business_user_id text,
  parent_user_id   text,
  name             text        NOT NULL DEFAULT '',
  language         text        NOT NULL DEFAULT '',
  profile          jsonb       NOT NULL DEFAULT '{}',
  tags             text[]      NOT NULL DEFAULT '{}',
  custom_fields    jsonb       NOT NULL DEFAULT '{}',
  opted_out_at     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, channel_id, external_id)
);
CREATE INDEX contacts_phone ON messaging.contacts (tenant_id, phone);
CREATE INDEX contacts_bsuid ON messaging.contacts (tenant_id, channel_id, business_user_id);
CREATE INDEX contacts_list ON messaging.contacts (tenant_id, id DESC);
CREATE INDEX contacts_tags ON messaging.contacts USING gin (tags);

CREATE TABLE messaging.conversations (
  tenant_id           uuid        NOT NULL,
  id                  uuid        NOT NULL,
  contact_id          uuid        NOT NULL,
  channel_id          uuid        NOT NULL,
  agent_id            uuid,
  status              text        NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'pending', 'closed')),
  owner               text        NOT NULL DEFAULT 'bot'
                      CHECK (owner IN ('bot', 'human')),
  assigned_user_id    uuid,
  stage               text        NOT NULL DEFAULT 'new'
                      CHECK (stage IN ('new', 'engaged', 'qualified', 'proposal', 'won', 'lost')),
  intent_level        text        CHECK (intent_level IN ('low', 'medium', 'high')),
  sentiment           text        CHECK (sentiment IN ('negative', 'neutral', 'positive')),
  handoff_reason      text        NOT NULL DEFAULT '',
  message_count       bigint      NOT NULL DEFAULT 0,
  last_inbound_at     timestamptz,
  last_outbound_at    timestamptz,
  last_bot_message_at timestamptz,
  last_activity_at    timestamptz NOT NULL DEFAULT now(),
  closed_at           timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, contact_id) REFERENCES messaging.contacts (tenant_id, id)
);
-- At most one open (or pending) conversation per contact.
CREATE UNIQUE INDEX conversations_one_open ON messaging.conversations (tenant_id, contact_id)
  WHERE status <> 'closed';
CREATE INDEX conversations_list ON messaging.conversations (tenant_id, last_activity_at DESC, id DESC);
CREATE INDEX conversations_by_status ON messaging.conversations (tenant_id, status, last_activity_at DESC, id DESC);
CREATE INDEX conversations_by_assigned ON messaging.conversations (tenant_id, assigned_user_id, last_activity_at DESC);
CREATE INDEX conversations_by_contact ON messaging.conversations (tenant_id, contact_id, created_at DESC);

CREATE TABLE messaging.messages (
  tenant_id           uuid        NOT NULL,
  id                  uuid        NOT NULL,
  conversation_id     uuid        NOT NULL,
  channel_id          uuid        NOT NULL,
  direction           text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
  sender              text        NOT NULL CHECK (sender IN ('contact', 'bot', 'human', 'system')),
  sender_user_id      uuid,
  agent_id            uuid,
  type                text        NOT NULL,
  text                text        NOT NULL DEFAULT '',
  media_url           text        NOT NULL DEFAULT '',
  media_mime_type     text        NOT NULL DEFAULT '',
  provider_message_id text,
  status              text        NOT NULL
                      CHECK (status IN ('received', 'queued', 'sent', 'delivered', 'read', 'played', 'failed')),
  queued_at           timestamptz,
  sent_at             timestamptz,
  delivered_at        timestamptz,
  read_at             timestamptz,
  played_at           timestamptz,
  failed_at           timestamptz,
  error_code          text        NOT NULL DEFAULT '',
  error_text          text        NOT NULL DEFAULT '',
  provider_created_at timestamptz,
  metadata            jsonb       NOT NULL DEFAULT '{}',
  idempotency_key     text,
  -- Inbound only: 'pending' until the bot's turn for it is done (billing,
  -- agent, reply queued), then 'done'; outbound rows are 'none'.
  reply_state         text        NOT NULL DEFAULT 'none'
                      CHECK (reply_state IN ('none', 'pending', 'done')),
  reply_outcome       text        NOT NULL DEFAULT '',
  reply_lease_until   timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, conversation_id) REFERENCES messaging.conversations (tenant_id, id)
);
CREATE UNIQUE INDEX messages_provider_id ON messaging.messages (tenant_id, channel_id, provider_message_id)
  WHERE provider_message_id IS NOT NULL;
CREATE UNIQUE INDEX messages_idempotency ON messaging.messages (tenant_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_by_conversation ON messaging.messages (tenant_id, conversation_id, id);
-- The reply workers' queue (cross-tenant claim, small partial index).
CREATE INDEX messages_reply_pending ON messaging.messages (tenant_id, conversation_id, created_at)
  WHERE reply_state = 'pending';
CREATE INDEX messages_reply_due ON messaging.messages (created_at)
  WHERE reply_state = 'pending';

-- Raw webhook bodies, durable before the webhook is answered.
CREATE TABLE messaging.inbox (
  tenant_id      uuid        NOT NULL,
  id             uuid        NOT NULL,
  channel_id     uuid        NOT NULL,
  channel_type   text        NOT NULL,
  body           bytea       NOT NULL,
  body_sha256    bytea       NOT NULL,
  source_ip      text        NOT NULL DEFAULT '',
  received_at    timestamptz NOT NULL DEFAULT now(),
  attempts       int         NOT NULL DEFAULT 0,
  lease_until    timestamptz,
  processed_at   timestamptz,
  last_error     text,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, channel_id, body_sha256)
);
CREATE INDEX inbox_due ON messaging.inbox (received_at) WHERE processed_at IS NULL;

-- Outbound messages waiting to be sent (one per message).
CREATE TABLE messaging.deliveries (
  tenant_id       uuid        NOT NULL,
  id              uuid        NOT NULL,
  message_id      uuid        NOT NULL,
  channel_id      uuid        NOT NULL,
  attempts        int         NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- also the claim's lease
  last_error      text,
  done_at         timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, message_id),
  FOREIGN KEY (tenant_id, message_id) REFERENCES messaging.messages (tenant_id, id)
);
CREATE INDEX deliveries_due ON messaging.deliveries (next_attempt_at) WHERE done_at IS NULL;

-- Statuses for a provider id not known yet (the send's answer not recorded).
CREATE TABLE messaging.pending_statuses (
  tenant_id           uuid        NOT NULL,
  id                  uuid        NOT NULL,
  channel_id          uuid        NOT NULL,
  provider_message_id text        NOT NULL,
  status              text        NOT NULL,
  at                  timestamptz NOT NULL,
  error_code          text        NOT NULL DEFAULT '',
  error_text          text        NOT NULL DEFAULT '',
  created_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX pending_statuses_by_id ON messaging.pending_statuses (tenant_id, channel_id, provider_message_id);

CREATE TABLE messaging.webchat_sessions (
  tenant_id       uuid        NOT NULL,
  id              uuid        NOT NULL,
  channel_id      uuid        NOT NULL,
  contact_id      uuid        NOT NULL,
  token_hash      bytea       NOT NULL,
  website_domain  text        NOT NULL DEFAULT '',
  client_ip       text        NOT NULL DEFAULT '',
  expires_at      timestamptz NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, contact_id) REFERENCES messaging.contacts (tenant_id, id)
);
-- Web-chat calls name only the session (service-level lookup by id).
CREATE UNIQUE INDEX webchat_sessions_id ON messaging.webchat_sessions (id);

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['contacts', 'conversations', 'messages', 'inbox',
                           'deliveries', 'pending_statuses', 'webchat_sessions'] LOOP
    EXECUTE format('ALTER TABLE messaging.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE messaging.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON messaging.%I
      USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
      WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))$p$, t);
  END LOOP;
END $$;

CREATE TABLE messaging.outbox (
  id              uuid        NOT NULL,
  destination     text        NOT NULL,
  tenant_id       uuid        NOT NULL,
  type            text        NOT NULL,
  occurred_at     timestamptz NOT NULL DEFAULT now(),
  dimensions      jsonb       NOT NULL DEFAULT '{}',
  payload         jsonb       NOT NULL DEFAULT '{}',
  attempts        int         NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error      text,
  delivered_at    timestamptz,
  PRIMARY KEY (id, destination)
);
CREATE INDEX outbox_due ON messaging.outbox (next_attempt_at) WHERE delivered_at IS NULL;

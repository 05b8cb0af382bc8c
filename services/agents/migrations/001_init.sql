-- The agents service's schema (issue 5): agents and their immutable
-- versions, knowledge bases and entries, sessions and their messages,
-- checkpoints (LangGraph state), and the outbox.
--
-- Text used for search is normalised in C (agents_text_normalize: lower
-- case, accents folded, punctuation and emoji dropped) and stored in the
-- *_norm columns; the tsvector and the trigram text are generated columns
-- over them with the 'simple' configuration (no unaccent needed).

CREATE TABLE agents.agents (
  tenant_id                    uuid        NOT NULL,
  id                           uuid        NOT NULL,
  name                         text        NOT NULL,
  description                  text        NOT NULL DEFAULT '',
  status                       text        NOT NULL DEFAULT 'draft'
                               CHECK (status IN ('draft', 'published', 'archived')),
  engine                       text        NOT NULL DEFAULT 'retrieval'
                               CHECK (engine IN ('retrieval', 'openai_compatible')),
  llm_provider                 text        NOT NULL DEFAULT '',
  llm_base_url                 text        NOT NULL DEFAULT '',
  llm_model                    text        NOT NULL DEFAULT '',
  llm_temperature              float8      NOT NULL DEFAULT 0,
  llm_max_tokens               int         NOT NULL DEFAULT 0,
  llm_timeout_ms               int         NOT NULL DEFAULT 0,
  llm_context_entries          int         NOT NULL DEFAULT 0,
  llm_api_key_ct               bytea,
  llm_api_key_kid              text,
  system_prompt                text        NOT NULL DEFAULT '',
  greeting                     text        NOT NULL DEFAULT '',
  fallback_message             text        NOT NULL DEFAULT '',
  knowledge_base_ids           uuid[]      NOT NULL DEFAULT '{}',
  handoff_keywords             text[]      NOT NULL DEFAULT '{}',
  handoff_confidence_threshold float8      NOT NULL DEFAULT 0,
  max_bot_turns                int         NOT NULL DEFAULT 0,
  language                     text        NOT NULL DEFAULT '',
  voice_provider               text        NOT NULL DEFAULT '',
  voice_id                     text        NOT NULL DEFAULT '',
  voice_settings               jsonb       NOT NULL DEFAULT '{}',
  version                      int         NOT NULL DEFAULT 0,
  has_unpublished_changes      boolean     NOT NULL DEFAULT true,
  published_at                 timestamptz,
  archived_at                  timestamptz,
  created_at                   timestamptz NOT NULL DEFAULT now(),
  updated_at                   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX agents_list ON agents.agents (tenant_id, status, id DESC);

CREATE TABLE agents.agent_versions (
  tenant_id                    uuid        NOT NULL,
  id                           uuid        NOT NULL,
  agent_id                     uuid        NOT NULL,
  version                      int         NOT NULL CHECK (version > 0),
  name                         text        NOT NULL,
  engine                       text        NOT NULL
                               CHECK (engine IN ('retrieval', 'openai_compatible')),
  llm_provider                 text        NOT NULL DEFAULT '',
  llm_base_url                 text        NOT NULL DEFAULT '',
  llm_model                    text        NOT NULL DEFAULT '',
  llm_temperature              float8      NOT NULL DEFAULT 0,
  llm_max_tokens               int         NOT NULL DEFAULT 0,
  llm_timeout_ms               int         NOT NULL DEFAULT 0,
  llm_context_entries          int         NOT NULL DEFAULT 0,
  llm_api_key_ct               bytea,
  llm_api_key_kid              text,
  system_prompt                text        NOT NULL DEFAULT '',
  greeting                     text        NOT NULL DEFAULT '',
  fallback_message             text        NOT NULL DEFAULT '',
  knowledge_base_ids           uuid[]      NOT NULL DEFAULT '{}',
  handoff_keywords             text[]      NOT NULL DEFAULT '{}',
  handoff_confidence_threshold float8      NOT NULL DEFAULT 0,
  max_bot_turns                int         NOT NULL DEFAULT 0,
  language                     text        NOT NULL DEFAULT '',
  voice_provider               text        NOT NULL DEFAULT '',
  voice_id                     text        NOT NULL DEFAULT '',
  voice_settings               jsonb       NOT NULL DEFAULT '{}',
  published_by_user_id         uuid,
  published_at                 timestamptz NOT NULL DEFAULT now(),
  note                         text        NOT NULL DEFAULT '',
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, agent_id, version),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents.agents (tenant_id, id)
);

CREATE TABLE agents.knowledge_bases (
  tenant_id   uuid        NOT NULL,
  id          uuid        NOT NULL,
  name        text        NOT NULL,
  description text        NOT NULL DEFAULT '',
  language    text        NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);

CREATE TABLE agents.knowledge_entries (
  tenant_id         uuid        NOT NULL,
  id                uuid        NOT NULL,
  knowledge_base_id uuid        NOT NULL,
  question          text        NOT NULL,
  answer            text        NOT NULL,
  keywords          text[]      NOT NULL DEFAULT '{}',
  intent            text        NOT NULL DEFAULT '',
  is_active         boolean     NOT NULL DEFAULT true,
  usage_count       bigint      NOT NULL DEFAULT 0,
  external_id       text,
  -- agents_text_normalize() of question, keywords + intent, answer:
  question_norm     text        NOT NULL,
  keywords_norm     text        NOT NULL DEFAULT '',
  answer_norm       text        NOT NULL DEFAULT '',
  match_text        text        GENERATED ALWAYS AS (
                      question_norm || ' ' || keywords_norm) STORED,
  search_tsv        tsvector    GENERATED ALWAYS AS (
                      setweight(to_tsvector('simple', question_norm), 'A') ||
                      setweight(to_tsvector('simple', keywords_norm), 'B') ||
                      setweight(to_tsvector('simple', answer_norm), 'D')) STORED,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, knowledge_base_id)
    REFERENCES agents.knowledge_bases (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX knowledge_entries_base ON agents.knowledge_entries
  (tenant_id, knowledge_base_id, id);
CREATE UNIQUE INDEX knowledge_entries_external ON agents.knowledge_entries
  (tenant_id, knowledge_base_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX knowledge_entries_tsv ON agents.knowledge_entries
  USING gin (search_tsv);
CREATE INDEX knowledge_entries_trgm ON agents.knowledge_entries
  USING gin (match_text gin_trgm_ops);
-- Nearest neighbours by trigram distance (the search's first candidates).
CREATE INDEX knowledge_entries_knn ON agents.knowledge_entries
  USING gist (match_text gist_trgm_ops);

CREATE TABLE agents.agent_sessions (
  tenant_id        uuid        NOT NULL,
  id               uuid        NOT NULL,
  agent_id         uuid        NOT NULL,
  session_key      text        NOT NULL,
  channel_id       text        NOT NULL DEFAULT '',
  conversation_id  text        NOT NULL DEFAULT '',
  contact_id       text        NOT NULL DEFAULT '',
  website_domain   text        NOT NULL DEFAULT '',
  client_ip        text        NOT NULL DEFAULT '',
  message_count    bigint      NOT NULL DEFAULT 0,
  bot_turns        int         NOT NULL DEFAULT 0, -- consecutive, reset on handoff
  context          jsonb       NOT NULL DEFAULT '{}',
  status           text        NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'ended', 'expired')),
  started_at       timestamptz NOT NULL DEFAULT now(),
  last_activity_at timestamptz NOT NULL DEFAULT now(),
  ended_at         timestamptz,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, agent_id) REFERENCES agents.agents (tenant_id, id)
);
CREATE UNIQUE INDEX agent_sessions_active ON agents.agent_sessions
  (tenant_id, session_key) WHERE status = 'active';
CREATE INDEX agent_sessions_key ON agents.agent_sessions
  (tenant_id, session_key, started_at DESC);
CREATE INDEX agent_sessions_recent ON agents.agent_sessions
  (tenant_id, last_activity_at DESC, id DESC);

CREATE TABLE agents.agent_messages (
  tenant_id         uuid        NOT NULL,
  id                uuid        NOT NULL,
  session_id        uuid        NOT NULL,
  role              text        NOT NULL
                    CHECK (role IN ('user', 'assistant', 'tool', 'system')),
  content           text        NOT NULL DEFAULT '',
  audio_url         text        NOT NULL DEFAULT '',
  audio_duration_ms int         NOT NULL DEFAULT 0,
  tokens_in         int         NOT NULL DEFAULT 0,
  tokens_out        int         NOT NULL DEFAULT 0,
  latency_ms        int         NOT NULL DEFAULT 0,
  model             text        NOT NULL DEFAULT '',
  engine            text        NOT NULL DEFAULT '',
  intent            text        NOT NULL DEFAULT '',
  confidence        float8      NOT NULL DEFAULT 0,
  message_id        text,       -- the inbound message answered (replays)
  reply             jsonb,      -- assistant rows: the whole ReplyResponse
  error             text        NOT NULL DEFAULT '', -- LLM failure fallen back from
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, session_id) REFERENCES agents.agent_sessions (tenant_id, id)
);
CREATE INDEX agent_messages_session ON agents.agent_messages
  (tenant_id, session_id, id);
CREATE UNIQUE INDEX agent_messages_replay ON agents.agent_messages
  (tenant_id, message_id) WHERE role = 'assistant' AND message_id IS NOT NULL;

CREATE TABLE agents.checkpoints (
  tenant_id            uuid        NOT NULL,
  thread_id            text        NOT NULL,
  checkpoint_ns        text        NOT NULL DEFAULT '',
  checkpoint_id        text        NOT NULL,
  parent_checkpoint_id text,
  type                 text,
  state                jsonb       NOT NULL DEFAULT '{}',
  metadata             jsonb       NOT NULL DEFAULT '{}',
  session_id           uuid,
  legacy_thread_id     text,
  created_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, checkpoint_id)
);

CREATE TABLE agents.checkpoint_blobs (
  tenant_id     uuid NOT NULL,
  thread_id     text NOT NULL,
  checkpoint_ns text NOT NULL DEFAULT '',
  channel       text NOT NULL,
  version       text NOT NULL,
  type          text NOT NULL,
  blob          bytea,       -- NULL for type 'empty'
  PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, channel, version)
);

CREATE TABLE agents.checkpoint_writes (
  tenant_id     uuid NOT NULL,
  thread_id     text NOT NULL,
  checkpoint_ns text NOT NULL DEFAULT '',
  checkpoint_id text NOT NULL,
  task_id       text NOT NULL,
  idx           int  NOT NULL,
  channel       text NOT NULL,
  type          text,
  blob          bytea NOT NULL,
  task_path     text NOT NULL DEFAULT '',
  PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);

CREATE TABLE agents.outbox (
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
CREATE INDEX outbox_due ON agents.outbox (next_attempt_at)
  WHERE delivered_at IS NULL;

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['agents', 'agent_versions', 'knowledge_bases',
      'knowledge_entries', 'agent_sessions', 'agent_messages', 'checkpoints',
      'checkpoint_blobs', 'checkpoint_writes'] LOOP
    EXECUTE format('ALTER TABLE agents.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE agents.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON agents.%I
      USING (current_setting('parley.tenant_id', true) = '*'
             OR tenant_id::text = current_setting('parley.tenant_id', true))
      WITH CHECK (current_setting('parley.tenant_id', true) = '*'
             OR tenant_id::text = current_setting('parley.tenant_id', true))$p$, t);
  END LOOP;
END $$;

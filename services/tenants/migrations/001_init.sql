-- The tenants service's schema (DESIGN §1, §4, §5; issue 3).
--
-- Tenant-owned tables lead their keys with tenant_id and carry the same
-- row-level security policy; users (a person may belong to several
-- tenants), login_failures (throttling by email and source, before any
-- tenant is known) and the outbox are platform-level and have none.

CREATE TABLE tenants.tenants (
	id             uuid        NOT NULL PRIMARY KEY,  -- the tenant id itself
	name           text        NOT NULL,
	slug           text        NOT NULL,
	status         text        NOT NULL DEFAULT 'active'
	               CHECK (status IN ('active', 'suspended')),
	time_zone      text        NOT NULL DEFAULT 'UTC',
	settings       jsonb       NOT NULL DEFAULT '{}',
	suspended_at   timestamptz,
	suspend_reason text,
	created_at     timestamptz NOT NULL DEFAULT now(),
	updated_at     timestamptz NOT NULL DEFAULT now()
);
-- Slugs are unique across the platform: they name a tenant in URLs.
CREATE UNIQUE INDEX tenants_slug ON tenants.tenants (slug);
CREATE INDEX tenants_lower_name ON tenants.tenants (lower(name) text_pattern_ops);

CREATE TABLE tenants.users (
	id             uuid        NOT NULL PRIMARY KEY,
	email          text        NOT NULL,
	password_hash  text        NOT NULL,  -- crypto_pwhash_str (argon2id)
	full_name      text        NOT NULL,
	is_active      boolean     NOT NULL DEFAULT true,
	platform_admin boolean     NOT NULL DEFAULT false,
	last_login_at  timestamptz,
	created_at     timestamptz NOT NULL DEFAULT now(),
	updated_at     timestamptz NOT NULL DEFAULT now()
);
-- Case-insensitive uniqueness without citext.
CREATE UNIQUE INDEX users_email_lower ON tenants.users (lower(email));

CREATE TABLE tenants.memberships (
	tenant_id  uuid        NOT NULL REFERENCES tenants.tenants (id),
	user_id    uuid        NOT NULL REFERENCES tenants.users (id),
	role       text        NOT NULL
	           CHECK (role IN ('owner', 'admin', 'agent', 'viewer')),
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user ON tenants.memberships (user_id, created_at);

-- Login sessions. The token is "st_<prefix>_<secret>"; only its SHA-256 is
-- kept; the prefix finds the row.
CREATE TABLE tenants.sessions (
	tenant_id    uuid        NOT NULL,
	id           uuid        NOT NULL,
	user_id      uuid        NOT NULL,
	prefix       text        NOT NULL,
	token_hash   bytea       NOT NULL,
	expires_at   timestamptz NOT NULL,
	source_ip    text,
	user_agent   text,
	created_at   timestamptz NOT NULL DEFAULT now(),
	last_used_at timestamptz,
	revoked_at   timestamptz,
	PRIMARY KEY (tenant_id, id),
	FOREIGN KEY (tenant_id, user_id)
	  REFERENCES tenants.memberships (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX sessions_prefix ON tenants.sessions (prefix);
CREATE INDEX sessions_user ON tenants.sessions (tenant_id, user_id)
	WHERE revoked_at IS NULL;
CREATE INDEX sessions_user_all ON tenants.sessions (user_id)
	WHERE revoked_at IS NULL;

-- API keys: "pk_<prefix>_<secret>", stored as SHA-256.
CREATE TABLE tenants.api_keys (
	tenant_id             uuid        NOT NULL REFERENCES tenants.tenants (id),
	id                    uuid        NOT NULL,
	name                  text        NOT NULL,
	prefix                text        NOT NULL,
	key_hash              bytea       NOT NULL,
	scopes                text[]      NOT NULL,
	role                  text        NOT NULL
	                      CHECK (role IN ('owner', 'admin', 'agent', 'viewer')),
	expires_at            timestamptz,
	rate_limit_per_minute int         NOT NULL DEFAULT 0,
	created_by_user_id    uuid,
	created_at            timestamptz NOT NULL DEFAULT now(),
	last_used_at          timestamptz,
	revoked_at            timestamptz,
	PRIMARY KEY (tenant_id, id)
);
CREATE INDEX api_keys_prefix ON tenants.api_keys (prefix);
CREATE INDEX api_keys_list ON tenants.api_keys (tenant_id, id DESC);

CREATE TABLE tenants.channel_integrations (
	tenant_id            uuid        NOT NULL REFERENCES tenants.tenants (id),
	id                   uuid        NOT NULL,
	type                 text        NOT NULL
	                     CHECK (type IN ('whatsapp_cloud', 'infobip', 'webchat')),
	name                 text        NOT NULL,
	status               text        NOT NULL DEFAULT 'active'
	                     CHECK (status IN ('active', 'disabled')),
	agent_id             uuid,
	routing_key          text        NOT NULL,
	phone_number_id      text,
	display_phone_number text,
	sender_number        text,
	api_base_url         text,
	allowed_origins      text[]      NOT NULL DEFAULT '{}',
	send_rate_per_second int         NOT NULL DEFAULT 0,
	settings             jsonb       NOT NULL DEFAULT '{}',
	-- XChaCha20-Poly1305: 24-byte nonce then ciphertext of a JSON object,
	-- associated data "<tenant_id>:<id>"; NULL when none are set.
	credentials          bytea,
	credentials_key_id   text,
	disabled_at          timestamptz,
	disabled_reason      text,
	created_at           timestamptz NOT NULL DEFAULT now(),
	updated_at           timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id)
);
-- A webhook must find its tenant: the routing key is unique per type
-- across the platform (the one unique constraint not led by tenant_id).
CREATE UNIQUE INDEX channel_integrations_routing
	ON tenants.channel_integrations (type, routing_key);
CREATE INDEX channel_integrations_by_id ON tenants.channel_integrations (id);
CREATE INDEX channel_integrations_list
	ON tenants.channel_integrations (tenant_id, id DESC);
CREATE INDEX channel_integrations_key_id
	ON tenants.channel_integrations (credentials_key_id)
	WHERE credentials IS NOT NULL;

-- Platform-level entries (a failed login for an unknown email) use the nil
-- uuid as tenant.
CREATE TABLE tenants.audit_log (
	tenant_id        uuid        NOT NULL,
	id               uuid        NOT NULL,
	action           text        NOT NULL,
	actor_user_id    uuid,
	actor_api_key_id uuid,
	actor_service    text,
	resource_type    text,
	resource_id      text,
	source_ip        text,
	user_agent       text,
	details          jsonb       NOT NULL DEFAULT '{}',
	created_at       timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_log_action ON tenants.audit_log (tenant_id, action, id DESC);
CREATE INDEX audit_log_resource
	ON tenants.audit_log (tenant_id, resource_type, resource_id, id DESC);
CREATE INDEX audit_log_actor ON tenants.audit_log (tenant_id, actor_user_id, id DESC);

-- Failed logins, counted per (email, source) over the throttling window.
CREATE TABLE tenants.login_failures (
	email     text        NOT NULL,  -- lower case
	source    text        NOT NULL,
	failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key ON tenants.login_failures (email, source, failed_at);

-- Events received through DeliverEvents, de-duplicated by id.
CREATE TABLE tenants.processed_events (
	tenant_id    uuid        NOT NULL,
	id           uuid        NOT NULL,
	type         text        NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id)
);

CREATE TABLE tenants.outbox (
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
CREATE INDEX outbox_due ON tenants.outbox (next_attempt_at)
	WHERE delivered_at IS NULL;

-- Row-level security, the same policy on every tenant table.
ALTER TABLE tenants.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants.tenants
	USING (current_setting('parley.tenant_id', true) = '*' OR id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR id::text = current_setting('parley.tenant_id', true));

ALTER TABLE tenants.memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants.memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants.memberships
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

ALTER TABLE tenants.sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants.sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants.sessions
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

ALTER TABLE tenants.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants.api_keys
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

ALTER TABLE tenants.channel_integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants.channel_integrations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants.channel_integrations
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

ALTER TABLE tenants.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants.audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants.audit_log
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

ALTER TABLE tenants.processed_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants.processed_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants.processed_events
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

-- Authenticate's lookup in one round trip (the hot path): a credential by
-- kind and prefix, across tenants (the caller is not known yet, hence '*'),
-- with what the principal needs. The caller compares the hash in constant
-- time and decides; rows are returned revoked or expired too so that the
-- work done does not depend on the outcome.
CREATE FUNCTION tenants.auth_lookup(p_kind text, p_prefix text)
RETURNS TABLE (id uuid, tenant_id uuid, user_id uuid, role text,
	scopes text[], hash bytea, expires_at timestamptz, revoked boolean,
	expired boolean, tenant_status text, platform_admin boolean,
	user_active boolean, rate_limit int, last_used_stale boolean)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('parley.tenant_id', '*', true);
	IF p_kind = 'session' THEN
		RETURN QUERY
		SELECT s.id, s.tenant_id, s.user_id, m.role, '{}'::text[],
		       s.token_hash, s.expires_at, s.revoked_at IS NOT NULL,
		       s.expires_at <= now(), t.status, u.platform_admin,
		       u.is_active, 0,
		       (s.last_used_at IS NULL OR s.last_used_at < now() - interval '1 minute')
		  FROM tenants.sessions s
		  JOIN tenants.memberships m
		    ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id
		  JOIN tenants.users u ON u.id = s.user_id
		  JOIN tenants.tenants t ON t.id = s.tenant_id
		 WHERE s.prefix = p_prefix;
	ELSE
		RETURN QUERY
		SELECT k.id, k.tenant_id, k.created_by_user_id, k.role, k.scopes,
		       k.key_hash, k.expires_at, k.revoked_at IS NOT NULL,
		       coalesce(k.expires_at <= now(), false), t.status, false,
		       true, k.rate_limit_per_minute,
		       (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute')
		  FROM tenants.api_keys k
		  JOIN tenants.tenants t ON t.id = k.tenant_id
		 WHERE k.prefix = p_prefix;
	END IF;
END
$$;

-- Records a credential's use (Authenticate calls it at most once a minute
-- per credential), in one round trip.
CREATE FUNCTION tenants.auth_touch(p_kind text, p_tenant uuid, p_id uuid)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('parley.tenant_id', p_tenant::text, true);
	IF p_kind = 'session' THEN
		UPDATE tenants.sessions SET last_used_at = now()
		 WHERE tenant_id = p_tenant AND id = p_id;
	ELSE
		UPDATE tenants.api_keys SET last_used_at = now()
		 WHERE tenant_id = p_tenant AND id = p_id;
	END IF;
END
$$;

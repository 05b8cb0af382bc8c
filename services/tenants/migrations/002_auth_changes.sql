-- The change feed behind Authenticate's cache (README "Authenticate and
-- its cache"): every change that can alter an Authenticate answer appends
-- a row here in the same transaction, written by triggers so that no path
-- can forget it (the RPCs, another replica, an operator's SQL). Every
-- process polls the feed every ~200 ms and evicts what changed.
--
-- Platform-level (no RLS, like the outbox): the pollers read it across
-- tenants, and rows carry only ids. Rows are found by the writing
-- transaction's id (xid): a poller asks for xid >= the xmin of its
-- previous snapshot, which also returns rows whose transaction committed
-- late (a bigserial alone would skip a lower seq committed after a higher
-- one).
CREATE TABLE tenants.auth_changes (
	seq        bigserial   NOT NULL PRIMARY KEY,
	xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
	kind       text        NOT NULL
	           CHECK (kind IN ('api_key', 'session', 'member', 'user', 'tenant')),
	tenant_id  uuid,  -- NULL: every tenant (a user's change)
	user_id    uuid,
	cred_id    uuid,  -- the session's or API key's id
	changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX auth_changes_xid ON tenants.auth_changes (xid);
CREATE INDEX auth_changes_changed_at ON tenants.auth_changes (changed_at);

-- One function for the five tables; OLD names what the caches hold.
CREATE FUNCTION tenants.auth_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_TABLE_NAME = 'api_keys' THEN
		INSERT INTO tenants.auth_changes (kind, tenant_id, user_id, cred_id)
		VALUES ('api_key', OLD.tenant_id, OLD.created_by_user_id, OLD.id);
	ELSIF TG_TABLE_NAME = 'sessions' THEN
		INSERT INTO tenants.auth_changes (kind, tenant_id, user_id, cred_id)
		VALUES ('session', OLD.tenant_id, OLD.user_id, OLD.id);
	ELSIF TG_TABLE_NAME = 'memberships' THEN
		INSERT INTO tenants.auth_changes (kind, tenant_id, user_id)
		VALUES ('member', OLD.tenant_id, OLD.user_id);
	ELSIF TG_TABLE_NAME = 'users' THEN
		INSERT INTO tenants.auth_changes (kind, user_id)
		VALUES ('user', OLD.id);
	ELSIF TG_TABLE_NAME = 'tenants' THEN
		INSERT INTO tenants.auth_changes (kind, tenant_id)
		VALUES ('tenant', OLD.id);
	END IF;
	RETURN NULL;
END
$$;

-- Only columns an answer depends on (last_used_at, last_login_at and the
-- like change often and must not churn the caches).
CREATE TRIGGER auth_changed_update AFTER UPDATE ON tenants.api_keys
	FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
	                OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
	                OR OLD.role IS DISTINCT FROM NEW.role
	                OR OLD.scopes IS DISTINCT FROM NEW.scopes
	                OR OLD.rate_limit_per_minute IS DISTINCT FROM NEW.rate_limit_per_minute
	                OR OLD.key_hash IS DISTINCT FROM NEW.key_hash
	                OR OLD.prefix IS DISTINCT FROM NEW.prefix
	                OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id
	                OR OLD.created_by_user_id IS DISTINCT FROM NEW.created_by_user_id)
	EXECUTE FUNCTION tenants.auth_changed();
CREATE TRIGGER auth_changed_delete AFTER DELETE ON tenants.api_keys
	FOR EACH ROW EXECUTE FUNCTION tenants.auth_changed();

CREATE TRIGGER auth_changed_update AFTER UPDATE ON tenants.sessions
	FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
	                OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
	                OR OLD.token_hash IS DISTINCT FROM NEW.token_hash
	                OR OLD.prefix IS DISTINCT FROM NEW.prefix
	                OR OLD.user_id IS DISTINCT FROM NEW.user_id
	                OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
	EXECUTE FUNCTION tenants.auth_changed();
CREATE TRIGGER auth_changed_delete AFTER DELETE ON tenants.sessions
	FOR EACH ROW EXECUTE FUNCTION tenants.auth_changed();

CREATE TRIGGER auth_changed_update AFTER UPDATE ON tenants.memberships
	FOR EACH ROW WHEN (OLD.role IS DISTINCT FROM NEW.role
	                OR OLD.user_id IS DISTINCT FROM NEW.user_id
	                OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
	EXECUTE FUNCTION tenants.auth_changed();
CREATE TRIGGER auth_changed_delete AFTER DELETE ON tenants.memberships
	FOR EACH ROW EXECUTE FUNCTION tenants.auth_changed();

CREATE TRIGGER auth_changed_update AFTER UPDATE ON tenants.users
	FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active
	                OR OLD.platform_admin IS DISTINCT FROM NEW.platform_admin
	                OR OLD.password_hash IS DISTINCT FROM NEW.password_hash)
	EXECUTE FUNCTION tenants.auth_changed();
CREATE TRIGGER auth_changed_delete AFTER DELETE ON tenants.users
	FOR EACH ROW EXECUTE FUNCTION tenants.auth_changed();

CREATE TRIGGER auth_changed_update AFTER UPDATE ON tenants.tenants
	FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
	EXECUTE FUNCTION tenants.auth_changed();
CREATE TRIGGER auth_changed_delete AFTER DELETE ON tenants.tenants
	FOR EACH ROW EXECUTE FUNCTION tenants.auth_changed();

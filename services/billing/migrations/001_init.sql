-- billing: plans, subscriptions, usage counters and reservations, invoices,
-- payment events, consumed events, outbox. See services/billing/README.md.

-- Plans are the platform's catalogue, not tenant data: no tenant_id, no RLS.
-- Limits: -1 unlimited, 0 none. overage_<metric>_per_1000: NULL = hard cap,
-- else the monthly limit is soft and units past it are billed at this price
-- per 1,000 units (minor units of the plan's currency).
CREATE TABLE billing.plans (
	id                         uuid        NOT NULL PRIMARY KEY,
	code                       text        NOT NULL UNIQUE
		CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
	name                       text        NOT NULL,
	description                text        NOT NULL DEFAULT '',
	price_minor                bigint      NOT NULL CHECK (price_minor >= 0),
	currency                   text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
	billing_interval           text        NOT NULL
		CHECK (billing_interval IN ('month', 'year')),
	trial_days                 int         NOT NULL DEFAULT 0
		CHECK (trial_days BETWEEN 0 AND 365),
	is_public                  boolean     NOT NULL DEFAULT false,
	is_default                 boolean     NOT NULL DEFAULT false,
	archived                   boolean     NOT NULL DEFAULT false,
	limit_messages_per_day     bigint      NOT NULL DEFAULT -1 CHECK (limit_messages_per_day >= -1),
	limit_messages_per_month   bigint      NOT NULL DEFAULT -1 CHECK (limit_messages_per_month >= -1),
	limit_campaigns_per_day    bigint      NOT NULL DEFAULT -1 CHECK (limit_campaigns_per_day >= -1),
	limit_campaigns_per_month  bigint      NOT NULL DEFAULT -1 CHECK (limit_campaigns_per_month >= -1),
	limit_agents               bigint      NOT NULL DEFAULT -1 CHECK (limit_agents >= -1),
	limit_seats                bigint      NOT NULL DEFAULT -1 CHECK (limit_seats >= -1),
	limit_knowledge_entries    bigint      NOT NULL DEFAULT -1 CHECK (limit_knowledge_entries >= -1),
	limit_ai_tokens_per_month  bigint      NOT NULL DEFAULT -1 CHECK (limit_ai_tokens_per_month >= -1),
	feature_human_takeover     boolean     NOT NULL DEFAULT false,
	feature_campaigns          boolean     NOT NULL DEFAULT false,
	feature_api_access         boolean     NOT NULL DEFAULT false,
	feature_webhooks           boolean     NOT NULL DEFAULT false,
	feature_llm_agents         boolean     NOT NULL DEFAULT false,
	feature_analytics_export   boolean     NOT NULL DEFAULT false,
	overage_messages_per_1000  bigint      CHECK (overage_messages_per_1000 >= 0),
	overage_campaigns_per_1000 bigint      CHECK (overage_campaigns_per_1000 >= 0),
	overage_ai_tokens_per_1000 bigint      CHECK (overage_ai_tokens_per_1000 >= 0),
	created_at                 timestamptz NOT NULL DEFAULT now(),
	updated_at                 timestamptz NOT NULL DEFAULT now()
);
-- Exactly one default plan (trials start on it).
CREATE UNIQUE INDEX plans_one_default ON billing.plans ((true)) WHERE is_default;

-- One subscription per tenant. period_plan_id is the plan the current
-- period started on: its fee is invoiced at close, plan changes inside the
-- period add proration lines (README "Proration").
CREATE TABLE billing.subscriptions (
	tenant_id                uuid        NOT NULL,
	id                       uuid        NOT NULL,
	plan_id                  uuid        NOT NULL REFERENCES billing.plans (id),
	period_plan_id           uuid        NOT NULL REFERENCES billing.plans (id),
	status                   text        NOT NULL CHECK (status IN
		('trialing', 'active', 'past_due', 'canceled', 'expired')),
	anchor_date              date        NOT NULL,
	current_period_start_at  timestamptz NOT NULL,
	current_period_end_at    timestamptz NOT NULL,
	trial_end_at             timestamptz,
	cancel_at_period_end     boolean     NOT NULL DEFAULT false,
	canceled_at              timestamptz,
	past_due_since_at        timestamptz,
	grace_expired_at         timestamptz,
	provider_customer_id     text        NOT NULL DEFAULT '',
	provider_subscription_id text        NOT NULL DEFAULT '',
	started_at               timestamptz NOT NULL,
	created_at               timestamptz NOT NULL DEFAULT now(),
	updated_at               timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id),
	UNIQUE (tenant_id)
);
CREATE INDEX subscriptions_due ON billing.subscriptions (current_period_end_at)
	WHERE status <> 'expired';
CREATE INDEX subscriptions_past_due ON billing.subscriptions (past_due_since_at)
	WHERE status = 'past_due' AND grace_expired_at IS NULL;

CREATE TABLE billing.subscription_changes (
	tenant_id       uuid        NOT NULL,
	id              uuid        NOT NULL,
	subscription_id uuid        NOT NULL,
	from_plan_code  text        NOT NULL DEFAULT '',
	to_plan_code    text        NOT NULL DEFAULT '',
	from_status     text        NOT NULL DEFAULT '',
	to_status       text        NOT NULL DEFAULT '',
	reason          text        NOT NULL,
	actor_user_id   text        NOT NULL DEFAULT '',
	created_at      timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id),
	FOREIGN KEY (tenant_id, subscription_id)
		REFERENCES billing.subscriptions (tenant_id, id)
);

-- Usage per (tenant, metric, day|month, period start). Day periods start at
-- 00:00 UTC; month periods are the subscription's billing periods.
CREATE TABLE billing.usage_counters (
	tenant_id    uuid        NOT NULL,
	metric       text        NOT NULL CHECK (metric IN ('messages', 'campaigns', 'ai_tokens')),
	period_kind  text        NOT NULL CHECK (period_kind IN ('day', 'month')),
	period_start timestamptz NOT NULL,
	used         bigint      NOT NULL DEFAULT 0 CHECK (used >= 0),
	PRIMARY KEY (tenant_id, metric, period_kind, period_start)
);

-- One row per idempotency key: the answer given (allowed, or refused with
-- the limit named in refusal) and what has been released since.
CREATE TABLE billing.usage_reservations (
	tenant_id       uuid        NOT NULL,
	id              uuid        NOT NULL,
	idempotency_key text        NOT NULL,
	metric          text        NOT NULL,
	amount          bigint      NOT NULL CHECK (amount > 0),
	allowed         boolean     NOT NULL,
	refusal         text        NOT NULL DEFAULT '',
	released        bigint      NOT NULL DEFAULT 0 CHECK (released >= 0),
	remaining_day   bigint      NOT NULL DEFAULT -1,
	remaining_month bigint      NOT NULL DEFAULT -1,
	overage         bigint      NOT NULL DEFAULT 0,
	day_start       timestamptz,
	month_start     timestamptz,
	created_at      timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id),
	UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX usage_reservations_created ON billing.usage_reservations (created_at);

-- Invoice numbers: ONE global counter row, incremented in the transaction
-- that inserts the invoice, so numbers are gap-free and sequential across
-- the platform (a rolled back close rolls its number back too).
CREATE TABLE billing.invoice_counter (
	id          smallint NOT NULL PRIMARY KEY CHECK (id = 1),
	last_number bigint   NOT NULL
);
INSERT INTO billing.invoice_counter (id, last_number) VALUES (1, 0);

CREATE TABLE billing.invoices (
	tenant_id           uuid        NOT NULL,
	id                  uuid        NOT NULL,
	number              bigint      NOT NULL,
	subscription_id     uuid        NOT NULL,
	status              text        NOT NULL CHECK (status IN ('open', 'paid', 'void', 'uncollectible')),
	currency            text        NOT NULL,
	subtotal_minor      bigint      NOT NULL,
	total_minor         bigint      NOT NULL,
	period_start_at     timestamptz NOT NULL,
	period_end_at       timestamptz NOT NULL,
	issued_at           timestamptz NOT NULL,
	due_at              timestamptz NOT NULL,
	paid_at             timestamptz,
	provider_invoice_id text        NOT NULL DEFAULT '',
	created_at          timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id),
	UNIQUE (tenant_id, number),
	UNIQUE (tenant_id, subscription_id, period_start_at),
	FOREIGN KEY (tenant_id, subscription_id)
		REFERENCES billing.subscriptions (tenant_id, id)
);
CREATE INDEX invoices_status ON billing.invoices (tenant_id, status, number);

-- Lines; invoice_id NULL: a proration waiting for the next invoice.
CREATE TABLE billing.invoice_lines (
	tenant_id        uuid        NOT NULL,
	id               uuid        NOT NULL,
	invoice_id       uuid,
	subscription_id  uuid        NOT NULL,
	kind             text        NOT NULL CHECK (kind IN ('plan_fee', 'proration', 'overage')),
	description      text        NOT NULL,
	metric           text        NOT NULL DEFAULT '',
	quantity         bigint      NOT NULL DEFAULT 1,
	unit_price_minor bigint      NOT NULL DEFAULT 0,
	amount_minor     bigint      NOT NULL,
	currency         text        NOT NULL,
	period_start_at  timestamptz NOT NULL,
	period_end_at    timestamptz NOT NULL,
	created_at       timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id),
	FOREIGN KEY (tenant_id, invoice_id) REFERENCES billing.invoices (tenant_id, id),
	FOREIGN KEY (tenant_id, subscription_id)
		REFERENCES billing.subscriptions (tenant_id, id)
);
CREATE INDEX invoice_lines_invoice ON billing.invoice_lines (tenant_id, invoice_id);
CREATE INDEX invoice_lines_pending ON billing.invoice_lines (tenant_id, subscription_id)
	WHERE invoice_id IS NULL;

-- The payment provider's events, de-duplicated by its event id. Platform
-- bookkeeping (an event may name no known tenant): no RLS.
CREATE TABLE billing.payment_events (
	event_id    text        NOT NULL PRIMARY KEY,
	type        text        NOT NULL,
	tenant_id   uuid,
	signed_at   timestamptz NOT NULL,
	payload     jsonb       NOT NULL,
	applied     boolean     NOT NULL DEFAULT false,
	received_at timestamptz NOT NULL DEFAULT now()
);

-- Events consumed through DeliverEvents, de-duplicated by event id.
CREATE TABLE billing.processed_events (
	event_id     uuid        NOT NULL PRIMARY KEY,
	tenant_id    uuid        NOT NULL,
	type         text        NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing.outbox (
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
CREATE INDEX outbox_due ON billing.outbox (next_attempt_at)
	WHERE delivered_at IS NULL;

-- Row-level security on every tenant table.
ALTER TABLE billing.subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.subscriptions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.subscriptions
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));
ALTER TABLE billing.subscription_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.subscription_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.subscription_changes
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));
ALTER TABLE billing.usage_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.usage_counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.usage_counters
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));
ALTER TABLE billing.usage_reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.usage_reservations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.usage_reservations
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));
ALTER TABLE billing.invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.invoices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.invoices
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));
ALTER TABLE billing.invoice_lines ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.invoice_lines FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing.invoice_lines
	USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
	WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

-- The billing month containing p_at for a subscription anchored on
-- p_anchor: [anchor + k months, anchor + (k+1) months) at 00:00 UTC, where
-- adding months clamps to the month's last day (Jan 31 -> Feb 29 -> Mar 31,
-- always counted from the anchor). The same rule as period.c.
CREATE FUNCTION billing.month_period(p_anchor date, p_at timestamptz,
	OUT period_start timestamptz, OUT period_end timestamptz)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
	v_at timestamp := p_at AT TIME ZONE 'UTC';
	v_k  int := (extract(year FROM v_at)::int - extract(year FROM p_anchor)::int) * 12
	          + extract(month FROM v_at)::int - extract(month FROM p_anchor)::int;
	v_s  timestamp := p_anchor + make_interval(months => v_k);
BEGIN
	IF v_s > v_at THEN
		v_k := v_k - 1;
		v_s := p_anchor + make_interval(months => v_k);
	END IF;
	period_start := v_s AT TIME ZONE 'UTC';
	period_end := (p_anchor + make_interval(months => v_k + 1)) AT TIME ZONE 'UTC';
END
$$;

-- ReserveUsage in one round trip. outcome: 'ok', 'exhausted' (refusal names
-- the limit), 'conflict' (key reused with another metric or amount),
-- 'no_subscription', 'inactive'. The day and month counters are both
-- incremented or neither: the day row is incremented first under its row
-- lock; if the month row refuses, the day increment is taken back before
-- anyone else can see it (the lock is held to commit). A replayed key
-- returns the stored answer. Refusals for a missing or inactive
-- subscription store nothing, so a later retry can succeed.
CREATE FUNCTION billing.reserve_usage(p_tenant uuid, p_metric text,
	p_amount bigint, p_key text, p_id uuid, p_emit_refusal boolean)
RETURNS TABLE (outcome text, reservation_id uuid, remaining_day bigint,
	remaining_month bigint, overage bigint, replayed boolean,
	refusal text, day_limit bigint, month_limit bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_status     text;
	v_anchor     date;
	v_day_lim    bigint := -1;
	v_month_lim  bigint := -1;
	v_over_price bigint;
	v_has_day    boolean := p_metric <> 'ai_tokens';
	v_day_start  timestamptz;
	v_month_start timestamptz;
	v_day_used   bigint := 0;
	v_month_used bigint := 0;
	v_r          billing.usage_reservations%ROWTYPE;
BEGIN
	PERFORM set_config('parley.tenant_id', p_tenant::text, true);
	SELECT s.status, s.anchor_date,
	       CASE p_metric WHEN 'messages' THEN p.limit_messages_per_day
	                     WHEN 'campaigns' THEN p.limit_campaigns_per_day ELSE -1 END,
	       CASE p_metric WHEN 'messages' THEN p.limit_messages_per_month
	                     WHEN 'campaigns' THEN p.limit_campaigns_per_month
	                     ELSE p.limit_ai_tokens_per_month END,
	       CASE p_metric WHEN 'messages' THEN p.overage_messages_per_1000
	                     WHEN 'campaigns' THEN p.overage_campaigns_per_1000
	                     ELSE p.overage_ai_tokens_per_1000 END
	  INTO v_status, v_anchor, v_day_lim, v_month_lim, v_over_price
	  FROM billing.subscriptions s JOIN billing.plans p ON p.id = s.plan_id
	 WHERE s.tenant_id = p_tenant;
	IF NOT FOUND THEN
		outcome := 'no_subscription';
		RETURN NEXT;
		RETURN;
	END IF;
	day_limit := v_day_lim;
	month_limit := v_month_lim;

	INSERT INTO billing.usage_reservations (tenant_id, id, idempotency_key,
		metric, amount, allowed)
	VALUES (p_tenant, p_id, p_key, p_metric, p_amount, false)
	ON CONFLICT (tenant_id, idempotency_key) DO NOTHING;
	IF NOT FOUND THEN
		SELECT * INTO v_r FROM billing.usage_reservations r
		 WHERE r.tenant_id = p_tenant AND r.idempotency_key = p_key;
		replayed := true;
		reservation_id := v_r.id;
		remaining_day := v_r.remaining_day;
		remaining_month := v_r.remaining_month;
		overage := v_r.overage;
		refusal := v_r.refusal;
		IF v_r.metric <> p_metric OR v_r.amount <> p_amount THEN
			outcome := 'conflict';
		ELSIF v_r.allowed THEN
			outcome := 'ok';
		ELSE
			outcome := 'exhausted';
		END IF;
		RETURN NEXT;
		RETURN;
	END IF;
	IF v_status NOT IN ('trialing', 'active', 'past_due') THEN
		DELETE FROM billing.usage_reservations r
		 WHERE r.tenant_id = p_tenant AND r.id = p_id;
		outcome := 'inactive';
		refusal := v_status;
		RETURN NEXT;
		RETURN;
	END IF;

	v_day_start := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
	SELECT mp.period_start INTO v_month_start
	  FROM billing.month_period(v_anchor, now()) mp;
	outcome := 'ok';
	IF v_has_day AND v_day_lim >= 0 AND p_amount > v_day_lim THEN
		outcome := 'exhausted';
		refusal := p_metric || '_per_day';
	ELSIF v_month_lim >= 0 AND v_over_price IS NULL AND p_amount > v_month_lim THEN
		outcome := 'exhausted';
		refusal := p_metric || '_per_month';
	END IF;

	IF outcome = 'ok' AND v_has_day THEN
		INSERT INTO billing.usage_counters AS c (tenant_id, metric,
			period_kind, period_start, used)
		VALUES (p_tenant, p_metric, 'day', v_day_start, p_amount)
		ON CONFLICT (tenant_id, metric, period_kind, period_start)
		DO UPDATE SET used = c.used + EXCLUDED.used
		 WHERE v_day_lim < 0 OR c.used + EXCLUDED.used <= v_day_lim
		RETURNING c.used INTO v_day_used;
		IF NOT FOUND THEN
			outcome := 'exhausted';
			refusal := p_metric || '_per_day';
		END IF;
	END IF;
	IF outcome = 'ok' THEN
		INSERT INTO billing.usage_counters AS c (tenant_id, metric,
			period_kind, period_start, used)
		VALUES (p_tenant, p_metric, 'month', v_month_start, p_amount)
		ON CONFLICT (tenant_id, metric, period_kind, period_start)
		DO UPDATE SET used = c.used + EXCLUDED.used
		 WHERE v_month_lim < 0 OR v_over_price IS NOT NULL
		    OR c.used + EXCLUDED.used <= v_month_lim
		RETURNING c.used INTO v_month_used;
		IF NOT FOUND THEN
			outcome := 'exhausted';
			refusal := p_metric || '_per_month';
			IF v_has_day THEN
				-- Take the day increment back (still under our lock).
				UPDATE billing.usage_counters c SET used = c.used - p_amount
				 WHERE c.tenant_id = p_tenant AND c.metric = p_metric
				   AND c.period_kind = 'day' AND c.period_start = v_day_start;
			END IF;
		END IF;
	END IF;

	IF outcome = 'exhausted' THEN
		SELECT coalesce((SELECT c.used FROM billing.usage_counters c
		   WHERE c.tenant_id = p_tenant AND c.metric = p_metric
		     AND c.period_kind = 'day' AND c.period_start = v_day_start), 0)
		  INTO v_day_used;
		SELECT coalesce((SELECT c.used FROM billing.usage_counters c
		   WHERE c.tenant_id = p_tenant AND c.metric = p_metric
		     AND c.period_kind = 'month' AND c.period_start = v_month_start), 0)
		  INTO v_month_used;
	END IF;
	remaining_day := CASE WHEN NOT v_has_day OR v_day_lim < 0 THEN -1
	                      ELSE greatest(v_day_lim - v_day_used, 0) END;
	remaining_month := CASE WHEN v_month_lim < 0 THEN -1
	                        ELSE greatest(v_month_lim - v_month_used, 0) END;
	overage := 0;
	IF outcome = 'ok' AND v_over_price IS NOT NULL AND v_month_lim >= 0 THEN
		overage := greatest(v_month_used - v_month_lim, 0)
		         - greatest(v_month_used - p_amount - v_month_lim, 0);
	END IF;
	reservation_id := p_id;
	replayed := false;
	UPDATE billing.usage_reservations r
	   SET allowed = (outcome = 'ok'), refusal = coalesce(reserve_usage.refusal, ''),
	       remaining_day = reserve_usage.remaining_day,
	       remaining_month = reserve_usage.remaining_month,
	       overage = reserve_usage.overage,
	       day_start = CASE WHEN outcome = 'ok' AND v_has_day THEN v_day_start END,
	       month_start = CASE WHEN outcome = 'ok' THEN v_month_start END
	 WHERE r.tenant_id = p_tenant AND r.id = p_id;
	IF outcome = 'exhausted' AND p_emit_refusal THEN
		INSERT INTO billing.outbox (id, destination, tenant_id, type, payload)
		VALUES (p_id, 'analytics', p_tenant, 'usage.refused',
		        jsonb_build_object('metric', p_metric, 'amount', p_amount,
		                           'limit', refusal));
	END IF;
	RETURN NEXT;
END
$$;

-- ReleaseUsage: gives back up to p_amount (0: all) of what a granted
-- reservation still holds, from the counters it was taken from.
-- outcome: 'ok' or 'not_found'.
CREATE FUNCTION billing.release_usage(p_tenant uuid, p_key text, p_amount bigint)
RETURNS TABLE (outcome text, released bigint, remaining bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_r   billing.usage_reservations%ROWTYPE;
	v_rel bigint;
BEGIN
	PERFORM set_config('parley.tenant_id', p_tenant::text, true);
	SELECT * INTO v_r FROM billing.usage_reservations r
	 WHERE r.tenant_id = p_tenant AND r.idempotency_key = p_key FOR UPDATE;
	IF NOT FOUND THEN
		outcome := 'not_found';
		RETURN NEXT;
		RETURN;
	END IF;
	outcome := 'ok';
	IF NOT v_r.allowed THEN
		released := 0;
		remaining := 0;
		RETURN NEXT;
		RETURN;
	END IF;
	v_rel := v_r.amount - v_r.released;
	IF p_amount > 0 AND p_amount < v_rel THEN
		v_rel := p_amount;
	END IF;
	IF v_rel > 0 THEN
		IF v_r.day_start IS NOT NULL THEN
			UPDATE billing.usage_counters c SET used = greatest(c.used - v_rel, 0)
			 WHERE c.tenant_id = p_tenant AND c.metric = v_r.metric
			   AND c.period_kind = 'day' AND c.period_start = v_r.day_start;
		END IF;
		UPDATE billing.usage_counters c SET used = greatest(c.used - v_rel, 0)
		 WHERE c.tenant_id = p_tenant AND c.metric = v_r.metric
		   AND c.period_kind = 'month' AND c.period_start = v_r.month_start;
		UPDATE billing.usage_reservations r SET released = r.released + v_rel
		 WHERE r.tenant_id = p_tenant AND r.id = v_r.id;
	END IF;
	released := v_rel;
	remaining := v_r.amount - v_r.released - v_rel;
	RETURN NEXT;
END
$$;

-- Seed plans. "unlimited" is internal: the platform's admin tenant and the
-- legacy import. "starter" is the default: trials start on it.
INSERT INTO billing.plans (id, code, name, description, price_minor, currency,
	billing_interval, trial_days, is_public, is_default,
	limit_messages_per_day, limit_messages_per_month, limit_campaigns_per_day,
	limit_campaigns_per_month, limit_agents, limit_seats,
	limit_knowledge_entries, limit_ai_tokens_per_month,
	feature_human_takeover, feature_campaigns, feature_api_access,
	feature_webhooks, feature_llm_agents, feature_analytics_export,
	overage_messages_per_1000, overage_campaigns_per_1000,
	overage_ai_tokens_per_1000)
VALUES
	('01900000-0000-7000-8000-000000000001', 'unlimited', 'Unlimited',
	 'Internal: the platform''s own tenant and the legacy import', 0, 'USD',
	 'month', 0, false, false, -1, -1, -1, -1, -1, -1, -1, -1,
	 true, true, true, true, true, true, NULL, NULL, NULL),
	('01900000-0000-7000-8000-000000000002', 'starter', 'Starter',
	 'One agent, one number, the essentials', 1900, 'USD', 'month', 14,
	 true, true, 1000, 10000, 5, 20, 1, 3, 500, 1000000,
	 true, false, true, false, false, false, NULL, NULL, NULL),
	('01900000-0000-7000-8000-000000000003', 'growth', 'Growth',
	 'Campaigns, webhooks and LLM agents, with overage', 9900, 'USD',
	 'month', 0, true, false, 10000, 100000, 50, 200, 5, 10, 5000, 10000000,
	 true, true, true, true, true, false, 500, 2000, 20),
	('01900000-0000-7000-8000-000000000004', 'business', 'Business',
	 'Everything, higher limits, analytics export', 29900, 'USD', 'month', 0,
	 true, false, 100000, 1000000, 500, 2000, 25, 50, 50000, 100000000,
	 true, true, true, true, true, true, 300, 1000, 15);

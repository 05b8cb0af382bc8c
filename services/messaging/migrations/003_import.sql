-- Legacy import bookkeeping (issue 10): which Parley row each legacy row
-- became. The import RPCs are idempotent by (kind, legacy_id): a row already
-- in this map is never imported again, and a merged contact has several
-- legacy ids pointing at one Parley contact.

CREATE TABLE messaging.import_map (
  tenant_id  uuid        NOT NULL,
  kind       text        NOT NULL
             CHECK (kind IN ('contact', 'conversation', 'message', 'order',
                             'campaign', 'recipient')),
  legacy_id  text        NOT NULL,
  id         uuid        NOT NULL,
  raw        text,                  -- contacts: the phone as the legacy row wrote it
  details    jsonb,                 -- orders: the legacy order_details as they were
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, kind, legacy_id)
);
CREATE INDEX import_map_by_id ON messaging.import_map (tenant_id, kind, id);

ALTER TABLE messaging.import_map ENABLE ROW LEVEL SECURITY;
ALTER TABLE messaging.import_map FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messaging.import_map
  USING (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true))
  WITH CHECK (current_setting('parley.tenant_id', true) = '*' OR tenant_id::text = current_setting('parley.tenant_id', true));

-- messaging 025: the hot tables' CHECK constraints as domains, and the
-- outbound-webhook trigger's WHEN clause without a function call.
--
-- PostgreSQL 15 prepares a table's CHECK constraints again in every
-- statement that writes the table: ExecConstraints reads each stored
-- expression (stringToNode), plans it (expression_planner) and compiles
-- it, for every INSERT and every UPDATE, whatever columns the UPDATE sets.
-- A trigger's WHEN clause is prepared the same way, and 024's called
-- webhook_event_types(), an IMMUTABLE SQL function that the planner folds
-- by running it: a parse, an analysis and a plan of its body at every
-- statement that inserts into the outbox. In perf at 500 msgs/s through
-- the whole stack (perf record -a -g, thirty-fourth session), as a share
-- of PostgreSQL's samples: ExecConstraints 3.1 % (2.4 % reading and
-- planning), the WHEN clauses 1.5 % (1.3 % that function).
--
-- A domain's checks are read and planned once per session (the type
-- cache) and run only where a value is given to the column: an UPDATE
-- that leaves status alone checks nothing. The same values are allowed
-- and refused (SQLSTATE 23514 either way); NULL passes as it did.
--
-- Without a table rewrite: each column first takes a domain with no
-- constraint (a relabeling: no rewrite; the two partial indexes whose
-- predicates read status and owner are built again), the domain then gets
-- its CHECK (which reads the column's rows once to validate them), and the
-- table's CHECK goes. The two views over these columns and the trigger
-- whose WHEN clause reads two of them are dropped and made again from
-- their own definitions, which PostgreSQL requires to change a column's
-- type. The additive policy (DESIGN §4) allows this one change of type
-- (pl_migrate_lint): a domain over text reads, writes and travels as text.
--
-- RETURN QUERY insists on its result columns' exact types, so the three
-- functions that return one of these columns as text (owner,
-- external_id_kind) now cast it: each is made again from its own
-- definition (pg_get_functiondef) with that one change, and the migration
-- stops if the text to change is not there exactly once.
--
-- The outbox trigger's WHEN clause holds webhook_event_types()'s value as
-- a constant, taken from the function when this runs: a migration that
-- changes the function must make the trigger again the same way.

DO $$
BEGIN
  PERFORM set_config('parley.m025_recipients_v',
                     pg_get_viewdef('messaging.campaign_recipients_v'::regclass), true);
  PERFORM set_config('parley.m025_leads_v', pg_get_viewdef('messaging.leads_v'::regclass), true);
END
$$;
DROP VIEW messaging.campaign_recipients_v;
DROP VIEW messaging.leads_v;
DROP TRIGGER followups_on_message ON messaging.messages;

CREATE DOMAIN messaging.external_id_kind AS text;
CREATE DOMAIN messaging.conversation_status AS text;
CREATE DOMAIN messaging.conversation_owner AS text;
CREATE DOMAIN messaging.conversation_stage AS text;
CREATE DOMAIN messaging.intent_level AS text;
CREATE DOMAIN messaging.sentiment AS text;
CREATE DOMAIN messaging.message_direction AS text;
CREATE DOMAIN messaging.message_sender AS text;
CREATE DOMAIN messaging.message_status AS text;
CREATE DOMAIN messaging.reply_state AS text;

ALTER TABLE messaging.contacts
  ALTER COLUMN external_id_kind TYPE messaging.external_id_kind;
ALTER TABLE messaging.conversations
  ALTER COLUMN status TYPE messaging.conversation_status,
  ALTER COLUMN owner TYPE messaging.conversation_owner,
  ALTER COLUMN stage TYPE messaging.conversation_stage,
  ALTER COLUMN intent_level TYPE messaging.intent_level,
  ALTER COLUMN sentiment TYPE messaging.sentiment;
ALTER TABLE messaging.messages
  ALTER COLUMN direction TYPE messaging.message_direction,
  ALTER COLUMN sender TYPE messaging.message_sender,
  ALTER COLUMN status TYPE messaging.message_status,
  ALTER COLUMN reply_state TYPE messaging.reply_state;

ALTER DOMAIN messaging.external_id_kind ADD CONSTRAINT external_id_kind_check
  CHECK (VALUE IN ('phone', 'business_user_id', 'webchat_session'));
ALTER DOMAIN messaging.conversation_status ADD CONSTRAINT conversation_status_check
  CHECK (VALUE IN ('open', 'pending', 'closed'));
ALTER DOMAIN messaging.conversation_owner ADD CONSTRAINT conversation_owner_check
  CHECK (VALUE IN ('bot', 'human'));
ALTER DOMAIN messaging.conversation_stage ADD CONSTRAINT conversation_stage_check
  CHECK (VALUE IN ('new', 'engaged', 'qualified', 'proposal', 'won', 'lost'));
ALTER DOMAIN messaging.intent_level ADD CONSTRAINT intent_level_check
  CHECK (VALUE IN ('low', 'medium', 'high'));
ALTER DOMAIN messaging.sentiment ADD CONSTRAINT sentiment_check
  CHECK (VALUE IN ('negative', 'neutral', 'positive'));
ALTER DOMAIN messaging.message_direction ADD CONSTRAINT message_direction_check
  CHECK (VALUE IN ('inbound', 'outbound'));
ALTER DOMAIN messaging.message_sender ADD CONSTRAINT message_sender_check
  CHECK (VALUE IN ('contact', 'bot', 'human', 'system'));
ALTER DOMAIN messaging.message_status ADD CONSTRAINT message_status_check
  CHECK (VALUE IN ('received', 'queued', 'sent', 'delivered', 'read', 'played', 'failed'));
ALTER DOMAIN messaging.reply_state ADD CONSTRAINT reply_state_check
  CHECK (VALUE IN ('none', 'pending', 'done'));

ALTER TABLE messaging.contacts DROP CONSTRAINT contacts_external_id_kind_check;
ALTER TABLE messaging.conversations
  DROP CONSTRAINT conversations_status_check,
  DROP CONSTRAINT conversations_owner_check,
  DROP CONSTRAINT conversations_stage_check,
  DROP CONSTRAINT conversations_intent_level_check,
  DROP CONSTRAINT conversations_sentiment_check;
ALTER TABLE messaging.messages
  DROP CONSTRAINT messages_direction_check,
  DROP CONSTRAINT messages_sender_check,
  DROP CONSTRAINT messages_status_check,
  DROP CONSTRAINT messages_reply_state_check;

DO $$
DECLARE
  r record;
  def text;
BEGIN
  FOR r IN SELECT * FROM (VALUES
      ('messaging.delivery_claim(int, int)',
       'k.external_id, k.external_id_kind', 'k.external_id, k.external_id_kind::text'),
      ('messaging.reply_claim(int, int, int)',
       'messaging.fmt_ts(u.created_at), cv.owner,', 'messaging.fmt_ts(u.created_at), cv.owner::text,'),
      ('messaging.reply_context(uuid[], uuid[], int)',
       'messaging.fmt_ts(m.created_at), cv.owner,', 'messaging.fmt_ts(m.created_at), cv.owner::text,'))
    AS f(fn, old, new)
  LOOP
    def := pg_get_functiondef(r.fn::regprocedure);
    IF array_length(string_to_array(def, r.old), 1) <> 2 THEN
      RAISE EXCEPTION 'messaging 025: % does not hold "%" exactly once', r.fn, r.old;
    END IF;
    EXECUTE replace(def, r.old, r.new);
  END LOOP;

  EXECUTE 'CREATE VIEW messaging.campaign_recipients_v WITH (security_invoker = true) AS '
          || current_setting('parley.m025_recipients_v');
  EXECUTE 'CREATE VIEW messaging.leads_v WITH (security_invoker = true) AS '
          || current_setting('parley.m025_leads_v');

  DROP TRIGGER webhooks_on_event ON messaging.outbox;
  EXECUTE format('CREATE TRIGGER webhooks_on_event AFTER INSERT ON messaging.outbox '
                 'FOR EACH ROW WHEN (NEW.type = ANY (%L::text[])) '
                 'EXECUTE FUNCTION messaging.webhooks_on_event()',
                 messaging.webhook_event_types());
END
$$;

CREATE TRIGGER followups_on_message AFTER INSERT ON messaging.messages
  FOR EACH ROW WHEN (NEW.direction = 'inbound' OR NEW.sender IN ('bot', 'human'))
  EXECUTE FUNCTION messaging.followups_on_message();

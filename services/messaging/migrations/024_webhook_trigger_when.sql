-- messaging 024: the outbound-webhook trigger is called only for the event
-- types an endpoint can subscribe to.
--
-- webhooks_on_event (004) ran for every outbox row and returned at once
-- for the types outside webhook_event_types(): 'message.sent', one of a
-- message's three events, is one of them. In pg_stat_statements at 500
-- msgs/s through the whole stack the trigger took ~18 us a call (a
-- PL/pgSQL call and its return). The same test as the function's first
-- line now sits in the trigger's WHEN clause, which the executor evaluates
-- without calling the function. The function keeps its own test.
DROP TRIGGER webhooks_on_event ON messaging.outbox;
CREATE TRIGGER webhooks_on_event AFTER INSERT ON messaging.outbox
  FOR EACH ROW WHEN (NEW.type = ANY (messaging.webhook_event_types()))
  EXECUTE FUNCTION messaging.webhooks_on_event();

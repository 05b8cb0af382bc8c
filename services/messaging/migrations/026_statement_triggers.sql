-- messaging 026: the follow-up trigger once a statement instead of once a
-- row.
--
-- followups_on_message (004) ran for every inbound, bot and human message:
-- two PL/pgSQL calls a message through the whole stack, each with its own
-- statements, even for a tenant with no rule. The batch functions insert a
-- round's messages with one statement, so a statement trigger over the
-- rows it inserted (a transition table) runs about once a round. At 500
-- msgs/s (bench_e2e, pg_stat_user_functions, thirty-fourth session): 8,632
-- calls for 4,316 messages, 246 ms, before; 4,502 calls for ~4,800
-- messages, 151 ms, after.
--
-- Same effects as the row trigger. What a row does can depend on the rows
-- before it in the same statement (a bot message starts a chain that a
-- later inbound one cancels), so the rows are still taken one at a time,
-- in the order they were inserted, by messaging.followup_on_message, the
-- row trigger's body. One question first decides whether any row can do
-- anything: a row changes something only when its conversation has a
-- pending follow-up or it is a bot message and its tenant has an active
-- rule (else every branch of the body finds nothing to update and nothing
-- to insert), and no row can make a pending follow-up without such a rule.
-- When neither holds for any row, nothing else runs.
--
-- The outbound-webhook trigger stays a row trigger. The outbox is written
-- by more statements than it holds events a round (about 3.4 a round), and
-- a statement trigger over them took 6,401 calls and 307 ms against the
-- row trigger's 8,632 calls and 227 ms (its WHEN clause, 024 and 025,
-- leaves out the types no endpoint can subscribe to without a call).

-- The row trigger's body, for one message.
CREATE FUNCTION messaging.followup_on_message(m messaging.messages) RETURNS void
LANGUAGE plpgsql AS
$$
DECLARE
  r record;
BEGIN
  IF m.direction = 'inbound' OR m.sender = 'human' THEN
    UPDATE messaging.followups SET status = 'canceled',
           reason = CASE WHEN m.direction = 'inbound' THEN 'replied' ELSE 'human' END,
           done_at = now()
     WHERE tenant_id = m.tenant_id AND conversation_id = m.conversation_id
       AND status = 'pending';
    RETURN;
  END IF;
  IF m.sender <> 'bot' THEN
    RETURN; -- system messages (follow-ups themselves) never restart a chain
  END IF;
  -- History written now (the legacy import) is not a live conversation.
  IF m.created_at < now() - interval '1 hour' THEN
    RETURN;
  END IF;
  SELECT id, delay_minutes INTO r FROM messaging.followup_rules
   WHERE tenant_id = m.tenant_id AND is_active
     AND (agent_id IS NULL OR agent_id = m.agent_id)
     AND (channel_id IS NULL OR channel_id = m.channel_id)
   ORDER BY (agent_id IS NOT NULL) DESC, (channel_id IS NOT NULL) DESC, id
   LIMIT 1;
  IF NOT FOUND THEN
    UPDATE messaging.followups SET status = 'canceled', reason = 'superseded', done_at = now()
     WHERE tenant_id = m.tenant_id AND conversation_id = m.conversation_id
       AND status = 'pending';
    RETURN;
  END IF;
  INSERT INTO messaging.followups (tenant_id, id, rule_id, conversation_id,
                                   anchor_message_id, attempt, due_at)
  VALUES (m.tenant_id, messaging.uuid7(), r.id, m.conversation_id, m.id, 1,
          m.created_at + make_interval(mins => r.delay_minutes))
  ON CONFLICT (tenant_id, conversation_id) WHERE status = 'pending'
  DO UPDATE SET rule_id = EXCLUDED.rule_id, anchor_message_id = EXCLUDED.anchor_message_id,
                attempt = 1, due_at = EXCLUDED.due_at, reason = '';
END
$$;

CREATE FUNCTION messaging.followups_on_messages() RETURNS trigger
LANGUAGE plpgsql AS
$$
DECLARE
  m messaging.messages;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM new_messages n
                   JOIN messaging.followups f
                     ON f.tenant_id = n.tenant_id AND f.conversation_id = n.conversation_id
                    AND f.status = 'pending')
     AND NOT EXISTS (SELECT 1 FROM new_messages n
                       JOIN messaging.followup_rules r
                         ON r.tenant_id = n.tenant_id AND r.is_active
                      WHERE n.sender = 'bot') THEN
    RETURN NULL;
  END IF;
  -- A transition table is read in the order its rows were inserted.
  FOR m IN SELECT * FROM new_messages LOOP
    PERFORM messaging.followup_on_message(m);
  END LOOP;
  RETURN NULL;
END
$$;

DROP TRIGGER followups_on_message ON messaging.messages;
DROP FUNCTION messaging.followups_on_message();

CREATE TRIGGER followups_on_messages AFTER INSERT ON messaging.messages
  REFERENCING NEW TABLE AS new_messages
  FOR EACH STATEMENT EXECUTE FUNCTION messaging.followups_on_messages();

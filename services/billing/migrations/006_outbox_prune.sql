-- Delivered outbox rows are deleted a week after delivery by the relay
-- (common/src/outbox.c, pl_outbox_prune), a chunk at a time. Rows are
-- appended in occurred_at order, so a BRIN index (one summary per 128
-- pages, never touched by the relay's updates: they do not change the
-- column) finds the old ones without reading the table, as
-- messaging.inbox_received does for the inbox (messaging 013). Before it
-- the relay ran one DELETE of every old row an hour, over the whole table.
CREATE INDEX outbox_occurred ON billing.outbox USING brin (occurred_at)
  WITH (autosummarize = on);

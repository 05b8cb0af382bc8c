-- The set-based queue statements planned at every call. PL/pgSQL keeps a
-- statement's generic plan for the session, built from the table sizes of
-- the moment it was made, until an ANALYZE of the table invalidates it. A
-- delivery worker's connection plans its claim while the tables are nearly
-- empty; when a 10,000-recipient campaign then fills them within a minute
-- (before autovacuum's first ANALYZE), that plan reaches conversations by
-- tenant only and scans them for every claimed row: a claim of 64
-- deliveries took up to 160 s (integration_messaging_engage, run with
-- PGH_OPTS="-c log_min_duration_statement=..."). A custom plan sees the
-- tables' current size and stays on the primary keys; planning a claim
-- costs well under a millisecond against a batch of up to 64 rows.
ALTER FUNCTION messaging.delivery_claim(int, int) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION messaging.reply_claim(int, int, int) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION messaging.campaign_send_batch(uuid, uuid, int) SET plan_cache_mode = force_custom_plan;

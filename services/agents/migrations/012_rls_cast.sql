-- The tenant policies without their regular expression. The setting was
-- matched against a uuid pattern before its cast (so that a malformed
-- value matched nothing instead of raising an error): ~5 us of
-- PostgreSQL's CPU per table per statement, twice on every page of a
-- list, more on every message. pl_db now sets only "*", a valid uuid or
-- "" (for anything else it was given), so a 36-character setting is a
-- uuid and the cast alone does. Same rows visible, same rows writable.
DO $$
DECLARE
  r record;
  q text;
BEGIN
  FOR r IN SELECT p.tablename,
                  CASE WHEN EXISTS (SELECT 1 FROM information_schema.columns c
                                     WHERE c.table_schema = p.schemaname
                                       AND c.table_name = p.tablename
                                       AND c.column_name = 'tenant_id')
                       THEN 'tenant_id' ELSE 'id' END AS col
             FROM pg_policies p
            WHERE p.schemaname = 'agents' AND p.policyname = 'tenant_isolation' LOOP
    q := format('(SELECT current_setting(''parley.tenant_id'', true) = ''*'') OR %I = '
                '(SELECT CASE WHEN length(x.s) = 36 THEN x.s::uuid END '
                'FROM (SELECT current_setting(''parley.tenant_id'', true)) AS x(s))', r.col);
    EXECUTE format('ALTER POLICY tenant_isolation ON agents.%I USING (%s) WITH CHECK (%s)',
                   r.tablename, q, q);
  END LOOP;
END
$$;

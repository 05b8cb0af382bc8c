-- Row-level security whose cost the planner can estimate. The policy of
-- 001 compared `tenant_id::text` with the setting: an expression of the
-- column, which the planner rates at 0.5 % of the rows whatever the data.
-- Stacked on the statement's own `tenant_id = $1` that made every tenant
-- look a hundred times smaller than it is, and ORDER BY ... LIMIT
-- statements chose "read them all, sort, keep 20" over the ordered index
-- (ListConversations took 10 ms at 1,000 conversations and grew with the
-- tenant). Now the setting is read once per statement (two InitPlans:
-- the '*' test and the tenant as a uuid, NULL when the setting is not a
-- uuid, so a malformed value still matches nothing instead of raising an
-- error), and each row compares its uuid column with a parameter: the
-- estimate is the column's own statistics, and no text is built per row.
-- Same rows visible, same rows writable.
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
            WHERE p.schemaname = 'analytics' AND p.policyname = 'tenant_isolation' LOOP
    q := format('(SELECT current_setting(''parley.tenant_id'', true) = ''*'') OR %I = '
                '(SELECT CASE WHEN x.s ~ ''^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-'
                '[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'' THEN x.s::uuid END '
                'FROM (SELECT current_setting(''parley.tenant_id'', true)) AS x(s))', r.col);
    EXECUTE format('ALTER POLICY tenant_isolation ON analytics.%I USING (%s) WITH CHECK (%s)',
                   r.tablename, q, q);
  END LOOP;
END
$$;

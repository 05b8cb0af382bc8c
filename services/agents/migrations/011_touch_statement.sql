-- agents 011: a base's content_version is moved once per statement that
-- writes its entries, not once per entry. The row triggers of 002 ran a
-- PL/pgSQL function and a SQL function (planned again at each call) for
-- every entry: 70 of the 94 ms an ImportKnowledge statement of 1,000
-- entries took (EXPLAIN ANALYZE, "Trigger knowledge_entries_touch"). The
-- statement triggers below see the statement's rows as transition tables
-- and bump each base they touch with one UPDATE, under the same rule as
-- knowledge_bump: at most once per transaction (a base whose row this
-- transaction already wrote, e.g. created, is left alone). An update moves
-- the version only when a column the retrieval index reads changed, as
-- 002's WHEN clause said; moving an entry to another base moves both.
CREATE FUNCTION agents.knowledge_touch_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE agents.knowledge_bases b SET content_version = b.content_version + 1
      FROM (SELECT DISTINCT n.tenant_id, n.knowledge_base_id FROM new_rows n) k
     WHERE b.tenant_id = k.tenant_id AND b.id = k.knowledge_base_id
       AND b.xmin::text <> (pg_current_xact_id()::text::bigint % 4294967296)::text;
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE agents.knowledge_bases b SET content_version = b.content_version + 1
      FROM (SELECT DISTINCT o.tenant_id, o.knowledge_base_id FROM old_rows o) k
     WHERE b.tenant_id = k.tenant_id AND b.id = k.knowledge_base_id
       AND b.xmin::text <> (pg_current_xact_id()::text::bigint % 4294967296)::text;
  ELSE
    UPDATE agents.knowledge_bases b SET content_version = b.content_version + 1
      FROM (SELECT o.tenant_id, o.knowledge_base_id
              FROM old_rows o JOIN new_rows n
                ON n.tenant_id = o.tenant_id AND n.id = o.id
             WHERE (o.question, o.answer, o.keywords, o.intent, o.is_active,
                    o.question_norm, o.keywords_norm, o.answer_norm,
                    o.knowledge_base_id)
                   IS DISTINCT FROM
                   (n.question, n.answer, n.keywords, n.intent, n.is_active,
                    n.question_norm, n.keywords_norm, n.answer_norm,
                    n.knowledge_base_id)
            UNION
            SELECT n.tenant_id, n.knowledge_base_id
              FROM old_rows o JOIN new_rows n
                ON n.tenant_id = o.tenant_id AND n.id = o.id
             WHERE o.knowledge_base_id IS DISTINCT FROM n.knowledge_base_id) k
     WHERE b.tenant_id = k.tenant_id AND b.id = k.knowledge_base_id
       AND b.xmin::text <> (pg_current_xact_id()::text::bigint % 4294967296)::text;
  END IF;
  RETURN NULL;
END $$;

DROP TRIGGER knowledge_entries_touch ON agents.knowledge_entries;
DROP TRIGGER knowledge_entries_touch_update ON agents.knowledge_entries;
DROP FUNCTION agents.knowledge_touch();

CREATE TRIGGER knowledge_entries_touch_insert
  AFTER INSERT ON agents.knowledge_entries
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agents.knowledge_touch_rows();
CREATE TRIGGER knowledge_entries_touch_update
  AFTER UPDATE ON agents.knowledge_entries
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agents.knowledge_touch_rows();
CREATE TRIGGER knowledge_entries_touch_delete
  AFTER DELETE ON agents.knowledge_entries
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agents.knowledge_touch_rows();

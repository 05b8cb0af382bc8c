-- agents 010: SearchKnowledge ranks with the retrieval index, as Reply does
-- (handlers.c, search_index), so no query reads the SQL ranking's GIN
-- tsvector, GIN trigram and GiST trigram indexes any more, and every
-- knowledge entry written paid for all three (the trigram ones most).
-- The generated columns they indexed (`search_tsv`, `match_text`) stay: the
-- additive policy keeps released columns, and a replica of the previous
-- release still ranks with them during a rolling deploy (without these
-- indexes, by reading the base's entries).
DROP INDEX agents.knowledge_entries_tsv;
DROP INDEX agents.knowledge_entries_trgm;
DROP INDEX agents.knowledge_entries_knn;

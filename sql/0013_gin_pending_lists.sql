-- The GIN indexes a sync writes take their new entries in bigger pending lists.
--
-- A batch write now puts each new message's search document into message_search in
-- the statement that writes the row (mailbridge.store.messages; a changed row is still
-- queued in search_pending for the indexer), so an initial sync is searchable when its
-- last batch commits.  A GIN index with fastupdate (the default) collects new entries
-- in a pending list and merges them into its tree when the list passes
-- gin_pending_list_limit (4 MB by default), inside the statement that crossed it.  A
-- message adds some 24 search terms and a few References ids: with 4 MB lists an
-- initial sync merged every few batches, at more cost than the documents themselves
-- (50,000 documents in 2,000-row statements: 1.3 s with 4 MB lists, 0.6 s with 32 MB,
-- the final merge included).  Search reads the pending list too, so it stays exact; a
-- full 32 MB list costs a search a few milliseconds until it is merged (by the insert
-- that crosses the limit, or autovacuum).
ALTER INDEX message_search_document SET (gin_pending_list_limit = 32768);
ALTER INDEX messages_references SET (gin_pending_list_limit = 32768);

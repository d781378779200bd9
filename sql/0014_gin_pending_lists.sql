-- The GIN indexes a sync writes take their new entries in bigger pending lists.
--
-- A batch write now puts each new message's search document into message_search in
-- the statement that writes the row (mailbridge.store.messages; a changed row is still
-- queued in search_pending for the indexer), so an initial sync is searchable when its
-- last batch commits.  A GIN index with fastupdate (the default) collects new entries
-- in a pending list and merges them into its tree when the list passes
-- gin_pending_list_limit (4 MB by default), inside the statement that crossed it.  A
-- message adds some 24 search terms and a few References ids: with 4 MB lists an
-- initial sync merged every few batches.  The GIN work of 50,000 documents written in
-- 2,000-row statements: 0.85 s with 4 MB lists, 0.63 s with 32 MB lists, the final
-- merge of the list included (most of which happens after the sync: by the insert
-- that crosses the limit, or autovacuum); of 200,000: 2.5 s and 2.1 s.  Search reads
-- the pending list too, so it stays exact; a full 32 MB list costs a search a few
-- milliseconds until it is merged.
ALTER INDEX message_search_document SET (gin_pending_list_limit = 32768);
ALTER INDEX messages_references SET (gin_pending_list_limit = 32768);

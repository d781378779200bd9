-- Full-text search indexed beside the sync, not inside it.
--
-- 0002's GIN expression index computed a tsvector and inserted ~18 GIN entries for every
-- message row written, inside the sync's batch statement: it cost more Postgres time than
-- the rest of the insert together (50,000 messages: 2.5 s end to end with it, 1.7 s
-- without).  Now a batch only queues its message ids in search_pending (one small
-- btree insert per row); a background indexer moves them, a few thousand per
-- statement, into message_search, and the queue row's delete commits with the document's
-- insert.  Search stays exact meanwhile: it reads message_search for indexed rows and
-- evaluates the same document function on the (few) rows still queued.

CREATE TABLE message_search (
    message_id bigint   PRIMARY KEY,   -- messages.id; see the trigger below
    account_id bigint   NOT NULL,
    document   tsvector NOT NULL
);
CREATE INDEX message_search_document ON message_search USING gin (document);

-- A deleted message takes its document with it.  A statement trigger instead of a
-- foreign key: the key's per-row check on insert locks the messages row, which cost the
-- indexer more than the document itself; deletes come in statements anyway.
CREATE FUNCTION mailbridge_message_search_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM message_search WHERE message_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_forget_search AFTER DELETE ON messages
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION mailbridge_message_search_forget();

-- Messages whose search document is missing or stale.  No foreign key: the indexer drops
-- the ids of rows deleted meanwhile.
CREATE TABLE search_pending (
    message_id bigint PRIMARY KEY
);

-- every existing row gets indexed by the background indexer
INSERT INTO search_pending (message_id) SELECT id FROM messages;

DROP INDEX messages_search;

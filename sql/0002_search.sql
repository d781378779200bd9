-- Full-text search, API pagination and thread lookups (issue 5).
--
-- Search covers the subject, the sender's name and address, and the To/Cc addresses.
-- The 'simple' configuration (no stemming, no stop words) suits names and addresses in
-- any language.  Addresses are indexed whole ('bob@example.com') and split at '@' and
-- '.' ('bob', 'example', 'com'), so either form finds them.  An expression index keeps
-- the table's columns as they are (no rewrite of a large messages table); queries use
-- the same function call so the planner can use the index.

CREATE FUNCTION mailbridge_message_search(subject text, from_name text, from_email text,
                                          to_emails text[], cc_emails text[])
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- one parse of one string: this runs for every row written, so it is kept cheap
    SELECT to_tsvector('simple'::regconfig, concat_ws(' ',
        subject, from_name, from_email, translate(from_email, '@.+_-', '     '),
        array_to_string(to_emails, ' '), array_to_string(cc_emails, ' '),
        translate(array_to_string(to_emails || cc_emails, ' '), '@.+_-', '     ')))
$$;

CREATE INDEX messages_search ON messages
    USING gin (mailbridge_message_search(subject, from_name, from_email, to_emails, cc_emails));

-- Keyset pagination newest first: ORDER BY internal_date DESC NULLS LAST, id DESC.  These
-- replace the baseline's NULLS FIRST "newest" indexes (every index costs each insert).
CREATE INDEX messages_account_page ON messages (account_id, internal_date DESC NULLS LAST, id DESC);
CREATE INDEX messages_folder_page  ON messages (folder_id, internal_date DESC NULLS LAST, id DESC);
DROP INDEX messages_account_newest;
DROP INDEX messages_folder_newest;

-- Thread lookups follow In-Reply-To and References within an account.
CREATE INDEX messages_in_reply_to ON messages (account_id, in_reply_to) WHERE in_reply_to IS NOT NULL;
CREATE INDEX messages_references  ON messages USING gin (references_header);

-- Search finds an address by its local part and by its domain, each as written.
--
-- The document held each address whole ('bob.jones@corp.example.org') and split into
-- words ('bob', 'jones', 'corp', ...), but a query for 'bob.jones' or 'corp.example.org'
-- is one term of its own, which matched neither; nor did 'mary-ann', whose query is the
-- phrase 'mary-ann' 'mary' 'ann'.  Now the document also holds the text either side of
-- each '@'.  The documents are rebuilt by the indexer in the background (everything is
-- queued again below); search stays exact meanwhile, per sql/0003.

CREATE OR REPLACE FUNCTION mailbridge_message_search(subject text, from_name text, from_email text,
                                                     to_emails text[], cc_emails text[])
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple'::regconfig, concat_ws(' ',
        subject, from_name,
        addresses,                                   -- whole: 'bob.jones@corp.example.org'
        replace(addresses, '@', ' '),                -- each side: 'bob.jones', 'corp.example.org'
        translate(addresses, '@.+_-', '     ')))     -- every word: 'bob', 'jones', 'corp', ...
    FROM (SELECT concat_ws(' ', from_email, array_to_string(to_emails, ' '),
                           array_to_string(cc_emails, ' ')) AS addresses) a
$$;

INSERT INTO search_pending (message_id) SELECT id FROM messages ON CONFLICT DO NOTHING;

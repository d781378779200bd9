-- A message's search document stays under tsvector's 1 MB limit.
--
-- A message with thousands of long recipients (any sender can write one) made
-- to_tsvector fail with "string is too long for tsvector", and with it the indexer's
-- whole batch, every time: the queue stopped there.  The document now reads at most the
-- first 200,000 characters of its text (each address is held three ways, so about a
-- third of that of addresses); what lies beyond is not searchable.  Every document
-- whose text was shorter is unchanged, so nothing is queued again.

CREATE OR REPLACE FUNCTION mailbridge_message_search(subject text, from_name text, from_email text,
                                                     to_emails text[], cc_emails text[])
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple'::regconfig, left(concat_ws(' ',
        subject, from_name,
        addresses,                                   -- whole: 'bob.jones@corp.example.org'
        replace(addresses, '@', ' '),                -- each side: 'bob.jones', 'corp.example.org'
        translate(addresses, '@.+_-', '     ')),     -- every word: 'bob', 'jones', 'corp', ...
        200000))
    FROM (SELECT concat_ws(' ', from_email, array_to_string(to_emails, ' '),
                           array_to_string(cc_emails, ' ')) AS addresses) a
$$;

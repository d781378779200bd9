-- Moves as moves (issue 13): every message gets an `email_id` (the server's own, else
-- derived: mailbridge.sync.identity, the same md5 as here), and a removal waits a short
-- while for its arrival in another folder (or an arrival of a copy for its removal) so
-- the pair is recorded as one `message_moved` event.

-- the rows stored before: the derived id, computed exactly as mailbridge.sync.identity does
UPDATE messages
SET email_id = 'mb-' || left(md5(message_id || E'\n' || floor(extract(epoch FROM internal_date))::bigint::text
                                 || E'\n' || size_bytes::text), 16)
WHERE email_id IS NULL AND message_id IS NOT NULL AND internal_date IS NOT NULL AND size_bytes IS NOT NULL;

-- One side of a possible move, waiting for the other (see mailbridge.store.moves):
--   removed: a row with an email_id left its folder; its `message_removed` event is
--            held here (payload) until an arrival of the same email_id in another folder
--            of the account turns both into one `message_moved`, or the window passes;
--   added:   a row arrived whose email_id another folder of the account still holds (a
--            copy, or the first half of a move); its `message_added` is held likewise.
-- Each is written in the statement that deletes or inserts the row, and leaves in the
-- statement that writes its event: a crash loses no event.
CREATE TABLE move_pending (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email_id    text        NOT NULL,
    side        text        NOT NULL CHECK (side IN ('removed', 'added')),
    folder_id   bigint      NOT NULL,           -- no foreign key: the event outlives its folder
    uid         bigint      NOT NULL,
    message     bigint      NOT NULL,           -- messages.id of the row removed or added
    payload     jsonb       NOT NULL,           -- the held event's payload
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX move_pending_email ON move_pending (account_id, email_id);
CREATE INDEX move_pending_age ON move_pending (account_id, created_at);

-- Gmail's label folders are views over [Gmail]/All Mail, not mirrored (each message is
-- stored once, from All Mail, with its labels): such a folder row says what it shows,
-- a label (`\Inbox`, `\Sent`, `\Draft`, `\Important`, a user label such as `Work`) or,
-- for [Gmail]/Starred, the flag `\Flagged`.  NULL for every mirrored folder.
ALTER TABLE folders ADD COLUMN IF NOT EXISTS gmail_view text;

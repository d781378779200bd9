-- Gmail labels (X-GM-LABELS; NULL when the server has no labels) and the server's
-- stable message id (RFC 8474 EMAILID, or Gmail's X-GM-MSGID).
ALTER TABLE messages ADD COLUMN IF NOT EXISTS labels text[];
ALTER TABLE messages ADD COLUMN IF NOT EXISTS email_id text;
CREATE INDEX IF NOT EXISTS messages_account_email_id ON messages (account_id, email_id);

-- Rows whose FETCH response could not be read are fetched again, so they converge.
--
-- A message whose metadata response was malformed (a server glitch, a broken proxy) is
-- stored as a placeholder: its UID, no size, no dates, the defect.  Before, it stayed so
-- for good.  Now a folder visit fetches such rows again, at most once per interval
-- (folders.last_repair_at), and overwrites them once the server's answer parses.  Every
-- FETCH asks for RFC822.SIZE, so a NULL size marks exactly these rows; the partial index
-- finds them without reading the folder's other rows, and costs nothing while empty.

ALTER TABLE folders ADD COLUMN last_repair_at timestamptz;

CREATE INDEX messages_unreadable ON messages (folder_id, uid) WHERE size_bytes IS NULL;

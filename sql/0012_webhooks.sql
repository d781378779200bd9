-- Signed webhooks (issue 13): the `events` table is their outbox.
--
-- Each event records the transaction that wrote it (`xid`).  Identity values are handed
-- out before commit, so a smaller id can become visible after a larger one; a delivery
-- cursor on the id alone could step over it.  Delivery instead walks events in
-- (xid, id) order and only below a horizon no running transaction of this database can
-- still write under (see mailbridge.store.webhooks.horizon): nothing is ever skipped.
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_xid ON events (xid, id);

CREATE TABLE webhooks (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url               text        NOT NULL,
    secret_encrypted  bytea       NOT NULL,          -- Fernet, like passwords (keys rotate re-encrypts it)
    event_types       text[],                        -- NULL: every type
    enabled           boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- delivery state, committed with each step of progress
    cursor_xid        xid8        NOT NULL DEFAULT pg_snapshot_xmin(pg_current_snapshot()),
    cursor_id         bigint      NOT NULL DEFAULT 0, -- events after (cursor_xid, cursor_id) are due
    last_event_id     bigint,                        -- the last event delivered (answered 2xx)
    delivered         bigint      NOT NULL DEFAULT 0,
    attempts          integer     NOT NULL DEFAULT 0, -- failed attempts at the event due now
    failures          bigint      NOT NULL DEFAULT 0, -- failed attempts in all
    failing_since     timestamptz,                   -- first failure of the event due now
    next_attempt_at   timestamptz,
    last_status       integer,                       -- HTTP status of the last attempt (NULL: no answer)
    last_error        text,
    last_attempt_at   timestamptz,
    last_delivered_at timestamptz,
    parked            boolean     NOT NULL DEFAULT false, -- retries gave up; `webhooks resume` restarts
    parked_at         timestamptz,
    owner             text                           -- host:pid of the serve process delivering it
);

-- Wake the deliverers at once: on a new event (only when some webhook is enabled, so
-- the sync pays nothing otherwise; one notification per transaction, Postgres folds
-- duplicates) and when a webhook is added, changed or removed.
CREATE FUNCTION mailbridge_webhooks_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhooks WHERE enabled AND NOT parked) THEN
        PERFORM pg_notify('mailbridge_webhooks', 'events');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER events_webhooks_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION mailbridge_webhooks_events_notify();

CREATE FUNCTION mailbridge_webhooks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.url, NEW.event_types, NEW.enabled, NEW.parked)
                            IS NOT DISTINCT FROM (OLD.url, OLD.event_types, OLD.enabled, OLD.parked) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('mailbridge_webhooks', 'webhooks');
    RETURN NULL;
END $$;

CREATE TRIGGER webhooks_notify AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION mailbridge_webhooks_notify();

-- mailbridge baseline schema.  Names in DESIGN.md's contract are stable: extend, never rename.

CREATE TABLE accounts (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email                text        NOT NULL,
    imap_host            text        NOT NULL,
    imap_port            integer     NOT NULL CHECK (imap_port BETWEEN 1 AND 65535),
    imap_tls             text        NOT NULL DEFAULT 'tls' CHECK (imap_tls IN ('tls', 'starttls', 'none')),
    imap_username        text        NOT NULL,
    password_encrypted   bytea       NOT NULL,          -- Fernet token; the password is never stored in clear
    verify_certificate   boolean     NOT NULL DEFAULT true,
    enabled              boolean     NOT NULL DEFAULT true,
    health               text        NOT NULL DEFAULT 'starting',
    health_reason        text,
    health_changed_at    timestamptz NOT NULL DEFAULT now(),
    owner                text,                           -- host:pid of the process whose actor holds the lock
    heartbeat_at         timestamptz,
    excluded_folders     text[],                         -- NULL: the default exclusions (Trash, Junk/Spam)
    credentials_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX accounts_email_host_user ON accounts (lower(email), lower(imap_host), imap_username);

CREATE TABLE folders (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id            bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name                  text        NOT NULL,         -- full path, UTF-8, server's delimiter
    raw_name              text        NOT NULL,         -- as on the wire (modified UTF-7), for commands
    delimiter             text,
    special_use           text,
    uidvalidity           bigint,
    uidnext               bigint,
    highestmodseq         bigint,
    excluded              boolean     NOT NULL DEFAULT false,
    is_priority           boolean     NOT NULL DEFAULT false,
    initial_sync_complete boolean     NOT NULL DEFAULT false,
    last_synced_at        timestamptz,
    -- sync cursors (each moved in the same transaction as the rows it covers)
    initial_top_uid       bigint,      -- UIDs above this are the incremental sync's
    initial_low_uid       bigint,      -- every server UID in [initial_low_uid, initial_top_uid] is mirrored
    synced_high_uid       bigint,      -- every server UID in (initial_top_uid, synced_high_uid] is mirrored
    message_count         integer     NOT NULL DEFAULT 0,
    server_message_count  integer,
    last_flag_scan_at     timestamptz,
    last_reconcile_at     timestamptz,
    next_reconcile_at     timestamptz,
    uidvalidity_resets    timestamptz[] NOT NULL DEFAULT '{}',
    parked                boolean     NOT NULL DEFAULT false,
    parked_reason         text,
    exists_on_server      boolean     NOT NULL DEFAULT true,
    discovered_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);

CREATE TABLE messages (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id         bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    folder_id          bigint      NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    uid                bigint      NOT NULL,
    message_id         text,                            -- without angle brackets; NULL when absent
    subject            text,
    from_name          text,
    from_email         text,                            -- lowercased
    to_emails          text[]      NOT NULL DEFAULT '{}',
    cc_emails          text[]      NOT NULL DEFAULT '{}',
    sent_at            timestamptz,
    internal_date      timestamptz,
    size_bytes         bigint,
    flags              text[]      NOT NULL DEFAULT '{}',  -- as the server names them, without \Recent
    in_reply_to        text,
    references_header  text[]      NOT NULL DEFAULT '{}',
    provider_thread_id text,
    modseq             bigint,
    defects            text[],
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (folder_id, uid)
);
CREATE INDEX messages_folder_newest  ON messages (folder_id, internal_date DESC, id DESC);
CREATE INDEX messages_account_newest ON messages (account_id, internal_date DESC, id DESC);
CREATE INDEX messages_message_id     ON messages (message_id) WHERE message_id IS NOT NULL;

-- Append-only change log, written in the same transaction as the change it records.
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint,
    folder_id   bigint,
    kind        text        NOT NULL,   -- message_added, message_changed, message_removed, folder_reset, account_health, ...
    payload     jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_account ON events (account_id, id);

-- Tell running processes at once when an account is added, changed or removed.
-- Bookkeeping columns (health, owner, heartbeat) and key rotation do not notify; a new
-- password bumps credentials_changed_at, which does.
CREATE FUNCTION mailbridge_accounts_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND
       (NEW.email, NEW.imap_host, NEW.imap_port, NEW.imap_tls, NEW.imap_username,
        NEW.verify_certificate, NEW.enabled, NEW.excluded_folders,
        NEW.credentials_changed_at)
       IS NOT DISTINCT FROM
       (OLD.email, OLD.imap_host, OLD.imap_port, OLD.imap_tls, OLD.imap_username,
        OLD.verify_certificate, OLD.enabled, OLD.excluded_folders,
        OLD.credentials_changed_at) THEN
        RETURN NEW;
    END IF;
    PERFORM pg_notify('mailbridge_accounts',
                      json_build_object('op', lower(TG_OP), 'id', COALESCE(NEW.id, OLD.id))::text);
    RETURN COALESCE(NEW, OLD);
END $$;

CREATE TRIGGER accounts_notify AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION mailbridge_accounts_notify();

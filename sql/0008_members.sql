-- serve processes announce themselves, so they can split the accounts between them.
--
-- Each `serve` process has one row while it runs: it inserts it at start, refreshes
-- heartbeat_at every few seconds, and deletes it on a clean stop.  A process also holds
-- a session advisory lock on (0x6D63, id) on one of its lock connections, so a process
-- that dies (kill -9) stops counting at once, when Postgres closes its sessions; the
-- heartbeat covers the case Postgres cannot see (a network cut), after
-- MAILBRIDGE_MEMBER_TIMEOUT seconds.  Every live process computes the same split of the
-- accounts over the live members (rendezvous hashing); the account advisory lock stays
-- the guarantee that no account is synced twice.

CREATE TABLE members (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,                       -- host:pid, as accounts.owner
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- OAuth2 sign-in (issue 12): registered OAuth2 clients, and per account the kind of
-- credential with the encrypted refresh and access tokens (Fernet, like passwords).
CREATE TABLE oauth2_clients (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    token_url text NOT NULL,
    authorize_url text,
    client_id text NOT NULL,
    client_secret_encrypted bytea,
    scopes text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE accounts
    ADD COLUMN auth_kind text NOT NULL DEFAULT 'password'
        CONSTRAINT accounts_auth_kind_check CHECK (auth_kind IN ('password', 'oauth2')),
    ADD COLUMN oauth2_client bigint REFERENCES oauth2_clients (id) ON DELETE RESTRICT,
    ADD COLUMN refresh_token_encrypted bytea,
    ADD COLUMN access_token_encrypted bytea,
    ADD COLUMN access_token_expires_at timestamptz,
    ADD CONSTRAINT accounts_oauth2_complete CHECK (
        auth_kind = 'password' OR (oauth2_client IS NOT NULL AND refresh_token_encrypted IS NOT NULL));

-- Principals and bearer tokens (API.md "Security", DESIGN.md section 13).
-- Tokens are never stored: only the SHA-256 of the whole token string. A token's id (the part
-- before the dot) is public and names it in listings and revocations.

CREATE TABLE auth_users (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.@-]{1,128}$'),
    roles       text[] NOT NULL DEFAULT '{}'
                CHECK (roles <@ ARRAY['admin', 'ops']::text[]),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth_tokens (
    id          text PRIMARY KEY,
    user_name   text NOT NULL REFERENCES auth_users (name) ON DELETE CASCADE,
    hash        bytea NOT NULL UNIQUE CHECK (length(hash) = 32),
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE INDEX auth_tokens_user ON auth_tokens (user_name);

-- Every change to principals or tokens wakes the caches of the API processes.
CREATE FUNCTION auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kafkastore_auth', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER auth_users_changed AFTER INSERT OR UPDATE OR DELETE ON auth_users
    FOR EACH STATEMENT EXECUTE FUNCTION auth_changed();
CREATE TRIGGER auth_tokens_changed AFTER INSERT OR UPDATE OR DELETE ON auth_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION auth_changed();

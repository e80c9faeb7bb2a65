-- Users (global identities) and login sessions.
--
-- How each table is protected (row-level security ENABLEd and FORCEd on both):
--
-- * users is global (one person, many tenants). The runtime role auth_app sees
--   only the row of the transaction's user (`id = app.user_id`: WhoAmI,
--   ChangePassword). Login, bootstrap and CreateUser must find users by email
--   before anyone is authenticated: they run as auth_platform (a login role of
--   its own with its own pool: a platform transaction), whose own policy spans
--   every row.
-- * sessions (one per login: the refresh-token family) are protected by a policy
--   on app.user_id: a user's transaction sees only that user's sessions. Login,
--   Refresh (the user is known only from the refresh token) and RevokeSessions
--   (internal, across users) run as auth_platform.
-- * refresh_tokens keeps the hash of every refresh token a session ever had, so a
--   rotated token presented again (reuse) is recognised and revokes its session.
--   Only auth_platform reads it.
CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    platform_role text NOT NULL CONSTRAINT users_platform_role CHECK (platform_role IN ('SUPER_ADMIN', 'USER')),
    is_active boolean NOT NULL DEFAULT true,
    password_hash text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
-- Emails are unique whatever their case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id),
    tenant_id uuid NOT NULL,
    refresh_hash bytea NOT NULL,
    refresh_expires_at timestamptz NOT NULL,
    access_expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoke_reason text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_user ON sessions (user_id, tenant_id);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    hash bytea PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id),
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;

CREATE POLICY own_user ON users TO auth_app
    USING (id = (SELECT nullif(current_setting('app.user_id', true), '')::uuid))
    WITH CHECK (id = (SELECT nullif(current_setting('app.user_id', true), '')::uuid));
CREATE POLICY platform ON users TO auth_platform USING (true) WITH CHECK (true);
GRANT SELECT, UPDATE (password_hash, display_name, update_time) ON users TO auth_app;
GRANT SELECT, INSERT, UPDATE ON users TO auth_platform;

CREATE POLICY own_sessions ON sessions TO auth_app
    USING (user_id = (SELECT nullif(current_setting('app.user_id', true), '')::uuid))
    WITH CHECK (user_id = (SELECT nullif(current_setting('app.user_id', true), '')::uuid));
CREATE POLICY platform ON sessions TO auth_platform USING (true) WITH CHECK (true);
GRANT SELECT, UPDATE (revoked_at, revoke_reason, update_time) ON sessions TO auth_app;
GRANT SELECT, INSERT, UPDATE ON sessions TO auth_platform;

CREATE POLICY platform ON refresh_tokens TO auth_platform USING (true) WITH CHECK (true);
GRANT SELECT, INSERT ON refresh_tokens TO auth_platform;

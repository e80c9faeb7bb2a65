-- Break-glass sessions (`bulkhead token`): a token minted with Auth's key
-- outside any login still has a session, stored here, so it can be revoked
-- (`bulkhead token --revoke`) and Auth's revocation follower streams it to
-- every guard. Its user need not exist in Auth, and its tenant is recorded in
-- the audit trail, not here: only auth_platform reads and writes it.
CREATE TABLE break_glass_sessions (
    id uuid PRIMARY KEY,
    access_expires_at timestamptz NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    revoke_reason text
);
CREATE INDEX break_glass_sessions_revoked ON break_glass_sessions (revoked_at)
    WHERE revoked_at IS NOT NULL;
ALTER TABLE break_glass_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE break_glass_sessions FORCE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, DELETE ON break_glass_sessions TO auth_platform;
GRANT UPDATE (revoked_at, revoke_reason) ON break_glass_sessions TO auth_platform;
CREATE POLICY platform_read ON break_glass_sessions FOR SELECT TO auth_platform USING (true);
CREATE POLICY platform_mint ON break_glass_sessions FOR INSERT TO auth_platform WITH CHECK (true);
CREATE POLICY platform_revoke ON break_glass_sessions FOR UPDATE TO auth_platform
    USING (true) WITH CHECK (true);
-- The periodic purge deletes a session a day after its token expired, never
-- one still usable.
CREATE POLICY platform_purge ON break_glass_sessions FOR DELETE TO auth_platform
    USING (access_expires_at < now() - interval '24 hours');

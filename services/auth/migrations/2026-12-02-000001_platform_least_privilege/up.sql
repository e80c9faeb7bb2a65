-- The platform role gets exactly what its operations use, command by command
-- and column by column (a review found `FOR ALL USING (true)` with table-wide
-- UPDATE: auth_platform could make any user a SUPER_ADMIN or move a session to
-- another tenant).
--   users: find by email, create, change a password; never a role or an email.
--   sessions: start, rotate (refresh hash, access expiry), revoke.
--   refresh_tokens: remember and look up rotated hashes.
DROP POLICY platform ON users;
CREATE POLICY platform_read ON users FOR SELECT TO auth_platform USING (true);
CREATE POLICY platform_create ON users FOR INSERT TO auth_platform WITH CHECK (true);
CREATE POLICY platform_password ON users FOR UPDATE TO auth_platform USING (true) WITH CHECK (true);
REVOKE UPDATE ON users FROM auth_platform;
GRANT UPDATE (password_hash, update_time) ON users TO auth_platform;

DROP POLICY platform ON sessions;
CREATE POLICY platform_read ON sessions FOR SELECT TO auth_platform USING (true);
CREATE POLICY platform_start ON sessions FOR INSERT TO auth_platform WITH CHECK (revoked_at IS NULL);
CREATE POLICY platform_rotate_revoke ON sessions FOR UPDATE TO auth_platform USING (true) WITH CHECK (true);
REVOKE UPDATE ON sessions FROM auth_platform;
GRANT UPDATE (refresh_hash, access_expires_at, revoked_at, revoke_reason, update_time) ON sessions TO auth_platform;

DROP POLICY platform ON refresh_tokens;
CREATE POLICY platform_read ON refresh_tokens FOR SELECT TO auth_platform USING (true);
CREATE POLICY platform_remember ON refresh_tokens FOR INSERT TO auth_platform WITH CHECK (true);

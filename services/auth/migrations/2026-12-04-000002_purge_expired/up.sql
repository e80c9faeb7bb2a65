-- Housekeeping: sessions whose refresh token expired a day ago or more, and
-- their refresh-token hashes, are deleted by the platform role's periodic
-- purge. Only those: the policies name the condition, so the role can delete
-- nothing still usable (a revocation matters until the access token's expiry,
-- which is long before the refresh token's).
CREATE POLICY platform_purge ON sessions FOR DELETE TO auth_platform
    USING (refresh_expires_at < now() - interval '24 hours');
GRANT DELETE ON sessions TO auth_platform;
CREATE POLICY platform_purge ON refresh_tokens FOR DELETE TO auth_platform
    USING (EXISTS (SELECT 1 FROM sessions s
                    WHERE s.id = refresh_tokens.session_id
                      AND s.refresh_expires_at < now() - interval '24 hours'));
GRANT DELETE ON refresh_tokens TO auth_platform;
CREATE INDEX sessions_refresh_expiry ON sessions (refresh_expires_at);

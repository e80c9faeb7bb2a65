DROP INDEX sessions_refresh_expiry;
REVOKE DELETE ON refresh_tokens FROM auth_platform;
DROP POLICY platform_purge ON refresh_tokens;
REVOKE DELETE ON sessions FROM auth_platform;
DROP POLICY platform_purge ON sessions;

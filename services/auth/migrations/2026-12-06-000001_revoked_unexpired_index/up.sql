-- Revoked sessions whose access tokens are still valid: what guards must
-- refuse. Every Auth replica reads them to follow the others' revocations
-- (and at start-up, and for each WatchRevocations subscriber): without this
-- index the read walks every revoked session kept (about a month's).
CREATE INDEX sessions_revoked_unexpired ON sessions (access_expires_at)
    WHERE revoked_at IS NOT NULL;

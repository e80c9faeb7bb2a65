-- A session started by SwitchTenant names the one it came from: ending a
-- session (logout, a reused refresh token) ends every session started from
-- it, and from those, so a stolen access token cannot switch its way to a
-- refresh token that outlives the session it was stolen from.
ALTER TABLE sessions ADD COLUMN switched_from uuid;
CREATE INDEX sessions_switched_from ON sessions (switched_from) WHERE switched_from IS NOT NULL;

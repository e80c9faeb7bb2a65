-- Password guessing, counted in the database so every Auth replica sees the
-- same numbers, each attempt counted atomically before its password is
-- checked (NIST SP 800-63B §5.2.2, OWASP's authentication cheat sheet):
--   * per account and client network: 5 free failures, then exponential
--     waits — only that network waits, the owner elsewhere logs in;
--   * per account across networks, per hour: past the cap, only networks the
--     account logged in from before are let in;
--   * per client network across accounts, per hour.
-- Keys are SHA-256 digests: no email or address is stored in clear.
CREATE TABLE login_attempts (
    key bytea PRIMARY KEY,
    failures integer NOT NULL,
    window_start timestamptz NOT NULL,
    last_failure timestamptz NOT NULL
);
CREATE INDEX login_attempts_window ON login_attempts (window_start);

-- Networks each account logged in from (digest of email and network).
CREATE TABLE login_known_networks (
    key bytea PRIMARY KEY,
    last_success timestamptz NOT NULL
);
CREATE INDEX login_known_networks_age ON login_known_networks (last_success);

GRANT SELECT, INSERT, UPDATE, DELETE ON login_attempts, login_known_networks TO auth_platform;

-- Retention: only the retention job's own login role, audit_retention
-- (`bulkhead audit prune`), deletes events, and only a prefix of a chain that
-- a signed checkpoint recorded in `prunes` covers, so what remains stays
-- verifiable from that checkpoint on. The exception hangs on the role running
-- the statement (current_user), which audit_app and audit_platform cannot
-- become: they are members of no role. Nothing a session can SET opens it.

-- Per-tenant retention periods (days); tenants without a row get the job's
-- default. The nil tenant is the platform chain.
CREATE TABLE retention_periods (
    tenant_id uuid PRIMARY KEY,
    retain_days integer NOT NULL CONSTRAINT retention_at_least_a_day CHECK (retain_days >= 1),
    update_time timestamptz NOT NULL DEFAULT now()
);

-- Each prune: events 1..sequence of the tenant were deleted after Audit signed
-- their last one (`jws`, a checkpoint). The newest row is where the stored
-- chain now starts. Append-only.
CREATE TABLE prunes (
    tenant_id uuid NOT NULL,
    sequence bigint NOT NULL CONSTRAINT prunes_sequence_positive CHECK (sequence > 0),
    hash bytea NOT NULL,
    jws text NOT NULL,
    prune_time timestamptz NOT NULL DEFAULT now(),
    deleted_count bigint NOT NULL,
    PRIMARY KEY (tenant_id, sequence)
);
CREATE TRIGGER prunes_append_only BEFORE UPDATE OR DELETE ON prunes
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER prunes_no_truncate BEFORE TRUNCATE ON prunes
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'events' AND current_user = 'audit_retention'
       AND OLD.sequence <= (SELECT max(p.sequence) FROM prunes p WHERE p.tenant_id = OLD.tenant_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;

ALTER TABLE retention_periods ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_periods FORCE ROW LEVEL SECURITY;
ALTER TABLE prunes ENABLE ROW LEVEL SECURITY;
ALTER TABLE prunes FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON retention_periods FOR SELECT TO audit_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
GRANT SELECT ON retention_periods TO audit_app;
CREATE POLICY tenant_isolation ON prunes FOR SELECT TO audit_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
GRANT SELECT ON prunes TO audit_app;
CREATE POLICY platform_read ON prunes FOR SELECT TO audit_platform USING (true);
GRANT SELECT ON prunes TO audit_platform;

GRANT USAGE ON SCHEMA public TO audit_retention;
-- The retention job: across tenants, reads chains, deletes covered prefixes,
-- records prunes and their checkpoints, sets periods. Nothing else.
CREATE POLICY retention_read ON events FOR SELECT TO audit_retention USING (true);
CREATE POLICY retention_delete ON events FOR DELETE TO audit_retention USING (true);
GRANT SELECT, DELETE ON events TO audit_retention;
CREATE POLICY retention_heads ON chain_heads FOR SELECT TO audit_retention USING (true);
GRANT SELECT ON chain_heads TO audit_retention;
CREATE POLICY retention_read ON checkpoints FOR SELECT TO audit_retention USING (true);
CREATE POLICY retention_sign ON checkpoints FOR INSERT TO audit_retention WITH CHECK (true);
GRANT SELECT, INSERT ON checkpoints TO audit_retention;
CREATE POLICY retention_prunes ON prunes TO audit_retention USING (true) WITH CHECK (true);
GRANT SELECT, INSERT ON prunes TO audit_retention;
CREATE POLICY retention_periods ON retention_periods TO audit_retention USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON retention_periods TO audit_retention;

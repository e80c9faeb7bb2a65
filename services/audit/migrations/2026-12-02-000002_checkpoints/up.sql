-- Signed checkpoints: a tenant's chain head (sequence, hash) signed by Audit's
-- own key, so that events cut off the end of a chain are found even when the
-- chain head was rewritten with them. Append-only like the events; audit_app
-- reads its tenant's, audit_platform writes them (the periodic job, and
-- CreateCheckpoint).
CREATE TABLE checkpoints (
    tenant_id uuid NOT NULL,
    sequence bigint NOT NULL,
    hash bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    jws text NOT NULL,
    PRIMARY KEY (tenant_id, sequence)
);
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

ALTER TABLE checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON checkpoints FOR SELECT TO audit_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
GRANT SELECT ON checkpoints TO audit_app;
CREATE POLICY platform_read ON checkpoints FOR SELECT TO audit_platform USING (true);
CREATE POLICY platform_sign ON checkpoints FOR INSERT TO audit_platform WITH CHECK (true);
GRANT SELECT, INSERT ON checkpoints TO audit_platform;

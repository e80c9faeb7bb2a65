-- Audit events: append-only, one hash chain per tenant (ARCHITECTURE.md §5).
--
-- events is tenant-owned (tenant_id leads every key; the nil tenant holds the
-- platform chain: logins, failed logins, cross-tenant reads). audit_app only
-- reads its tenant's events (QueryEvents, ExportEvents, VerifyChain); appends
-- come from the writer services' relays, across tenants, through
-- audit_platform, which may insert events and move chain heads, nothing else.
-- A trigger refuses UPDATE, DELETE and TRUNCATE of events for every role, the
-- owner included (only disabling the trigger, an owner's DDL, gets past it —
-- and VerifyChain then finds the change).
CREATE TABLE events (
    tenant_id uuid NOT NULL,
    sequence bigint NOT NULL CONSTRAINT events_sequence_positive CHECK (sequence > 0),
    id uuid NOT NULL,
    actor_user_id text NOT NULL DEFAULT '',
    actor_service text NOT NULL DEFAULT '',
    source_service text NOT NULL,
    action text NOT NULL,
    resource_type text NOT NULL DEFAULT '',
    resource_id text NOT NULL DEFAULT '',
    old_value jsonb,
    new_value jsonb,
    metadata jsonb,
    request_id text NOT NULL DEFAULT '',
    trace_id text NOT NULL DEFAULT '',
    occur_time timestamptz NOT NULL,
    receive_time timestamptz NOT NULL DEFAULT now(),
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (tenant_id, sequence),
    CONSTRAINT events_id_key UNIQUE (tenant_id, id)
);
CREATE INDEX events_by_time ON events (tenant_id, occur_time, sequence);
CREATE INDEX events_by_action ON events (tenant_id, action, sequence);
CREATE INDEX events_by_resource ON events (tenant_id, resource_type, resource_id, sequence);
CREATE INDEX events_by_actor ON events (tenant_id, actor_user_id, sequence);

-- The head of each tenant's chain: locked by every append, so appends of one
-- tenant take their sequence numbers one after the other (no gap, no fork).
CREATE TABLE chain_heads (
    tenant_id uuid PRIMARY KEY,
    sequence bigint NOT NULL,
    hash bytea NOT NULL
);

CREATE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE chain_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE chain_heads FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON events FOR SELECT TO audit_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
GRANT SELECT ON events TO audit_app;

CREATE POLICY platform_read ON events FOR SELECT TO audit_platform USING (true);
CREATE POLICY platform_append ON events FOR INSERT TO audit_platform WITH CHECK (true);
GRANT SELECT, INSERT ON events TO audit_platform;
CREATE POLICY platform_heads ON chain_heads TO audit_platform USING (true) WITH CHECK (true);
GRANT SELECT, INSERT ON chain_heads TO audit_platform;
GRANT UPDATE (sequence, hash) ON chain_heads TO audit_platform;

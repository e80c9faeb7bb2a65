-- The shared transactional outbox (ARCHITECTURE.md §5), for any writer service.
-- Run as <svc>_owner: the role names below are derived from current_user.
--
-- Messages are written in the same tenant-scoped transaction as the change they
-- describe. `seq` is a per-tenant counter taken from outbox_sequence under its
-- row lock, so two transactions of one tenant get their numbers in commit order
-- (the second waits for the first to commit): the relay delivers in `seq` order
-- and tracks delivery per row, so a late commit is never skipped.
CREATE TABLE outbox (
    tenant_id uuid NOT NULL,
    seq bigint NOT NULL,
    id uuid NOT NULL,
    topic text NOT NULL CHECK (topic ~ '^[a-z][a-z0-9_.]{0,62}$'),
    payload jsonb NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    last_error text,
    delivered_time timestamptz,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, id)
);
CREATE INDEX outbox_pending ON outbox (tenant_id, topic, seq) WHERE delivered_time IS NULL;

CREATE TABLE outbox_sequence (
    tenant_id uuid PRIMARY KEY,
    last_seq bigint NOT NULL
);

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
ALTER TABLE outbox_sequence ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox_sequence FORCE ROW LEVEL SECURITY;

DO $$
DECLARE
    svc text := regexp_replace(current_user, '_owner$', '');
    tenant_check text := 'tenant_id = (SELECT nullif(current_setting(''app.tenant_id'', true), '''')::uuid)';
BEGIN
    IF svc = current_user THEN
        RAISE EXCEPTION 'the outbox migration must run as <service>_owner, not %', current_user;
    END IF;
    -- The runtime role writes messages of its tenant only.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON outbox, outbox_sequence TO %I', svc || '_app');
    EXECUTE format('CREATE POLICY tenant_isolation ON outbox TO %I USING (%s) WITH CHECK (%s)',
                   svc || '_app', tenant_check, tenant_check);
    EXECUTE format('CREATE POLICY tenant_isolation ON outbox_sequence TO %I USING (%s) WITH CHECK (%s)',
                   svc || '_app', tenant_check, tenant_check);
    -- The relay (platform transactions, connected as <svc>_platform) reads and marks every tenant's
    -- messages; platform operations may also write messages for any tenant.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON outbox, outbox_sequence TO %I', svc || '_platform');
    EXECUTE format('CREATE POLICY relay ON outbox TO %I USING (true) WITH CHECK (true)', svc || '_platform');
    EXECUTE format('CREATE POLICY relay ON outbox_sequence TO %I USING (true) WITH CHECK (true)', svc || '_platform');
END $$;

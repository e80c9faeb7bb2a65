-- One function for enqueueing, so the insert is one prepared statement that
-- the driver caches (a `sql_query` string was re-prepared on every call, about
-- +150 µs per write). SECURITY INVOKER (the default): the caller's row-level
-- security applies to both tables, exactly as before.
--
-- The upsert takes the tenant's sequence row lock until commit: a second writer
-- of the same tenant waits, so sequence numbers follow commit order.
CREATE FUNCTION outbox_enqueue(p_tenant uuid, p_id uuid, p_topic text, p_payload jsonb)
RETURNS bigint
LANGUAGE sql
AS $$
    WITH next AS (
        INSERT INTO outbox_sequence (tenant_id, last_seq) VALUES (p_tenant, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET last_seq = outbox_sequence.last_seq + 1
        RETURNING last_seq)
    INSERT INTO outbox (tenant_id, seq, id, topic, payload)
    SELECT p_tenant, next.last_seq, p_id, p_topic, p_payload FROM next
    RETURNING seq
$$;

-- Least privilege (a review found the runtime role could rewrite, or mark
-- delivered, its tenant's pending audit events): writers only append; the relay
-- (the platform role) reads, appends, and marks delivery, nothing else.
DO $$
DECLARE
    svc text := regexp_replace(current_user, '_owner$', '');
    app text := svc || '_app';
    platform text := svc || '_platform';
BEGIN
    EXECUTE 'REVOKE ALL ON FUNCTION outbox_enqueue(uuid, uuid, text, jsonb) FROM PUBLIC';
    EXECUTE format('GRANT EXECUTE ON FUNCTION outbox_enqueue(uuid, uuid, text, jsonb) TO %I, %I',
                   app, platform);
    EXECUTE format('REVOKE UPDATE ON outbox FROM %I, %I', app, platform);
    EXECUTE format('GRANT UPDATE (attempts, next_attempt_time, last_error, delivered_time) ON outbox TO %I',
                   platform);
    EXECUTE format('REVOKE UPDATE ON outbox_sequence FROM %I, %I', app, platform);
    EXECUTE format('GRANT UPDATE (last_seq) ON outbox_sequence TO %I, %I', app, platform);
    DROP POLICY relay ON outbox;
    EXECUTE format('CREATE POLICY relay_read ON outbox FOR SELECT TO %I USING (true)', platform);
    EXECUTE format('CREATE POLICY relay_append ON outbox FOR INSERT TO %I WITH CHECK (delivered_time IS NULL)', platform);
    EXECUTE format('CREATE POLICY relay_mark ON outbox FOR UPDATE TO %I USING (true) WITH CHECK (true)', platform);
END $$;

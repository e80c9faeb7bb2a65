-- Each message keeps the W3C traceparent of the span that wrote it, so the
-- relay's delivery (and the receiver's span for it, e.g. Audit's) continues
-- the trace of the request that caused it. Not data: nothing reads it but the
-- relay, and a message without one is delivered the same.
ALTER TABLE outbox ADD COLUMN traceparent text
    CHECK (traceparent IS NULL OR length(traceparent) <= 128);

-- outbox_enqueue with the traceparent (same body otherwise; see
-- 2026-12-02-000000_outbox_enqueue).
DROP FUNCTION outbox_enqueue(uuid, uuid, text, jsonb);
CREATE FUNCTION outbox_enqueue(p_tenant uuid, p_id uuid, p_topic text, p_payload jsonb,
                               p_traceparent text)
RETURNS bigint
LANGUAGE sql
AS $$
    WITH next AS (
        INSERT INTO outbox_sequence (tenant_id, last_seq) VALUES (p_tenant, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET last_seq = outbox_sequence.last_seq + 1
        RETURNING last_seq)
    INSERT INTO outbox (tenant_id, seq, id, topic, payload, traceparent)
    SELECT p_tenant, next.last_seq, p_id, p_topic, p_payload, p_traceparent FROM next
    RETURNING seq
$$;

DO $$
DECLARE
    svc text := regexp_replace(current_user, '_owner$', '');
BEGIN
    EXECUTE 'REVOKE ALL ON FUNCTION outbox_enqueue(uuid, uuid, text, jsonb, text) FROM PUBLIC';
    EXECUTE format('GRANT EXECUTE ON FUNCTION outbox_enqueue(uuid, uuid, text, jsonb, text) TO %I, %I',
                   svc || '_app', svc || '_platform');
END $$;

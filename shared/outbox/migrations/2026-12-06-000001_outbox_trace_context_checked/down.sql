DROP FUNCTION outbox_enqueue(uuid, uuid, text, jsonb, text);
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
ALTER TABLE outbox DROP CONSTRAINT outbox_traceparent_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_traceparent_check
    CHECK (traceparent IS NULL OR length(traceparent) <= 128);

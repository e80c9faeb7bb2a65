-- A review of 2026-12-06-000000: the traceparent is checked as W3C's (not just
-- bounded), and outbox_enqueue's fifth argument defaults to none, so a binary
-- of the previous release, still running during a rolling deploy, keeps
-- calling it with four arguments.
ALTER TABLE outbox DROP CONSTRAINT outbox_traceparent_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_traceparent_check
    CHECK (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$') NOT VALID;

CREATE OR REPLACE FUNCTION outbox_enqueue(p_tenant uuid, p_id uuid, p_topic text, p_payload jsonb,
                                          p_traceparent text DEFAULT NULL)
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

CREATE POLICY retention_sign ON checkpoints FOR INSERT TO audit_retention WITH CHECK (true);
GRANT INSERT ON checkpoints TO audit_retention;
DROP TRIGGER prunes_complete ON prunes;
DROP FUNCTION prunes_complete();
DROP TRIGGER prunes_check ON prunes;
DROP FUNCTION prunes_check();
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'events' AND current_user = 'audit_retention'
       AND OLD.sequence <= (SELECT max(p.sequence) FROM prunes p WHERE p.tenant_id = OLD.tenant_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER events_receive_time ON events;
DROP FUNCTION events_receive_time();

REVOKE SELECT, INSERT, UPDATE ON retention_periods FROM audit_platform;
DROP POLICY platform_periods ON retention_periods;
DROP POLICY retention_read_periods ON retention_periods;
CREATE POLICY retention_periods ON retention_periods TO audit_retention USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON retention_periods TO audit_retention;
ALTER FUNCTION prunes_complete() RESET timezone;
ALTER FUNCTION prunes_check() RESET timezone;
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'events' AND current_user = 'audit_retention'
       AND OLD.sequence <= (SELECT max(p.sequence) FROM public.prunes p
                             WHERE p.tenant_id = OLD.tenant_id)
       AND OLD.receive_time < now() - interval '1 day' * GREATEST(1, COALESCE(
             (SELECT r.retain_days FROM public.retention_periods r
               WHERE r.tenant_id = OLD.tenant_id), 1)) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;

-- A review set the session's time zone to one with a 24-hour daylight-saving
-- jump: "now() - 1 day", calendar arithmetic in that zone, then lay in the
-- future and the job role deleted events received a moment earlier. The
-- guards now count absolute hours, in UTC whatever the session says.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp SET timezone = 'UTC' AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'events' AND current_user = 'audit_retention'
       AND OLD.sequence <= (SELECT max(p.sequence) FROM public.prunes p
                             WHERE p.tenant_id = OLD.tenant_id)
       AND OLD.receive_time < now() - make_interval(hours => 24 * GREATEST(1, COALESCE(
             (SELECT r.retain_days FROM public.retention_periods r
               WHERE r.tenant_id = OLD.tenant_id), 1))) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
ALTER FUNCTION prunes_check() SET timezone = 'UTC';
ALTER FUNCTION prunes_complete() SET timezone = 'UTC';

-- Periods are set by the platform role, with an audit event in the same
-- transaction (`bulkhead audit set-retention`); the job only reads them, so
-- its login cannot shorten a tenant's period and have the next prune sign
-- the deletion.
REVOKE INSERT, UPDATE, DELETE ON retention_periods FROM audit_retention;
DROP POLICY retention_periods ON retention_periods;
CREATE POLICY retention_read_periods ON retention_periods FOR SELECT TO audit_retention USING (true);
CREATE POLICY platform_periods ON retention_periods TO audit_platform USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE ON retention_periods TO audit_platform;

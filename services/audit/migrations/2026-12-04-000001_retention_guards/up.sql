-- Retention, held by the database and not only by the job's code (a red-team
-- review deleted recent and middle events with the job role's login alone):
--  * receive_time is Audit's clock, whatever an insert says;
--  * the job role deletes an event only if a recorded prune covers it AND it
--    was received before the tenant's period (one day at least);
--  * a prune record names the stored hash of its last event, only moves a
--    chain's start forward, and by commit every event up to it is gone — so
--    what is deleted is always a whole prefix, never a middle event;
--  * trigger functions resolve names in fixed schemas only.
-- The signature (a "prune" kind, which a checkpoint never has) is checked by
-- VerifyChain and the offline verifiers.

CREATE FUNCTION events_receive_time() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    NEW.receive_time := now();
    RETURN NEW;
END $$;
CREATE TRIGGER events_receive_time BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_receive_time();

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

CREATE FUNCTION prunes_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    previous bigint;
    stored bytea;
BEGIN
    SELECT max(p.sequence) INTO previous FROM public.prunes p WHERE p.tenant_id = NEW.tenant_id;
    IF NEW.sequence <= COALESCE(previous, 0) THEN
        RAISE EXCEPTION 'a prune only moves a chain''s start forward' USING ERRCODE = 'check_violation';
    END IF;
    SELECT e.hash INTO stored FROM public.events e
     WHERE e.tenant_id = NEW.tenant_id AND e.sequence = NEW.sequence;
    IF stored IS DISTINCT FROM NEW.hash THEN
        RAISE EXCEPTION 'a prune names the stored hash of its last event' USING ERRCODE = 'check_violation';
    END IF;
    NEW.prune_time := now();
    SELECT count(*) INTO NEW.deleted_count FROM public.events e
     WHERE e.tenant_id = NEW.tenant_id AND e.sequence > COALESCE(previous, 0)
       AND e.sequence <= NEW.sequence;
    RETURN NEW;
END $$;
CREATE TRIGGER prunes_check BEFORE INSERT ON prunes
    FOR EACH ROW EXECUTE FUNCTION prunes_check();

CREATE FUNCTION prunes_complete() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.events e
                WHERE e.tenant_id = NEW.tenant_id AND e.sequence <= NEW.sequence) THEN
        RAISE EXCEPTION 'a prune deletes every event up to its own, or none'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER prunes_complete AFTER INSERT ON prunes
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION prunes_complete();

-- The job signs prunes; it stores no checkpoints.
REVOKE INSERT ON checkpoints FROM audit_retention;
DROP POLICY retention_sign ON checkpoints;

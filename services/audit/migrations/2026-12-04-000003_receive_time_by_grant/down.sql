GRANT INSERT ON events TO audit_platform;
CREATE FUNCTION events_receive_time() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    NEW.receive_time := now();
    RETURN NEW;
END $$;
CREATE TRIGGER events_receive_time BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_receive_time();

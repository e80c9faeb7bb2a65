DO $$
DECLARE
    platform text := regexp_replace(current_user, '_owner$', '') || '_platform';
BEGIN
    DROP POLICY relay_prune ON outbox;
    EXECUTE format('CREATE POLICY relay_prune ON outbox FOR DELETE TO %I
                    USING (delivered_time IS NOT NULL AND delivered_time < now() - interval ''1 day'')',
                   platform);
END $$;

-- Pruning counts absolute hours: "now() - interval '1 day'" is calendar
-- arithmetic in the session's time zone, which the platform role chooses (a
-- zone with a 24-hour jump put "a day ago" in the future, and a message
-- marked delivered a moment earlier could be deleted at once).
DO $$
DECLARE
    platform text := regexp_replace(current_user, '_owner$', '') || '_platform';
BEGIN
    DROP POLICY relay_prune ON outbox;
    EXECUTE format('CREATE POLICY relay_prune ON outbox FOR DELETE TO %I
                    USING (delivered_time IS NOT NULL
                           AND delivered_time < now() - interval ''24 hours'')', platform);
END $$;

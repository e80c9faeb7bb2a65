-- The relay delivers outside any transaction (claim, send, mark), so a slow or
-- hung receiver holds no locks: a claimed message carries a lease
-- (claimed_until) instead of a row lock. A message the receiver refuses as
-- invalid is counted (rejections) and, on topics that allow it, set aside
-- after N refusals (dead_time): kept, never deleted, until an operator resends
-- it (`bulkhead outbox redrive`). Delivered messages are pruned after a while.
-- claim_id names the round holding the lease: a relay whose lease ran out
-- cannot mark (or clear the claim of) a message another relay took over.
ALTER TABLE outbox
    ADD COLUMN claimed_until timestamptz,
    ADD COLUMN claim_id uuid,
    ADD COLUMN rejections integer NOT NULL DEFAULT 0,
    ADD COLUMN dead_time timestamptz;
ALTER TABLE outbox ADD CONSTRAINT outbox_dead_or_delivered
    CHECK (dead_time IS NULL OR delivered_time IS NULL);

DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (tenant_id, topic, seq)
    WHERE delivered_time IS NULL AND dead_time IS NULL;
CREATE INDEX outbox_dead ON outbox (dead_time) WHERE dead_time IS NOT NULL;
CREATE INDEX outbox_delivered ON outbox (delivered_time) WHERE delivered_time IS NOT NULL;

DO $$
DECLARE
    svc text := regexp_replace(current_user, '_owner$', '');
    platform text := svc || '_platform';
BEGIN
    EXECUTE format('GRANT UPDATE (claimed_until, claim_id, rejections, dead_time) ON outbox TO %I', platform);
    -- Pruning: the relay deletes messages delivered a day ago at least (the
    -- relay's own setting is longer); see the trigger below for why that holds.
    EXECUTE format('GRANT DELETE ON outbox TO %I', platform);
    EXECUTE format('CREATE POLICY relay_prune ON outbox FOR DELETE TO %I
                    USING (delivered_time IS NOT NULL AND delivered_time < now() - interval ''1 day'')',
                   platform);
END $$;

-- A delivery time is written once, as the time of writing: the platform role
-- cannot backdate a pending message into pruning range (or move it back to
-- pending), so deleting an undelivered event takes a day in plain sight.
CREATE FUNCTION outbox_delivery_written_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.delivered_time IS DISTINCT FROM OLD.delivered_time
       AND (OLD.delivered_time IS NOT NULL OR NEW.delivered_time <> now()) THEN
        RAISE EXCEPTION 'outbox delivered_time is set once, to now()';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER outbox_delivery_written_once BEFORE UPDATE OF delivered_time ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_delivery_written_once();

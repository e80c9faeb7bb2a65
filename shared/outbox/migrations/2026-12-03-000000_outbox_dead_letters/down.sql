DROP TRIGGER outbox_delivery_written_once ON outbox;
DROP FUNCTION outbox_delivery_written_once();
DROP POLICY relay_prune ON outbox;
DROP INDEX outbox_delivered;
DROP INDEX outbox_dead;
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (tenant_id, topic, seq) WHERE delivered_time IS NULL;
ALTER TABLE outbox DROP CONSTRAINT outbox_dead_or_delivered;
ALTER TABLE outbox DROP COLUMN claimed_until, DROP COLUMN claim_id, DROP COLUMN rejections, DROP COLUMN dead_time;

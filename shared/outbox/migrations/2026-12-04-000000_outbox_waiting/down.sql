DROP INDEX outbox_claimed;
DROP INDEX outbox_backing_off;

DROP TABLE outbox;
DROP TABLE outbox_sequence;

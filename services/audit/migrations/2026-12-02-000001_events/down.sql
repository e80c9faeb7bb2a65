DROP TABLE chain_heads;
DROP TABLE events;
DROP FUNCTION events_append_only();

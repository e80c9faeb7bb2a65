ALTER TABLE sessions DROP COLUMN switched_from;

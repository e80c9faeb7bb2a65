DROP FUNCTION outbox_enqueue(uuid, uuid, text, jsonb);

-- receive_time is Audit's clock by privilege rather than by a row trigger
-- (which cost every append a PL/pgSQL call): the platform role may insert
-- every column of an event but that one, so the column's default, now(),
-- always applies.
DROP TRIGGER events_receive_time ON events;
DROP FUNCTION events_receive_time();
REVOKE INSERT ON events FROM audit_platform;
GRANT INSERT (tenant_id, sequence, id, actor_user_id, actor_service, source_service, action,
              resource_type, resource_id, old_value, new_value, metadata, request_id, trace_id,
              occur_time, prev_hash, hash)
    ON events TO audit_platform;

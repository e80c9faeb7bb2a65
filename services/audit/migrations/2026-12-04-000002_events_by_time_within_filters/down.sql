DROP INDEX events_by_action;
DROP INDEX events_by_resource;
DROP INDEX events_by_actor;
CREATE INDEX events_by_action ON events (tenant_id, action, sequence);
CREATE INDEX events_by_resource ON events (tenant_id, resource_type, resource_id, sequence);
CREATE INDEX events_by_actor ON events (tenant_id, actor_user_id, sequence);

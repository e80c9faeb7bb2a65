-- SwitchTenant counts the sessions a user started in the last minute (its
-- per-user cap holds across replicas): read by user and start time, not by
-- walking every stored session of the user.
CREATE INDEX sessions_user_started ON sessions (user_id, create_time);

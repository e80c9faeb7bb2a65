REVOKE USAGE ON SCHEMA public FROM task_app, task_platform;
GRANT USAGE ON SCHEMA public TO PUBLIC;

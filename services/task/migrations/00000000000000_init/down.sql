REVOKE USAGE ON SCHEMA public FROM task_app, task_support;
GRANT USAGE ON SCHEMA public TO PUBLIC;

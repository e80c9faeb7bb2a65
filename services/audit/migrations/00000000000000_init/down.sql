REVOKE USAGE ON SCHEMA public FROM audit_app, audit_platform;
GRANT USAGE ON SCHEMA public TO PUBLIC;

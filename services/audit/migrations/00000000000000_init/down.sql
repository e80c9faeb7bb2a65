REVOKE USAGE ON SCHEMA public FROM audit_app, audit_support;
GRANT USAGE ON SCHEMA public TO PUBLIC;

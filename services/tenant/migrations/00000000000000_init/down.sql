REVOKE USAGE ON SCHEMA public FROM tenant_app, tenant_platform;
GRANT USAGE ON SCHEMA public TO PUBLIC;

REVOKE USAGE ON SCHEMA public FROM tenant_app, tenant_support;
GRANT USAGE ON SCHEMA public TO PUBLIC;

REVOKE USAGE ON SCHEMA public FROM auth_app, auth_support;
GRANT USAGE ON SCHEMA public TO PUBLIC;

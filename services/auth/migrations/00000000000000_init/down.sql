REVOKE USAGE ON SCHEMA public FROM auth_app, auth_platform;
GRANT USAGE ON SCHEMA public TO PUBLIC;

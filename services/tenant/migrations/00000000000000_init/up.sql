-- Only the owner creates objects in this database; the runtime role tenant_app
-- (and its support role, for platform transactions) may use the schema and gets
-- DML grants table by table, in the migration that
-- creates each table.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO tenant_app, tenant_support;

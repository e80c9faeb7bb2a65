-- Only the owner creates objects in this database; the runtime role audit_app
-- (and its platform role, for platform operations) may use the schema and gets
-- DML grants table by table, in the migration that
-- creates each table.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO audit_app, audit_platform;

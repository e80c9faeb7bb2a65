-- The tables `bulkhead validate` is told are kept per user, not per tenant,
-- with the reason (the report prints it): their runtime-role policies scope
-- rows by app.user_id, and their keys are the user's.
COMMENT ON TABLE users IS
    'bulkhead-validate: allow: a user exists once across tenants; the runtime role reads and changes only its own row (app.user_id)';
COMMENT ON TABLE sessions IS
    'bulkhead-validate: allow: a login session belongs to its user (tenant_id is the tenant it was opened for); the runtime role reaches only its own user''s sessions (app.user_id)';

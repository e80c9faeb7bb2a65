-- The declared exceptions to the isolation rules `bulkhead validate` checks,
-- each with its reason (the report prints it). Anything else that breaks a
-- rule fails validation.
COMMENT ON INDEX memberships_single_default IS
    'bulkhead-validate: allow: a user has one default tenant across their memberships (the one Login picks); the index holds user ids only';
COMMENT ON CONSTRAINT organization_settings_pkey ON organization_settings IS
    'bulkhead-validate: allow: one global default row (tenant_id NULL) sits beside one row per tenant; row ids are random';
COMMENT ON INDEX organization_settings_single_global IS
    'bulkhead-validate: allow: at most one global default row (tenant_id NULL)';
COMMENT ON POLICY read_global_default ON organization_settings IS
    'bulkhead-validate: allow: every tenant reads the global default row (tenant_id NULL), never another tenant''s';

COMMENT ON INDEX memberships_single_default IS NULL;
COMMENT ON CONSTRAINT organization_settings_pkey ON organization_settings IS NULL;
COMMENT ON INDEX organization_settings_single_global IS NULL;
COMMENT ON POLICY read_global_default ON organization_settings IS NULL;

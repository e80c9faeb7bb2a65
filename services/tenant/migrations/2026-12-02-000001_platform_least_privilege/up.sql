-- The platform role gets exactly what its operations use, command by command
-- and column by column (a review found `FOR ALL USING (true)` with table-wide
-- UPDATE: tenant_platform could rewrite any tenant's memberships).
--   tenants: list and read all, create, (de)activate.
--   memberships: read across tenants (ListUserMemberships), a new tenant's
--   first OWNER; never change one.
--   organization_settings: read all; change the global default row only.
DROP POLICY platform ON tenants;
CREATE POLICY platform_read ON tenants FOR SELECT TO tenant_platform USING (true);
CREATE POLICY platform_create ON tenants FOR INSERT TO tenant_platform WITH CHECK (true);
CREATE POLICY platform_activate ON tenants FOR UPDATE TO tenant_platform USING (true) WITH CHECK (true);
REVOKE UPDATE ON tenants FROM tenant_platform;
GRANT UPDATE (is_active, update_time) ON tenants TO tenant_platform;

DROP POLICY platform ON memberships;
CREATE POLICY platform_read ON memberships FOR SELECT TO tenant_platform USING (true);
CREATE POLICY platform_first_owner ON memberships FOR INSERT TO tenant_platform
    WITH CHECK (role = 'OWNER');
REVOKE UPDATE ON memberships FROM tenant_platform;

DROP POLICY platform ON organization_settings;
CREATE POLICY platform_read ON organization_settings FOR SELECT TO tenant_platform USING (true);
CREATE POLICY platform_global_default ON organization_settings FOR UPDATE TO tenant_platform
    USING (tenant_id IS NULL) WITH CHECK (tenant_id IS NULL);
REVOKE INSERT, UPDATE ON organization_settings FROM tenant_platform;
GRANT UPDATE (display_name, logo_url, timezone, locale, update_time) ON organization_settings TO tenant_platform;

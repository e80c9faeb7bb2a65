-- Tenants, memberships and organization settings.
--
-- How each table is protected (row-level security is ENABLEd and FORCEd on all):
--
-- * tenants is global (it has no tenant_id: its id *is* the tenant). The runtime
--   role tenant_app sees and updates only the row of the transaction's tenant
--   (`id = app.tenant_id`), and may change only name, domain and update_time.
--   Creating tenants, (de)activating them and listing all of them are platform
--   operations: they run as tenant_platform (its own login role and pool, after the policy table
--   allowed a SUPER_ADMIN), whose own policy spans every row.
-- * memberships and organization_settings are tenant-owned: the standard tenant
--   policy for tenant_app. tenant_platform may read memberships across tenants (the
--   internal ListUserMemberships) and insert a new tenant's first OWNER.
-- * organization_settings also holds the one global default row (tenant_id NULL):
--   readable by every tenant, written only as tenant_platform (SUPER_ADMIN).

CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    slug text NOT NULL,
    name text NOT NULL,
    domain text,
    is_active boolean NOT NULL DEFAULT true,
    is_default boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    CONSTRAINT tenants_domain_key UNIQUE (domain),
    CONSTRAINT tenants_slug_format CHECK (
        slug ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$' AND char_length(slug) BETWEEN 3 AND 63),
    CONSTRAINT tenants_name_length CHECK (char_length(name) BETWEEN 1 AND 200)
);
-- At most one default tenant.
CREATE UNIQUE INDEX tenants_single_default ON tenants ((true)) WHERE is_default;

CREATE TABLE memberships (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    user_id uuid NOT NULL,
    role text NOT NULL CONSTRAINT memberships_role CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')),
    is_default boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, tenant_id);
-- At most one default membership per user.
CREATE UNIQUE INDEX memberships_single_default ON memberships (user_id) WHERE is_default;

CREATE TABLE organization_settings (
    id uuid PRIMARY KEY,
    tenant_id uuid REFERENCES tenants (id),
    display_name text,
    logo_url text,
    timezone text,
    locale text,
    update_time timestamptz NOT NULL DEFAULT now()
);
-- One global default row and at most one row per tenant.
CREATE UNIQUE INDEX organization_settings_single_global
    ON organization_settings ((true)) WHERE tenant_id IS NULL;
CREATE UNIQUE INDEX organization_settings_single_per_tenant
    ON organization_settings (tenant_id) WHERE tenant_id IS NOT NULL;

INSERT INTO organization_settings (id, tenant_id, display_name, logo_url, timezone, locale)
VALUES ('00000000-0000-7000-8000-000000000001', NULL, 'Bulkhead', '', 'UTC', 'en-US');

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
ALTER TABLE organization_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_settings FORCE ROW LEVEL SECURITY;

CREATE POLICY own_tenant ON tenants TO tenant_app
    USING (id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
CREATE POLICY platform ON tenants TO tenant_platform USING (true) WITH CHECK (true);
GRANT SELECT, UPDATE (name, domain, update_time) ON tenants TO tenant_app;
GRANT SELECT, INSERT, UPDATE ON tenants TO tenant_platform;

CREATE POLICY tenant_isolation ON memberships TO tenant_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
CREATE POLICY platform ON memberships TO tenant_platform USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON memberships TO tenant_app;
GRANT SELECT, INSERT, UPDATE ON memberships TO tenant_platform;

CREATE POLICY tenant_isolation ON organization_settings TO tenant_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
CREATE POLICY read_global_default ON organization_settings FOR SELECT TO tenant_app
    USING (tenant_id IS NULL);
CREATE POLICY platform ON organization_settings TO tenant_platform USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON organization_settings TO tenant_app;
GRANT SELECT, INSERT, UPDATE ON organization_settings TO tenant_platform;

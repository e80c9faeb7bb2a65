DROP TABLE organization_settings;
DROP TABLE memberships;
DROP TABLE tenants;

-- Changes to a user's access to a tenant (membership removed, role lowered)
-- or to a whole tenant's (deactivated; the nil user), recorded when Tenant
-- has Auth revoke the sessions they affect (RevokeSessions with a tenant).
-- Login and SwitchTenant read the membership from Tenant before they store
-- a session: a change landing in between would leave a session the
-- revocation missed. So a session is stored only if no change was recorded
-- after its membership was read. "After" is the order of one sequence, not
-- a clock (clocks step): a login draws a number before it asks Tenant; the
-- revocation, which Tenant sends only once its change committed, so after
-- that read, draws a later one. A revocation and a session start serialize
-- on the user's row (and, for a whole tenant, on a transaction-scoped
-- advisory lock of the tenant), so neither misses the other. One row per
-- tenant and user: the latest change.
CREATE SEQUENCE membership_change_order;
CREATE TABLE membership_changes (
    tenant_id uuid NOT NULL,
    user_id uuid NOT NULL,
    change_order bigint NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
ALTER TABLE membership_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE membership_changes FORCE ROW LEVEL SECURITY;
-- Only the platform role (RevokeSessions, starting sessions) reads and
-- writes it; the runtime role has no grant.
GRANT USAGE ON SEQUENCE membership_change_order TO auth_platform;
GRANT SELECT, INSERT ON membership_changes TO auth_platform;
GRANT UPDATE (change_order) ON membership_changes TO auth_platform;
CREATE POLICY platform_read ON membership_changes FOR SELECT TO auth_platform USING (true);
CREATE POLICY platform_record ON membership_changes FOR INSERT TO auth_platform WITH CHECK (true);
CREATE POLICY platform_advance ON membership_changes FOR UPDATE TO auth_platform
    USING (true) WITH CHECK (true);

-- Assignees and removals (ARCHITECTURE.md §4). Task asks Tenant whether an
-- assignee is a member before its transaction, and hears of a removal later,
-- through Tenant's outbox: a removal landing between the two must not leave a
-- task assigned to someone who left. Memberships are named by their create
-- time (Tenant's clock, never compared with any other clock): a task keeps the
-- membership its assignee was checked against, and Task keeps each user's
-- newest ended membership. A write refuses an assignee whose checked membership
-- has ended; a release unassigns the tasks assigned on the ended membership or
-- an older one (not those of a later re-join). The two serialize on a
-- per-(tenant, user) advisory lock.
ALTER TABLE tasks ADD COLUMN assignee_member_since timestamptz;

CREATE TABLE member_removals (
    tenant_id uuid NOT NULL,
    user_id uuid NOT NULL,
    ended_membership_since timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
ALTER TABLE member_removals ENABLE ROW LEVEL SECURITY;
ALTER TABLE member_removals FORCE ROW LEVEL SECURITY;

-- The runtime role reads its tenant's removals; only the platform role (fed
-- by Tenant's outbox) records them.
CREATE POLICY tenant_isolation ON member_removals FOR SELECT TO task_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
GRANT SELECT ON member_removals TO task_app;

CREATE POLICY platform_read ON member_removals FOR SELECT TO task_platform USING (true);
CREATE POLICY platform_record ON member_removals FOR INSERT TO task_platform WITH CHECK (true);
CREATE POLICY platform_advance ON member_removals FOR UPDATE TO task_platform
    USING (true) WITH CHECK (true);
GRANT SELECT, INSERT ON member_removals TO task_platform;
GRANT UPDATE (ended_membership_since) ON member_removals TO task_platform;
GRANT UPDATE (assignee_member_since) ON tasks TO task_platform;

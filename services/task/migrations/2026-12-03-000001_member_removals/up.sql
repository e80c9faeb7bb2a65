-- Assignees and removals (ARCHITECTURE.md §4). Task asks Tenant whether an
-- assignee is a member before its transaction, and hears of a removal later,
-- through Tenant's outbox: a removal landing between the two must not leave a
-- task assigned to someone who left. So a task keeps the creation time of the
-- membership its assignee was checked against, and Task keeps each user's
-- latest removal; both times are Tenant's clock. A write refuses an assignee
-- removed at or after that membership began; a release unassigns the tasks
-- assigned on a membership that began at or before the removal (not those of a
-- later re-join). The two serialize on a per-(tenant, user) advisory lock.
ALTER TABLE tasks ADD COLUMN assignee_member_since timestamptz;

CREATE TABLE member_removals (
    tenant_id uuid NOT NULL,
    user_id uuid NOT NULL,
    removal_time timestamptz NOT NULL,
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
GRANT UPDATE (removal_time) ON member_removals TO task_platform;
GRANT UPDATE (assignee_member_since) ON tasks TO task_platform;

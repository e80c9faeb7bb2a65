-- Tasks and compliance records: tenant-owned tables (ARCHITECTURE.md §4).
--
-- Both lead every key with tenant_id, ENABLE and FORCE row-level security, and
-- carry the standard tenant policy for task_app. A compliance record can only
-- link a task of its own tenant: the foreign key includes tenant_id, so a
-- cross-tenant link cannot be stored at all (no CHECK with a subquery: the
-- original plan's flaw). task_platform may read across tenants (the opt-in
-- SUPER_ADMIN bypass) and unassign tasks of members who left (ReleaseAssignments,
-- fed by Tenant's outbox).
--
-- Ids are UUID v7 (time-ordered): "newest first" is `id DESC`, and a keyset page
-- token is the last id seen.
CREATE TABLE tasks (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    title text NOT NULL CONSTRAINT tasks_title_length CHECK (char_length(title) BETWEEN 1 AND 255),
    description text NOT NULL DEFAULT '' CONSTRAINT tasks_description_length CHECK (char_length(description) <= 10000),
    status text NOT NULL CONSTRAINT tasks_status CHECK (status IN ('PENDING', 'IN_PROGRESS', 'COMPLETED', 'CANCELLED')),
    assignee_id uuid,
    created_by uuid NOT NULL,
    -- AIP-155: a retried CreateTask with the same request id finds its task.
    request_id text CONSTRAINT tasks_request_id_length CHECK (char_length(request_id) BETWEEN 1 AND 64),
    version bigint NOT NULL DEFAULT 1,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- One index per query shape, each leading with tenant_id (the PK serves the
-- unfiltered list, newest first, and gets by id).
CREATE INDEX tasks_by_status ON tasks (tenant_id, status, id);
CREATE INDEX tasks_by_assignee ON tasks (tenant_id, assignee_id, id);
CREATE INDEX tasks_by_create_time ON tasks (tenant_id, create_time);
-- NULLs are distinct: tasks created without a request id never conflict.
CREATE UNIQUE INDEX tasks_request_key ON tasks (tenant_id, created_by, request_id);

CREATE TABLE compliance_records (
    tenant_id uuid NOT NULL,
    id uuid NOT NULL,
    title text NOT NULL CONSTRAINT compliance_title_length CHECK (char_length(title) BETWEEN 1 AND 255),
    -- OVERDUE is not stored: a PENDING record past due_time reads as OVERDUE.
    status text NOT NULL CONSTRAINT compliance_status CHECK (status IN ('PENDING', 'COMPLETED')),
    due_time timestamptz NOT NULL,
    task_id uuid,
    version bigint NOT NULL DEFAULT 1,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT compliance_records_task FOREIGN KEY (tenant_id, task_id)
        REFERENCES tasks (tenant_id, id) ON DELETE SET NULL (task_id)
);
CREATE INDEX compliance_by_due ON compliance_records (tenant_id, due_time, id);
CREATE INDEX compliance_by_task ON compliance_records (tenant_id, task_id);

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
ALTER TABLE compliance_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE compliance_records FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tasks TO task_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
CREATE POLICY tenant_isolation ON compliance_records TO task_app
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE, DELETE ON tasks, compliance_records TO task_app;

-- The platform role reads across tenants and may only clear assignees.
CREATE POLICY platform_read ON tasks FOR SELECT TO task_platform USING (true);
CREATE POLICY platform_release ON tasks FOR UPDATE TO task_platform
    USING (status IN ('PENDING', 'IN_PROGRESS')) WITH CHECK (assignee_id IS NULL);
CREATE POLICY platform_read ON compliance_records FOR SELECT TO task_platform USING (true);
GRANT SELECT ON tasks, compliance_records TO task_platform;
GRANT UPDATE (assignee_id, version, update_time) ON tasks TO task_platform;

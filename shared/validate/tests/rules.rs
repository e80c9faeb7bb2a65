//! Every rule of `bulkhead validate`, on real databases migrated like the
//! services': each service's database passes as migrated, and each rule,
//! broken on purpose in a fresh copy, is caught on the object that breaks it.
//! (Roles are the cluster's, shared by every database: their rules are broken
//! in `roles.rs`, a test process of its own.)

use bulkhead_db::schema::ServiceSchema;
use bulkhead_postgres::testing::{TestDatabase, test_database};
use bulkhead_validate::{Finding, Options, Rule, failed, table, validate, verify_runtime};
use diesel_async::SimpleAsyncConnection as _;
use uuid::Uuid;

const SCHEMAS: [&ServiceSchema; 4] = [
    &bulkhead_auth::SCHEMA,
    &bulkhead_tenant::SCHEMA,
    &bulkhead_task::SCHEMA,
    &bulkhead_audit::SCHEMA,
];

async fn check(
    db: &TestDatabase,
    schema: &'static ServiceSchema,
    known: Option<&[Uuid]>,
    options: Options,
) -> Vec<Finding> {
    validate(&mut db.admin_connection().await, schema, known, options)
        .await
        .expect("validate")
}

/// A fresh database of `schema` broken by `sql` (run as the superuser).
async fn broken(schema: &'static ServiceSchema, sql: &str) -> TestDatabase {
    let db = test_database(schema).await;
    db.admin_connection()
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    db
}

/// The failures, as (rule, object).
fn failures(findings: &[Finding]) -> Vec<(Rule, String)> {
    findings
        .iter()
        .filter(|f| !f.ok)
        .map(|f| (f.rule, f.object.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_database_passes_as_migrated() {
    for schema in SCHEMAS {
        let db = test_database(schema).await;
        let findings = check(&db, schema, Some(&[]), Options::default()).await;
        assert!(
            !failed(&findings),
            "{}:\n{}",
            schema.service(),
            table(&findings)
        );
        // Each rule was looked at: tenant tables, their keys, the roles.
        for rule in [
            Rule::RowLevelSecurity,
            Rule::TenantPolicy,
            Rule::TenantKey,
            Rule::Orphans,
            Rule::RuntimeRole,
        ] {
            assert!(
                findings.iter().any(|f| f.rule == rule),
                "{}: no {rule:?} finding",
                schema.service()
            );
        }
    }
    // Audit's trail is append-only for its runtime roles.
    let db = test_database(&bulkhead_audit::SCHEMA).await;
    let findings = check(&db, &bulkhead_audit::SCHEMA, Some(&[]), Options::default()).await;
    let append_only: Vec<&str> = findings
        .iter()
        .filter(|f| f.rule == Rule::AppendOnly)
        .map(|f| f.object.as_str())
        .collect();
    assert_eq!(append_only.len(), 6, "{append_only:?}");
}

/// What breaks a rule, the SQL that does it, and the failures expected.
type Case = (&'static str, String, Vec<(Rule, &'static str)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_rule_is_caught_on_the_object_that_breaks_it() {
    let task = &bulkhead_task::SCHEMA;
    let policy = "tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)";
    let cases: Vec<Case> = vec![
        (
            "RLS disabled",
            "ALTER TABLE tasks DISABLE ROW LEVEL SECURITY".into(),
            vec![(Rule::RowLevelSecurity, "tasks")],
        ),
        (
            "RLS not forced",
            "ALTER TABLE bookings NO FORCE ROW LEVEL SECURITY".into(),
            vec![(Rule::RowLevelSecurity, "bookings")],
        ),
        (
            "a policy without WITH CHECK",
            format!(
                "DROP POLICY tenant_isolation ON tasks;
                 CREATE POLICY tenant_isolation ON tasks TO task_app USING ({policy})"
            ),
            vec![(Rule::TenantPolicy, "tasks.tenant_isolation")],
        ),
        (
            "a policy that lets every row through",
            "CREATE POLICY everyone ON services FOR SELECT TO task_app USING (true)".into(),
            vec![(Rule::TenantPolicy, "services.everyone")],
        ),
        (
            "a policy for PUBLIC scoped by nothing",
            "CREATE POLICY anyone ON compliance_records FOR INSERT WITH CHECK (true)".into(),
            vec![(Rule::TenantPolicy, "compliance_records.anyone")],
        ),
        (
            "a policy for PUBLIC on a table only other roles reach",
            "CREATE TABLE side_notes (id int);
             ALTER TABLE side_notes ENABLE ROW LEVEL SECURITY;
             ALTER TABLE side_notes FORCE ROW LEVEL SECURITY;
             CREATE POLICY anyone ON side_notes USING (true)"
                .into(),
            vec![(Rule::TenantPolicy, "side_notes.anyone")],
        ),
        (
            "temporary objects (searched before the catalog)",
            "DO $$ BEGIN
                 EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO task_app', current_database());
             END $$"
                .into(),
            vec![(Rule::RuntimeRole, "task_app")],
        ),
        (
            "a role default that switches row-level security off",
            "DO $$ BEGIN
                 EXECUTE format('ALTER ROLE task_platform IN DATABASE %I SET row_security = off',
                                current_database());
             END $$"
                .into(),
            vec![(Rule::RuntimeRole, "task_platform")],
        ),
        (
            "privileges without a policy",
            "DROP POLICY tenant_isolation ON service_requests".into(),
            vec![(Rule::TenantPolicy, "service_requests")],
        ),
        (
            "a unique index across tenants",
            "CREATE UNIQUE INDEX tasks_title_key ON tasks (title)".into(),
            vec![(Rule::TenantKey, "tasks_title_key")],
        ),
        (
            "an exception whose comment is not a declaration",
            "CREATE UNIQUE INDEX tasks_title_key ON tasks (title);
             COMMENT ON INDEX tasks_title_key IS 'allow: titles are unique everywhere'"
                .into(),
            vec![(Rule::TenantKey, "tasks_title_key")],
        ),
        (
            "a unique constraint across tenants",
            "ALTER TABLE services ADD CONSTRAINT services_name_key UNIQUE (name)".into(),
            vec![(Rule::TenantKey, "services_name_key")],
        ),
        (
            "a foreign key that can cross tenants",
            "ALTER TABLE tasks ADD CONSTRAINT tasks_id_key UNIQUE (id);
             ALTER TABLE compliance_records ADD CONSTRAINT compliance_any_task
                 FOREIGN KEY (task_id) REFERENCES tasks (id)"
                .into(),
            vec![
                (Rule::TenantKey, "compliance_any_task"),
                (Rule::TenantKey, "tasks_id_key"),
            ],
        ),
        (
            "a policy that names the setting but lets every row through",
            "DROP POLICY tenant_isolation ON tasks;
             CREATE POLICY tenant_isolation ON tasks TO task_app
                 USING (current_setting('app.tenant_id', true) IS NOT NULL OR true)
                 WITH CHECK (current_setting('app.tenant_id', true) IS NOT NULL OR true)"
                .into(),
            vec![(Rule::TenantPolicy, "tasks.tenant_isolation")],
        ),
        (
            "a policy that falls back to every row when the setting is unset",
            format!(
                "DROP POLICY tenant_isolation ON tasks;
                 CREATE POLICY tenant_isolation ON tasks TO task_app
                     USING (tenant_id = coalesce(nullif(current_setting('app.tenant_id', true), '')::uuid, tenant_id))
                     WITH CHECK ({policy})"
            ),
            vec![(Rule::TenantPolicy, "tasks.tenant_isolation")],
        ),
        (
            "a policy on another column (a user's rows across tenants)",
            "CREATE POLICY mine ON tasks FOR SELECT TO task_app
                 USING (created_by = (SELECT nullif(current_setting('app.user_id', true), '')::uuid))"
                .into(),
            vec![(Rule::TenantPolicy, "tasks.mine")],
        ),
        (
            "a unique index with tenant_id only as an INCLUDE column",
            "CREATE UNIQUE INDEX tasks_title_inc ON tasks (title) INCLUDE (tenant_id)".into(),
            vec![(Rule::TenantKey, "tasks_title_inc")],
        ),
        (
            "a unique index a cross-tenant foreign key points at",
            "CREATE UNIQUE INDEX tasks_id_only ON tasks (id);
             ALTER TABLE compliance_records ADD CONSTRAINT compliance_by_id
                 FOREIGN KEY (task_id) REFERENCES tasks (id)"
                .into(),
            vec![
                (Rule::TenantKey, "compliance_by_id"),
                (Rule::TenantKey, "tasks_id_only"),
            ],
        ),
        (
            "a declaration without a reason",
            "CREATE UNIQUE INDEX tasks_title_key ON tasks (title);
             COMMENT ON INDEX tasks_title_key IS 'bulkhead-validate: allow: '"
                .into(),
            vec![(Rule::TenantKey, "tasks_title_key")],
        ),
        (
            "TRUNCATE, which row-level security does not see",
            "GRANT TRUNCATE ON tasks TO task_app".into(),
            vec![(Rule::RuntimeRole, "task_app")],
        ),
        (
            "a SECURITY DEFINER function anyone may run",
            "CREATE FUNCTION count_every_task() RETURNS bigint LANGUAGE sql SECURITY DEFINER
                 AS 'SELECT count(*) FROM tasks'"
                .into(),
            vec![
                (Rule::RuntimeRole, "task_app"),
                (Rule::RuntimeRole, "task_platform"),
            ],
        ),
        (
            "a view that reads with its owner's rights",
            "CREATE VIEW every_task AS SELECT * FROM tasks; GRANT SELECT ON every_task TO task_app"
                .into(),
            vec![(Rule::RuntimeRole, "task_app")],
        ),
        (
            "a schema of its own",
            "CREATE SCHEMA side; GRANT USAGE ON SCHEMA side TO task_app".into(),
            vec![(Rule::RuntimeRole, "task_app")],
        ),
        (
            "a row of a tenant Tenant does not know",
            "INSERT INTO tasks (tenant_id, id, title, status, created_by)
             VALUES (gen_random_uuid(), gen_random_uuid(), 'orphan', 'PENDING', gen_random_uuid())"
                .into(),
            vec![(Rule::Orphans, "tasks")],
        ),
    ];
    for (what, sql, expected) in cases {
        let db = broken(task, &sql).await;
        let findings = check(&db, task, Some(&[]), Options::default()).await;
        let mut got = failures(&findings);
        got.sort();
        let mut want: Vec<(Rule, String)> = expected
            .iter()
            .map(|(r, o)| (*r, (*o).to_owned()))
            .collect();
        want.sort();
        assert_eq!(got, want, "{what}:\n{}", table(&findings));
        // The start-up check applies the same rules, as the runtime role:
        // it refuses each break but the orphan (which that role cannot see).
        let started = verify_runtime(&db.app_db(1).await, task).await;
        let refused: Vec<&(Rule, String)> =
            want.iter().filter(|(r, _)| *r != Rule::Orphans).collect();
        match started {
            Ok(_) => assert!(refused.is_empty(), "{what}: the start-up check passed"),
            Err(err) => {
                let err = err.to_string();
                assert!(!refused.is_empty(), "{what}: refused at start-up: {err}");
                for (rule, object) in refused {
                    assert!(
                        err.contains(&format!("{} {object}:", rule.as_str())),
                        "{what}: {err}"
                    );
                }
            }
        }
    }

    // A table without tenant_id that the runtime role reaches (Auth's users)
    // is held to RLS too.
    let auth = &bulkhead_auth::SCHEMA;
    let db = broken(auth, "ALTER TABLE users NO FORCE ROW LEVEL SECURITY").await;
    let findings = check(&db, auth, Some(&[]), Options::default()).await;
    assert_eq!(
        failures(&findings),
        [(Rule::RowLevelSecurity, "users".to_owned())],
        "{}",
        table(&findings)
    );
    // A policy by user on an undeclared table is no tenant scope.
    let db = broken(auth, "COMMENT ON TABLE sessions IS NULL").await;
    let findings = check(&db, auth, Some(&[]), Options::default()).await;
    let mut got = failures(&findings);
    got.sort();
    assert_eq!(
        got,
        [
            (Rule::TenantPolicy, "sessions.own_sessions".to_owned()),
            (Rule::TenantKey, "sessions_pkey".to_owned())
        ],
        "{}",
        table(&findings)
    );

    // Audit rows a runtime role could change.
    let audit = &bulkhead_audit::SCHEMA;
    for (sql, object, truncate) in [
        (
            "GRANT UPDATE ON events TO audit_app",
            "events (audit_app)",
            false,
        ),
        (
            "GRANT TRUNCATE ON events TO audit_platform",
            "events (audit_platform)",
            true,
        ),
        (
            "GRANT DELETE ON prunes TO audit_platform",
            "prunes (audit_platform)",
            false,
        ),
        (
            "GRANT UPDATE (jws) ON checkpoints TO audit_platform",
            "checkpoints (audit_platform)",
            false,
        ),
    ] {
        let db = broken(audit, sql).await;
        let findings = check(&db, audit, Some(&[]), Options::default()).await;
        let mut want = vec![(Rule::AppendOnly, object.to_owned())];
        if truncate {
            // TRUNCATE also passes RLS by: the role rule sees it too.
            want.insert(0, (Rule::RuntimeRole, "audit_platform".to_owned()));
        }
        assert_eq!(failures(&findings), want, "{sql}:\n{}", table(&findings));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_counted_against_the_tenants_tenant_knows_and_never_skipped() {
    let task = &bulkhead_task::SCHEMA;
    let known = Uuid::now_v7();
    let db = broken(
        task,
        &format!(
            "INSERT INTO tasks (tenant_id, id, title, status, created_by)
             VALUES ('{known}', gen_random_uuid(), 'known', 'PENDING', gen_random_uuid())"
        ),
    )
    .await;
    assert!(!failed(
        &check(&db, task, Some(&[known]), Options::default()).await
    ));
    assert_eq!(
        failures(&check(&db, task, Some(&[]), Options::default()).await),
        [(Rule::Orphans, "tasks".to_owned())]
    );
    // Without Tenant's list, or as a role that sees no rows past FORCEd RLS
    // (the owner), the check fails rather than count nothing.
    let unchecked = check(&db, task, None, Options::default()).await;
    assert!(
        unchecked
            .iter()
            .filter(|f| f.rule == Rule::Orphans)
            .all(|f| !f.ok && f.detail.contains("not checked")),
        "{}",
        table(&unchecked)
    );
    let as_owner = validate(
        &mut db.owner_connection().await,
        task,
        Some(&[known]),
        Options::default(),
    )
    .await
    .expect("validate as the owner");
    let orphan_findings: Vec<&Finding> = as_owner
        .iter()
        .filter(|f| f.rule == Rule::Orphans)
        .collect();
    assert!(!orphan_findings.is_empty());
    assert!(
        orphan_findings
            .iter()
            .all(|f| !f.ok && f.detail.contains("BYPASSRLS")),
        "{}",
        table(&as_owner)
    );
    // The other rules read the catalog: the owner can check those.
    assert!(
        as_owner
            .iter()
            .filter(|f| f.rule != Rule::Orphans)
            .all(|f| f.ok),
        "{}",
        table(&as_owner)
    );
    // The known tenants come from Tenant's own database.
    let tenant_db = test_database(&bulkhead_tenant::SCHEMA).await;
    tenant_db
        .admin_connection()
        .await
        .batch_execute(&format!(
            "INSERT INTO tenants (id, slug, name) VALUES ('{known}', 'known', 'Known')"
        ))
        .await
        .expect("a tenant");
    let listed = bulkhead_validate::known_tenants(&mut tenant_db.admin_connection().await)
        .await
        .expect("tenants");
    assert_eq!(listed, [known]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citus_rules_name_reference_tables_and_refuse_what_cannot_be_distributed() {
    let task = &bulkhead_task::SCHEMA;
    let db = test_database(task).await;
    let findings = check(
        &db,
        task,
        Some(&[]),
        Options {
            citus: true,
            ..Options::default()
        },
    )
    .await;
    assert!(!failed(&findings), "{}", table(&findings));
    let distributed = findings
        .iter()
        .filter(|f| f.rule == Rule::Citus && f.detail.starts_with("distributed"))
        .count();
    assert!(distributed >= 8, "{}", table(&findings));
    // A reference table pointing at a tenant table, and a nullable tenant id.
    let db = broken(
        task,
        "CREATE TABLE labels (id uuid PRIMARY KEY, task_tenant uuid, task_id uuid,
             CONSTRAINT labels_task FOREIGN KEY (task_tenant, task_id) REFERENCES tasks (tenant_id, id));
         CREATE TABLE notes (tenant_id uuid, id uuid, CONSTRAINT notes_key UNIQUE (tenant_id, id));
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY; ALTER TABLE notes FORCE ROW LEVEL SECURITY;",
    )
    .await;
    let plain = check(&db, task, Some(&[]), Options::default()).await;
    assert!(
        !failed(&plain),
        "without --citus both are fine:\n{}",
        table(&plain)
    );
    let mut got = failures(
        &check(
            &db,
            task,
            Some(&[]),
            Options {
                citus: true,
                ..Options::default()
            },
        )
        .await,
    );
    got.sort();
    assert_eq!(
        got,
        [
            (Rule::Citus, "labels_task".to_owned()),
            (Rule::Citus, "notes".to_owned())
        ]
    );
}

//! The runtime-role rules of `bulkhead validate`, each broken on purpose and
//! put back. Roles belong to the whole cluster, so this is a test process (and
//! cluster) of its own, and one test that breaks them one after another.

use bulkhead_postgres::testing::test_database;
use bulkhead_validate::{Options, Rule, failed, table, validate, verify_runtime};
use diesel_async::SimpleAsyncConnection as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_role_that_could_escape_is_caught() {
    let schema = &bulkhead_task::SCHEMA;
    let db = test_database(schema).await;
    let mut admin = db.admin_connection().await;
    let cases = [
        (
            "ALTER ROLE task_app BYPASSRLS",
            "ALTER ROLE task_app NOBYPASSRLS",
            "task_app",
            "bypasses row-level security",
        ),
        (
            "ALTER ROLE task_app SUPERUSER",
            "ALTER ROLE task_app NOSUPERUSER",
            "task_app",
            "is a superuser",
        ),
        (
            "ALTER ROLE task_app CREATEROLE",
            "ALTER ROLE task_app NOCREATEROLE",
            "task_app",
            "may create roles",
        ),
        (
            "ALTER ROLE task_owner BYPASSRLS",
            "ALTER ROLE task_owner NOBYPASSRLS",
            "task_owner",
            "binds it no more",
        ),
        (
            "GRANT task_platform TO task_app",
            "REVOKE task_platform FROM task_app",
            "task_app",
            "is a member of task_platform",
        ),
        (
            "CREATE TABLE scratch (); ALTER TABLE scratch OWNER TO task_platform",
            "DROP TABLE scratch",
            "task_platform",
            "owns",
        ),
    ];
    for (break_it, mend, role, says) in cases {
        admin.batch_execute(break_it).await.expect(break_it);
        let findings = validate(
            &mut db.admin_connection().await,
            schema,
            Some(&[]),
            Options::default(),
        )
        .await
        .expect("validate");
        let failing: Vec<_> = findings.iter().filter(|f| !f.ok).collect();
        assert_eq!(failing.len(), 1, "{break_it}:\n{}", table(&findings));
        assert_eq!(failing[0].rule, Rule::RuntimeRole);
        assert_eq!(failing[0].object, role);
        assert!(
            failing[0].detail.contains(says),
            "{break_it}: {}",
            failing[0].detail
        );
        // The start-up check, as the runtime role, refuses it too.
        let err = verify_runtime(&db.app_db(1).await, schema)
            .await
            .expect_err(break_it)
            .to_string();
        assert!(
            err.contains(&format!("runtime_role {role}: ")),
            "{break_it}: {err}"
        );
        assert!(err.contains(says), "{break_it}: {err}");
        admin.batch_execute(mend).await.expect(mend);
        let findings = validate(
            &mut db.admin_connection().await,
            schema,
            Some(&[]),
            Options::default(),
        )
        .await
        .expect("validate");
        assert!(!failed(&findings), "after {mend}:\n{}", table(&findings));
        verify_runtime(&db.app_db(1).await, schema)
            .await
            .unwrap_or_else(|e| panic!("after {mend}: {e}"));
    }
}

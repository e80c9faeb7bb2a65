//! The start-up check (`verify_runtime`): the rules of `bulkhead validate`
//! but the orphans, read as the runtime role, plus the roles each pool really
//! connects as. (Each rule broken on purpose is in `rules.rs` and `roles.rs`,
//! which run this check beside `validate` on every case.)

use bulkhead_db::{Db, PoolConfig};
use bulkhead_postgres::testing::test_database;
use bulkhead_validate::verify_runtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_starts_on_its_database_as_migrated() {
    for schema in [
        &bulkhead_auth::SCHEMA,
        &bulkhead_tenant::SCHEMA,
        &bulkhead_task::SCHEMA,
        &bulkhead_audit::SCHEMA,
    ] {
        let db = test_database(schema).await;
        let report = verify_runtime(&db.app_db(1).await, schema)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", schema.service()));
        assert_eq!(report.role, schema.app_role());
        assert_eq!(report.platform_role, Some(schema.platform_role()));
        assert!(report.checks > report.tenant_tables.len());
        if schema.service() == "task" {
            for table in ["tasks", "bookings", "services"] {
                assert!(
                    report.tenant_tables.iter().any(|t| t == table),
                    "{table}: {:?}",
                    report.tenant_tables
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_connected_as_other_roles_are_refused() {
    let schema = &bulkhead_task::SCHEMA;
    let db = test_database(schema).await;
    let config = PoolConfig::default();

    let owner = Db::connect(&db.owner_url, &config)
        .await
        .expect("owner pool");
    let err = verify_runtime(&owner, schema)
        .await
        .expect_err("a runtime pool as the owner must be refused")
        .to_string();
    assert!(
        err.contains("the runtime pool connects as task_owner, not task_app"),
        "{err}"
    );

    let swapped = Db::connect(&db.platform_url, &config)
        .await
        .expect("pool")
        .with_platform(&db.app_url, &config)
        .await
        .expect("pool");
    let err = verify_runtime(&swapped, schema)
        .await
        .expect_err("swapped URLs must be refused")
        .to_string();
    assert!(
        err.contains("the runtime pool connects as task_platform, not task_app"),
        "{err}"
    );
    assert!(
        err.contains("the platform pool connects as task_app, not task_platform"),
        "{err}"
    );

    // A runtime pool alone (no platform pool) is checked as such.
    let report = verify_runtime(&db.runtime_only_db(1).await, schema)
        .await
        .expect("the runtime role alone is safe");
    assert_eq!(report.platform_role, None);
}

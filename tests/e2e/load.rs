//! The load generator (`benches/shared/load.rs`, run at full size by
//! `benches/load.rs`) at a small fixed size: every operation of its mix runs
//! under concurrent calls from several tenants, and no answer holds what
//! another tenant created.

use bulkhead::services::ServiceKind;
#[path = "../benches/shared/load.rs"]
mod generator;
use generator::{Channels, LoadConfig};

use super::support::spawn_suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_open_loop_run_leaks_nothing() {
    // Arrange: the login limits as by default (18 logins fit in their burst).
    let suite = spawn_suite().await;
    let channels = Channels {
        auth: suite.channel(ServiceKind::Auth),
        tenant: suite.channel(ServiceKind::Tenant),
        task: suite.channel(ServiceKind::Task),
        audit: suite.channel(ServiceKind::Audit),
    };
    let config = LoadConfig {
        tenants: 6,
        users_per_tenant: 3,
        rate_per_second: 200,
        requests: 600,
        // Fixed: the same calls on every run.
        seed: 13,
    };
    let world = generator::setup(&channels, &suite.operator_token(), &config).await;

    // Act.
    let report = generator::run(&world, &config).await;
    report.print();

    // Assert.
    assert_eq!(report.leaks, 0, "leaks: {:#?}", report.leak_examples);
    assert_eq!(report.sent, 600);
    assert!(
        report.errors.is_empty(),
        "errors by code: {:?}",
        report.errors
    );
    for op in generator::OPERATIONS {
        assert!(
            report
                .per_op
                .get(op)
                .is_some_and(|latency| !latency.is_empty()),
            "{op} never ran"
        );
    }
}

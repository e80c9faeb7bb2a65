//! The whole suite under an open-loop mix of calls from many tenants at
//! once, with a leak check on every answer (issue #13, item 3; the generator
//! is `bulkhead_e2e::load`). Fails (exit status 1) when any answer held what
//! another tenant created.
//!
//! Run: `cargo bench -p bulkhead-e2e --bench load`, sized by `LOAD_TENANTS`
//! (50), `LOAD_USERS` per tenant (4), `LOAD_RATE` calls per second (400),
//! `LOAD_REQUESTS` (100000) and `LOAD_SEED` (random; printed).

#[path = "../e2e/support.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "shared with the e2e tests, which use the rest of it"
)]
mod support;

use std::time::Instant;

use bulkhead::services::ServiceKind;
#[path = "shared/load.rs"]
mod load;
use load::{Channels, LoadConfig};

/// `name` from the environment (`_` allowed as a digit separator), else `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text}: not a number")),
        Err(_) => default,
    }
}

#[tokio::main]
async fn main() {
    let config = LoadConfig {
        tenants: env_or("LOAD_TENANTS", 50),
        users_per_tenant: env_or("LOAD_USERS", 4),
        rate_per_second: env_or("LOAD_RATE", 400),
        requests: env_or("LOAD_REQUESTS", 100_000),
        seed: env_or("LOAD_SEED", rand::random()),
    };
    // The login limits stay on, as deployed, but wide enough that the
    // set-up's logins (all from this one address) go through in the burst, a
    // quarter of the minute's rate: 50 × 4 = 200 logins < 1,200 / 4. A larger
    // set-up waits as the limits' RetryInfo says.
    let limits = bulkhead_auth::LimitsConfig {
        per_peer_per_minute: 1_200,
        ..bulkhead_auth::LimitsConfig::default()
    };
    // The outbox relays paced as deployed, not as the tests pace them.
    let suite = support::spawn_suite_as_deployed(limits).await;
    let channels = Channels {
        auth: suite.channel(ServiceKind::Auth),
        tenant: suite.channel(ServiceKind::Tenant),
        task: suite.channel(ServiceKind::Task),
        audit: suite.channel(ServiceKind::Audit),
    };
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "Load: {} tenants × {} users, {} calls at {}/s open loop, seed {}, {cores} cores",
        config.tenants,
        config.users_per_tenant,
        config.requests,
        config.rate_per_second,
        config.seed
    );
    let started = Instant::now();
    let world = load::setup(&channels, &suite.operator_token(), &config).await;
    println!(
        "  set-up: {} users created and logged in, in {:.1} s",
        config.tenants * config.users_per_tenant,
        started.elapsed().as_secs_f64()
    );
    let report = load::run(&world, &config).await;
    report.print();
    println!(
        "Reproduce: LOAD_TENANTS={} LOAD_USERS={} LOAD_RATE={} LOAD_REQUESTS={} LOAD_SEED={} cargo bench -p bulkhead-e2e --bench load",
        config.tenants,
        config.users_per_tenant,
        config.rate_per_second,
        config.requests,
        config.seed
    );
    suite.suite.stop().await;
    if report.leaks > 0 {
        eprintln!(
            "{} answers held another tenant's data: see the leaks above",
            report.leaks
        );
        std::process::exit(1);
    }
}

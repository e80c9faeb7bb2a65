//! Logins under load, with Argon2id at OWASP parameters on this machine's cores,
//! and a cheap RPC (`WhoAmI`) on the same server while logins flood it: the cheap
//! RPC must stay fast (hashing runs on blocking threads behind a semaphore).
//!
//! Run: `cargo bench -p bulkhead-e2e --bench auth_load`.

use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_auth::Existing;
#[path = "shared/stats.rs"]
mod stats;
#[path = "../e2e/support.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "shared with the e2e tests, which use the rest of it"
)]
mod support;
use stats::percentile;

use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use support::spawn_suite_with;

const USERS: usize = 32;
const LOGIN_CLIENTS: usize = 8;
const PHASE: Duration = Duration::from_secs(8);
const PASSWORD: &str = "a password long enough";

fn summary(mut millis: Vec<f64>) -> String {
    millis.sort_by(f64::total_cmp);
    format!(
        "n {:>6}  p50 {:>8.2} ms  p99 {:>8.2} ms",
        millis.len(),
        percentile(&millis, 0.5),
        percentile(&millis, 0.99)
    )
}

fn p99(millis: &[f64]) -> f64 {
    let mut sorted = millis.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.99)
}

/// How often the probe calls WhoAmI: a steady stream of cheap calls, as the
/// rest of a suite makes, not a second flood.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// WhoAmI every [`PROBE_EVERY`] until `until`, open loop: each call starts on
/// schedule whether or not the one before has answered, and its latency
/// counts from then (a stall is not hidden by waiting for it: no coordinated
/// omission). A closed loop here ran ~700 calls/s, a flood of its own, each
/// with a database transaction and a call to Tenant: it took the core the
/// hasher needed.
async fn whoami_for(
    client: &AuthServiceClient<tonic::transport::Channel>,
    token: &str,
    until: Instant,
) -> Vec<f64> {
    let mut ticks = tokio::time::interval(PROBE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = tokio::task::JoinSet::new();
    while Instant::now() < until {
        let scheduled = ticks.tick().await;
        let mut client = client.clone();
        let mut request = tonic::Request::new(auth::WhoAmIRequest {});
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        calls.spawn(async move {
            client.who_am_i(request).await.expect("whoami");
            scheduled.elapsed().as_secs_f64() * 1e3
        });
    }
    calls.join_all().await
}

/// Argon2id hashes per second on one core for 3 s, nothing else running.
async fn argon2_alone() -> f64 {
    tokio::task::spawn_blocking(|| {
        use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
        let argon = argon2::Argon2::default();
        let started = Instant::now();
        let mut n = 0_u32;
        while started.elapsed() < Duration::from_secs(3) {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(PASSWORD.as_bytes(), &salt)
                .expect("hash");
            n += 1;
        }
        f64::from(n) / started.elapsed().as_secs_f64()
    })
    .await
    .expect("hashing")
}

#[tokio::main]
async fn main() {
    // The throttles would stop a benchmark from one address: raised here.
    let limits = bulkhead_auth::LimitsConfig {
        per_peer_per_minute: 1_000_000,
        sessions_per_user_per_minute: 1_000_000,
        live_sessions_per_user: bulkhead_auth::LimitsConfig::default().live_sessions_per_user,
        throttle: bulkhead_auth::ThrottleConfig {
            free_failures: 1_000_000,
            account_failures_per_hour: 1_000_000,
            network_failures_per_hour: 1_000_000,
            ..bulkhead_auth::ThrottleConfig::default()
        },
    };
    let suite = spawn_suite_with(limits).await;
    let db = suite.databases["auth"].app_db(4).await;
    let endpoint = |kind| {
        tonic::transport::Endpoint::from_shared(suite.endpoint(kind))
            .expect("endpoint")
            .connect_lazy()
    };
    let mut tenants = TenantServiceClient::new(endpoint(ServiceKind::Tenant));
    let operator = suite.token(&bulkhead_context::TenantUser {
        user_id: bulkhead_context::UserId::new_v7(),
        session_id: bulkhead_context::SessionId::new_v7(),
        tenant_id: bulkhead_context::TenantId::new_v7(),
        tenant_slug: "ops".into(),
        tenant_role: bulkhead_context::TenantRole::Viewer,
        platform_role: bulkhead_context::PlatformRole::SuperAdmin,
    });
    let mut emails = Vec::new();
    for i in 0..USERS {
        let email = format!("user{i}@example.com");
        let user = bulkhead_auth::bootstrap_admin(&db, &email, PASSWORD, Existing::Verify)
            .await
            .expect("user")
            .user_id();
        let mut request = tonic::Request::new(tenant::CreateTenantRequest {
            slug: format!("tenant-{i}"),
            name: format!("Tenant {i}"),
            domain: String::new(),
            owner_user_id: user.to_string(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {operator}").parse().expect("ascii"),
        );
        tenants.create_tenant(request).await.expect("tenant");
        emails.push(email);
    }
    let auth_channel = endpoint(ServiceKind::Auth);
    let mut probe = AuthServiceClient::new(auth_channel.clone());
    let token = probe
        .login(auth::LoginRequest {
            email: emails[0].clone(),
            password: PASSWORD.into(),
            tenant_slug: String::new(),
        })
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token;

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "Auth under load: {cores} cores, Argon2id m=19 MiB t=2 p=1, {LOGIN_CLIENTS} login clients, {}s phases, WhoAmI probe every {} ms (open loop)",
        PHASE.as_secs(),
        PROBE_EVERY.as_millis()
    );

    // What Argon2id allows here: one hash after another on each hashing core
    // (Auth hashes on all cores but one), nothing else running. Measured
    // right before and right after the flood (this machine's speed drifts
    // with its neighbours': the mean of the two is the ceiling).
    let hashing_cores = cores.saturating_sub(1).max(1);
    let before = argon2_alone().await;
    println!("  Argon2id alone, before     {before:.1} hashes/s per core");
    let quiet = whoami_for(&probe, &token, Instant::now() + PHASE).await;
    let quiet_p99 = p99(&quiet);
    println!("  WhoAmI alone               {}", summary(quiet));

    let until = Instant::now() + PHASE;
    let mut flood = Vec::new();
    for c in 0..LOGIN_CLIENTS {
        let mut client = AuthServiceClient::new(auth_channel.clone());
        let emails = emails.clone();
        flood.push(tokio::spawn(async move {
            let mut millis = Vec::new();
            let mut i = c;
            while Instant::now() < until {
                let started = Instant::now();
                client
                    .login(auth::LoginRequest {
                        email: emails[i % emails.len()].clone(),
                        password: PASSWORD.into(),
                        tenant_slug: String::new(),
                    })
                    .await
                    .expect("login");
                millis.push(started.elapsed().as_secs_f64() * 1e3);
                i += LOGIN_CLIENTS;
            }
            millis
        }));
    }
    let during = whoami_for(&probe, &token, until).await;
    let mut logins = Vec::new();
    for client in flood {
        logins.extend(client.await.expect("client"));
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = logins.len() as f64 / PHASE.as_secs_f64();
    println!(
        "  Login flood                {}  ({rate:.1} logins/s)",
        summary(logins)
    );
    let during_p99 = p99(&during);
    println!("  WhoAmI during the flood    {}", summary(during));
    let after = argon2_alone().await;
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let ceiling = f64::midpoint(before, after) * hashing_cores as f64;
    println!(
        "  Argon2id alone, after      {after:.1} hashes/s per core: ceiling {ceiling:.1}/s on {hashing_cores} hashing core(s)"
    );
    println!(
        "  => logins reach {:.2}x what Argon2id allows (bar: 0.9x); WhoAmI p99 during the flood is {:.1}x its p99 alone (bar: 3x)",
        rate / ceiling,
        during_p99 / quiet_p99
    );
    suite.suite.stop().await;
}

//! Logins under load, with Argon2id at OWASP parameters on this machine's cores,
//! and a cheap RPC (`WhoAmI`) on the same server while logins flood it: the cheap
//! RPC must stay fast (hashing runs on its own threads, fed by a bounded queue).
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
use support::spawn_suite_as_deployed;

const USERS: usize = 32;
const LOGIN_CLIENTS: usize = 8;
/// How long WhoAmI is probed alone.
const PHASE: Duration = Duration::from_secs(8);
/// Slices of Argon2 alone and of the flood, alternating.
const SLICE: Duration = Duration::from_secs(2);
const ROUNDS: usize = 4;
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

/// CPU seconds the service's hasher threads (`argon2-*`, in this process)
/// have used: with the logins counted, how fast a hash runs on the CPU it
/// gets, apart from how much CPU it gets.
fn hasher_cpu_seconds() -> f64 {
    let ticks: u64 = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("argon2-"))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            // After the command's closing parenthesis: state is field 3,
            // utime and stime fields 14 and 15.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    // Clock ticks of 1/100 s (USER_HZ on Linux).
    #[expect(clippy::cast_precision_loss, reason = "a duration")]
    let seconds = ticks as f64 / 100.0;
    seconds
}

/// Argon2id hashes on one core in `slice`, nothing else running.
async fn argon2_for(slice: Duration) -> u32 {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng};
        let argon = argon2::Argon2::default();
        let started = Instant::now();
        let mut n = 0_u32;
        while started.elapsed() < slice {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(PASSWORD.as_bytes(), &salt)
                .expect("hash");
            n += 1;
        }
        n
    })
    .await
    .expect("hashing")
}

/// Logs in, one call after another, until `until`; the latencies of the
/// logins that ended by then, and how many ended after it (not counted in
/// the rate).
async fn logins_until(
    mut client: AuthServiceClient<tonic::transport::Channel>,
    emails: Vec<String>,
    first: usize,
    until: Instant,
) -> (Vec<f64>, u32) {
    let (mut millis, mut late) = (Vec::new(), 0);
    let mut i = first;
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
        if Instant::now() <= until {
            millis.push(started.elapsed().as_secs_f64() * 1e3);
        } else {
            late += 1;
        }
        i += LOGIN_CLIENTS;
    }
    (millis, late)
}

#[tokio::main]
#[allow(dead_code, reason = "the report runs `run`")]
async fn main() {
    run().await;
}

/// Runs the bench, prints it, and returns its headline figures (measure,
/// value) for the report.
pub async fn run() -> Vec<(String, String)> {
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
    let suite = spawn_suite_as_deployed(limits).await;
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
        "Auth under load: {cores} cores, Argon2id m=19 MiB t=2 p=1, {LOGIN_CLIENTS} login clients, WhoAmI probe every {} ms (open loop)",
        PROBE_EVERY.as_millis()
    );
    // The set-up's own work (32 hashes, outbox deliveries) settles first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet = whoami_for(&probe, &token, Instant::now() + PHASE).await;
    let quiet_p99 = p99(&quiet);
    println!("  WhoAmI alone               {}", summary(quiet));

    // What Argon2id allows here: one hash after another on each hashing core
    // (Auth hashes on all cores but one), nothing else running. This
    // machine's speed drifts with its neighbours' (30 to 60 hashes/s within
    // minutes), so the ceiling is measured in slices alternating with slices
    // of the flood, over the same minute: a drift weighs on both sides.
    let hashing_cores = cores.saturating_sub(1).max(1);
    let (mut hashes, mut logins, mut during) = (0_u32, Vec::new(), Vec::new());
    let (mut hasher_cpu, mut hasher_wall, mut hashed) = (0.0, 0.0, 0_u32);
    for _ in 0..ROUNDS {
        hashes += argon2_for(SLICE).await;
        let until = Instant::now() + SLICE;
        let flood: Vec<_> = (0..LOGIN_CLIENTS)
            .map(|c| {
                let client = AuthServiceClient::new(auth_channel.clone());
                tokio::spawn(logins_until(client, emails.clone(), c, until))
            })
            .collect();
        let (cpu, wall) = (hasher_cpu_seconds(), Instant::now());
        during.extend(whoami_for(&probe, &token, until).await);
        for client in flood {
            let (ended, ended_late) = client.await.expect("client");
            logins.extend(ended);
            hashed += ended_late;
        }
        hasher_cpu += hasher_cpu_seconds() - cpu;
        // Until the last login in flight ended (past the slice).
        hasher_wall += wall.elapsed().as_secs_f64();
    }
    let span = SLICE.as_secs_f64() * f64::from(u32::try_from(ROUNDS).expect("a few rounds"));
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let (rate, ceiling) = (
        logins.len() as f64 / span,
        f64::from(hashes) / span * hashing_cores as f64,
    );
    println!(
        "  Argon2id alone             {:.1} hashes/s per core: ceiling {ceiling:.1}/s on {hashing_cores} hashing core(s)",
        f64::from(hashes) / span
    );
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let per_cpu_second = (logins.len() as f64 + f64::from(hashed)) / hasher_cpu;
    println!(
        "  Login flood                {}  ({rate:.1} logins/s)",
        summary(logins)
    );
    println!(
        "    the hashers were on a CPU {:.0}% of the flood, at {per_cpu_second:.1} hashes per CPU second",
        100.0 * hasher_cpu / hasher_wall / hashing_cores as f64
    );
    let during_p99 = p99(&during);
    println!("  WhoAmI during the flood    {}", summary(during));
    println!(
        "  => logins reach {:.2}x what Argon2id allows (bar: 0.9x); WhoAmI p99 during the flood is {:.1}x its p99 alone (bar: 3x)",
        rate / ceiling,
        during_p99 / quiet_p99
    );
    suite.suite.stop().await;
    vec![
        (
            "Logins (logins/s; / the Argon2id ceiling)".into(),
            format!("{rate:.1}; {:.2}x", rate / ceiling),
        ),
        (
            "WhoAmI p99 during a login flood / alone".into(),
            format!("{:.1}x", during_p99 / quiet_p99),
        ),
    ]
}

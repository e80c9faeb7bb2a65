//! A noisy neighbour's cost to a quiet tenant (issue #13, item 2), in one run
//! on one machine, release build:
//!
//! the quiet tenant calls Task at a fixed pace (open loop: latency counts from
//! the moment each call was due, so a slow answer cannot hide the ones queued
//! behind it) for a phase alone, then for a phase while another tenant floods
//! Task at ten times its rate limit. The figure is the quiet tenant's p99
//! with the flood over its p99 alone (bar: 2×), in each of three rounds, and
//! their median.
//!
//! Run: `cargo bench -p bulkhead-e2e --bench fairness`.

#[path = "shared/stats.rs"]
mod stats;
#[path = "../e2e/support.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "shared with the e2e tests, which use the rest of it"
)]
mod support;
use stats::{percentile, sorted};

use std::num::NonZeroU32;
use std::time::Duration;

use bulkhead::services::ServiceKind;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::FairnessOverrides;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_testkit::bearer;
use tonic::Code;
use tonic::transport::Channel;

/// The noisy tenant's limit (requests per second), and the flood: ten times it.
const RATE: u32 = 50;
const FLOOD_EVERY: Duration = Duration::from_millis(2);
/// The quiet tenant's pace: 40 calls a second.
const QUIET_EVERY: Duration = Duration::from_millis(25);
const PHASE: Duration = Duration::from_secs(6);
const ROUNDS: usize = 3;

fn member_of(tenant: TenantId, slug: &str) -> TenantUser {
    TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: tenant,
        tenant_slug: slug.into(),
        tenant_role: TenantRole::Admin,
        platform_role: PlatformRole::User,
    }
}

/// Calls of one tenant at a fixed pace for `PHASE`, alternating `GetTask`
/// and `ListTasks`: each call's latency from when it was due (ms), and the
/// codes of those that failed.
async fn paced(
    tasks: &TaskServiceClient<Channel>,
    token: &str,
    task_id: &str,
    every: Duration,
) -> (Vec<f64>, Vec<Code>) {
    let started = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut n: u32 = 0;
    loop {
        let due = started + every * n;
        if due.duration_since(started) >= PHASE {
            break;
        }
        tokio::time::sleep_until(due).await;
        let (mut tasks, token, task_id) = (tasks.clone(), token.to_owned(), task_id.to_owned());
        let get = n.is_multiple_of(2);
        calls.spawn(async move {
            let result = if get {
                tasks
                    .get_task(bearer(&token, task::GetTaskRequest { task_id }))
                    .await
                    .map(drop)
            } else {
                tasks
                    .list_tasks(bearer(
                        &token,
                        task::ListTasksRequest {
                            page_size: 20,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop)
            };
            (
                due.elapsed().as_secs_f64() * 1e3,
                result.err().map(|s| s.code()),
            )
        });
        n += 1;
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for (latency, error) in calls.join_all().await {
        latencies.push(latency);
        errors.extend(error);
    }
    (latencies, errors)
}

async fn seed(tasks: &mut TaskServiceClient<Channel>, token: &str, n: usize) -> String {
    let mut first = String::new();
    for i in 0..n {
        let created = tasks
            .create_task(bearer(
                token,
                task::CreateTaskRequest {
                    title: format!("task {i}"),
                    ..Default::default()
                },
            ))
            .await
            .expect("seed")
            .into_inner()
            .task
            .expect("task");
        if first.is_empty() {
            first = created.id;
        }
        // Within the tenant's rate.
        tokio::time::sleep(QUIET_EVERY).await;
    }
    first
}

#[tokio::main]
async fn main() {
    let suite = support::spawn_suite_with_task_fairness(FairnessOverrides {
        tenant_rate_per_second: NonZeroU32::new(RATE),
        ..FairnessOverrides::default()
    })
    .await;
    let mut tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    let (noisy, quiet) = (TenantId::new_v7(), TenantId::new_v7());
    let noisy_token = suite.token(&member_of(noisy, "noisy"));
    let quiet_token = suite.token(&member_of(quiet, "quiet"));
    // The quiet tenant's calls are under the same limit: it stays below it.
    assert!(Duration::from_secs(1).as_secs_f64() / QUIET_EVERY.as_secs_f64() < f64::from(RATE));
    let quiet_task = seed(&mut tasks, &quiet_token, 60).await;
    let noisy_task = seed(&mut tasks, &noisy_token, 60).await;
    // Warm-up: connections, statement caches, token cache.
    let _ = paced(&tasks, &quiet_token, &quiet_task, QUIET_EVERY).await;

    println!(
        "Task, release build, {} cores; the quiet tenant at {:.0} calls/s (GetTask and ListTasks of 20), \
         the noisy one at {:.0} calls/s against its limit of {RATE}/s; {}s phases",
        std::thread::available_parallelism().map_or(0, usize::from),
        1.0 / QUIET_EVERY.as_secs_f64(),
        1.0 / FLOOD_EVERY.as_secs_f64(),
        PHASE.as_secs()
    );
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let (alone, alone_errors) = paced(&tasks, &quiet_token, &quiet_task, QUIET_EVERY).await;
        let flood = tokio::spawn({
            let (tasks, token, task_id) = (tasks.clone(), noisy_token.clone(), noisy_task.clone());
            async move { paced(&tasks, &token, &task_id, FLOOD_EVERY).await }
        });
        let (loaded, loaded_errors) = paced(&tasks, &quiet_token, &quiet_task, QUIET_EVERY).await;
        let (noisy_latencies, noisy_errors) = flood.await.expect("flood");
        let refused = noisy_errors
            .iter()
            .filter(|c| **c == Code::ResourceExhausted)
            .count();
        let (alone, loaded) = (sorted(alone), sorted(loaded));
        let ratio = percentile(&loaded, 0.99) / percentile(&alone, 0.99);
        println!(
            "round {round}: quiet alone p50 {:.2} ms p99 {:.2} ms ({} calls, {} errors); \
             during the flood p50 {:.2} ms p99 {:.2} ms ({} calls, {} errors); \
             noisy: {} calls, {refused} refused (RESOURCE_EXHAUSTED), {} other errors; p99 ratio {ratio:.2}x",
            percentile(&alone, 0.5),
            percentile(&alone, 0.99),
            alone.len(),
            alone_errors.len(),
            percentile(&loaded, 0.5),
            percentile(&loaded, 0.99),
            loaded.len(),
            loaded_errors.len(),
            noisy_latencies.len(),
            noisy_errors.len() - refused,
        );
        assert!(
            alone_errors.is_empty() && loaded_errors.is_empty(),
            "the quiet tenant got errors: {alone_errors:?} {loaded_errors:?}"
        );
        ratios.push(ratio);
    }
    let ratios = sorted(ratios);
    let median = percentile(&ratios, 0.5);
    println!(
        "quiet tenant's p99 with the flood / alone, median of {ROUNDS}: {median:.2}x (bar: 2x) -> {}",
        if median <= 2.0 { "met" } else { "NOT met" }
    );
    suite.suite.stop().await;
}

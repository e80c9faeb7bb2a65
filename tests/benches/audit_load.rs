//! The Audit service under load, in one run on one machine:
//!
//! * append throughput through the outbox relay: audit messages seeded in
//!   Task's outbox (as Task writes them), delivered by Task's relay to Audit's
//!   AppendEvents, which chains them; events stored per second (goal ≥ 10,000);
//! * `QueryEvents` latency by time range over 10⁶ events of one tenant;
//! * `ExportEvents` of those 10⁶ events: rate, and this process's peak memory
//!   before and after (the suite runs in this process; the separate-process
//!   comparison of 20,000 and 200,000 events is `services/bulkhead`'s test).
//!
//! Run: `cargo bench -p bulkhead-e2e --bench audit_load`.

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

use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_proto::audit::v1 as pb;
use bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient;
use bulkhead_testkit::bearer;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _, SimpleAsyncConnection as _};
use support::spawn_suite;

const APPENDED: u64 = 100_000;
const APPEND_TENANTS: u64 = 100;
const APPEND_ROUNDS: usize = 3;
const STORED: u64 = 1_000_000;
const QUERY_SAMPLES: usize = 200;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, query: &str) -> i64 {
    diesel::sql_query(query)
        .get_result::<Count>(conn)
        .await
        .expect("count")
        .n
}

fn vm_hwm_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

#[tokio::main]
#[allow(dead_code, reason = "the report runs `run`")]
async fn main() {
    run(std::env::var_os("AUDIT_LOAD_APPEND_ONLY").is_some()).await;
}

/// Runs the bench (only the append figures when `append_only`), prints it,
/// and returns its headline figures (measure, value) for the report.
pub async fn run(append_only: bool) -> Vec<(String, String)> {
    let mut figures: Vec<(String, String)> = Vec::new();
    let suite = spawn_suite().await;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("Audit under load: {cores} cores, release build recommended");

    // --- Append throughput through the relay ----------------------------------------
    let mut task_db = suite.databases["task"].admin_connection().await;
    let mut audit_db = suite.databases["audit"].admin_connection().await;
    // Chain heads count the events cheaply (a count(*) of events would load
    // the database it measures).
    let stored = "SELECT COALESCE(sum(sequence), 0)::bigint AS n FROM chain_heads";
    let per_tenant = APPENDED / APPEND_TENANTS;
    let mut rates = Vec::new();
    for round in 0..APPEND_ROUNDS {
        let before = count(&mut audit_db, stored).await;
        task_db
            .batch_execute(&format!(
                "INSERT INTO outbox (tenant_id, seq, id, topic, payload)
                 SELECT t.id, g, gen_random_uuid(), 'audit', jsonb_build_object(
                          'action', 'task.created', 'tenant_id', t.id, 'resource_type', 'task',
                          'resource_id', gen_random_uuid(), 'actor_user_id', gen_random_uuid(),
                          'request_id', 'bench-' || g, 'trace_id', null, 'actor_service', null,
                          'old_value', null, 'occur_time', now(),
                          'new_value', jsonb_build_object('title', 'task ' || g, 'status', 'PENDING'))
                   FROM (SELECT md5('bench-{round}-' || i)::uuid AS id
                           FROM generate_series(1, {APPEND_TENANTS}) i) t,
                        generate_series(1, {per_tenant}) g;
                 ANALYZE outbox;"
            ))
            .await
            .expect("seed the outbox");
        let started = Instant::now();
        let target = before + i64::try_from(APPENDED).expect("small");
        loop {
            let arrived = count(&mut audit_db, stored).await;
            if arrived >= target {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "only {arrived} of {target} events arrived in ten minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        #[expect(clippy::cast_precision_loss, reason = "a rate")]
        rates.push(APPENDED as f64 / started.elapsed().as_secs_f64());
    }
    let config = bulkhead_outbox::RelayConfig::default();
    println!(
        "\nAppend through the relay: {APPENDED} events of {APPEND_TENANTS} tenants, {APPEND_ROUNDS} rounds: median {:.0} events/s (rounds: {}; goal >= 10,000); one relay, {} rounds in flight, batches of {}",
        percentile(&sorted(rates.clone()), 0.5),
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" "),
        config.concurrency,
        config.batch_size
    );
    let unverified = count(
        &mut audit_db,
        "SELECT count(*) AS n FROM events e WHERE e.prev_hash <> COALESCE(
           (SELECT p.hash FROM events p WHERE p.tenant_id = e.tenant_id AND p.sequence = e.sequence - 1),
           '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)",
    )
    .await;
    println!("  chain links broken after the run: {unverified}");
    figures.push((
        "Audit append through the relay (events/s, median of 3)".into(),
        format!("{:.0}", percentile(&sorted(rates), 0.5)),
    ));
    figures.push(("Audit chain links broken".into(), unverified.to_string()));
    if append_only {
        return figures;
    }

    // --- QueryEvents by time range over 10^6 events ---------------------------------
    let tenant = TenantId::new_v7();
    audit_db
        .batch_execute(&format!(
            "INSERT INTO events (tenant_id, sequence, id, source_service, action, resource_type,
                                 resource_id, actor_user_id, new_value, occur_time, prev_hash, hash)
             SELECT '{tenant}', g, gen_random_uuid(), 'task',
                    (ARRAY['task.created', 'task.updated', 'task.deleted', 'auth.login'])[1 + g % 4],
                    'task', (g % 5000)::text, md5((g % 50)::text),
                    jsonb_build_object('title', 'task ' || g, 'status', 'PENDING'),
                    now() - interval '365 days' + g * interval '365 days' / {STORED},
                    '\\x00'::bytea, sha256(g::text::bytea)
               FROM generate_series(1, {STORED}) g;
             INSERT INTO chain_heads VALUES ('{tenant}', {STORED}, sha256('{STORED}'::bytea));
             ANALYZE events;"
        ))
        .await
        .expect("seed events");
    let token = suite.token(&TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: tenant,
        tenant_slug: "big".into(),
        tenant_role: TenantRole::Owner,
        platform_role: PlatformRole::User,
    });
    let mut audit = AuditServiceClient::new(suite.channel(ServiceKind::Audit))
        .max_decoding_message_size(8 * 1024 * 1024);
    let now = chrono::Utc::now();
    let stamp = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    };
    println!(
        "\nQueryEvents, page of 100, one tenant holding {STORED} events over a year (median / p99 of {QUERY_SAMPLES}, ms):"
    );
    for (label, days, action) in [
        ("no time range (newest)", None, ""),
        ("the last hour", Some(1.0 / 24.0), ""),
        ("the last day", Some(1.0), ""),
        ("the last 30 days", Some(30.0), ""),
        ("a day 200 days ago", Some(-200.0), ""),
        ("the last 30 days, one action", Some(30.0), "task.deleted"),
    ] {
        let filter = days.map(|d: f64| {
            #[expect(clippy::cast_possible_truncation, reason = "seconds")]
            let span = chrono::Duration::seconds((d.abs() * 86_400.0) as i64);
            if d < 0.0 {
                // one day, starting |d| days ago
                (now - span, now - span + chrono::Duration::days(1))
            } else {
                (now - span, now)
            }
        });
        let mut millis = Vec::with_capacity(QUERY_SAMPLES);
        let mut returned = 0;
        for _ in 0..QUERY_SAMPLES {
            let request = pb::QueryEventsRequest {
                filter: Some(pb::AuditEventFilter {
                    start_time: filter.map(|(s, _)| stamp(s)),
                    end_time: filter.map(|(_, e)| stamp(e)),
                    action: action.into(),
                    ..Default::default()
                }),
                page_size: 100,
                ..Default::default()
            };
            let started = Instant::now();
            returned = audit
                .query_events(bearer(&token, request))
                .await
                .expect("query")
                .into_inner()
                .events
                .len();
            millis.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let millis = sorted(millis);
        println!(
            "  {label:<32} {:>7.2} / {:>7.2}   ({returned} events)",
            percentile(&millis, 0.5),
            percentile(&millis, 0.99)
        );
    }

    // --- ExportEvents of 10^6 events --------------------------------------------------
    let hwm_before = vm_hwm_mib();
    let started = Instant::now();
    let mut stream = audit
        .export_events(bearer(&token, pb::ExportEventsRequest::default()))
        .await
        .expect("export")
        .into_inner();
    let (mut events, mut bytes) = (0_usize, 0_usize);
    while let Some(message) = stream.message().await.expect("batch") {
        events += message.events.len();
        bytes += prost::Message::encoded_len(&message);
    }
    let elapsed = started.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let (rate, mib_s) = (events as f64 / elapsed, bytes as f64 / elapsed / 1e6);
    println!(
        "\nExportEvents of {events} events ({} MB): {elapsed:.1} s = {rate:.0} events/s, {mib_s:.1} MB/s",
        bytes / 1_000_000
    );
    println!(
        "  peak resident memory of this process (suite + client): {hwm_before} MiB before, {} MiB after",
        vm_hwm_mib()
    );
    figures
}

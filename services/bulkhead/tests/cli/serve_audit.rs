//! `bulkhead serve audit` as its own process: an export streams in bounded
//! memory. Events are seeded with SQL; the peak resident memory (VmHWM) of the
//! process after a 20,000-event export and after a 200,000-event one (ten
//! times the events, about 200 MiB more of them) must stay close.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_postgres::testing::test_database;
use bulkhead_proto::audit::v1 as pb;
use bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient;
use bulkhead_testkit::{Tokens, bearer};
use diesel_async::SimpleAsyncConnection as _;

const MIB: u64 = 1024 * 1024;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Peak resident memory of `pid`, in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    kib * 1024
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Seeds `n` events of about 1 KiB each in `tenant`'s chain (hashes are not
/// checked by an export) and its head.
fn seed(tenant: TenantId, n: u64) -> String {
    format!(
        "INSERT INTO events (tenant_id, sequence, id, source_service, action, resource_type,
                             resource_id, new_value, occur_time, prev_hash, hash)
         SELECT '{tenant}', g, gen_random_uuid(), 'task', 'task.created', 'task', g::text,
                jsonb_build_object('title', 'task ' || g, 'description', repeat('x', 1000)),
                now(), '\\x00'::bytea, sha256(g::text::bytea)
           FROM generate_series(1, {n}) g;
         INSERT INTO chain_heads VALUES ('{tenant}', {n}, sha256('{n}'::bytea));"
    )
}

async fn export(client: &mut AuditServiceClient<tonic::transport::Channel>, token: &str) -> usize {
    let mut stream = client
        .export_events(bearer(token, pb::ExportEventsRequest::default()))
        .await
        .expect("export")
        .into_inner();
    let mut events = 0;
    while let Some(message) = stream.message().await.expect("a batch") {
        events += message.events.len();
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_streams_in_bounded_memory() {
    let database = test_database(&bulkhead_audit::SCHEMA).await;
    let (small, big) = (TenantId::new_v7(), TenantId::new_v7());
    let mut admin = database.admin_connection().await;
    admin
        .batch_execute(&format!("{}{}", seed(small, 20_000), seed(big, 200_000)))
        .await
        .expect("seed");
    let tokens = Tokens::new("audit");
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("signing.pem");
    std::fs::write(&key_file, tokens.key.to_pkcs8_pem()).expect("key file");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["serve", "audit", "--listen", &format!("127.0.0.1:{port}")])
        // The test's tokens are minted with the key: no Auth to follow.
        .arg("--insecure-no-revocations")
        .args(["--database-url", &database.app_url])
        .args(["--platform-database-url", &database.platform_url])
        .arg("--signing-key-file")
        .arg(&key_file)
        .arg("--checkpoint-key-file")
        .arg(dir.path().join("checkpoint.pem"))
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"))
        .spawn()
        .expect("bulkhead serve audit starts");
    let server = Killed(child);
    let pid = server.0.id();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut client = loop {
        match tonic::transport::Endpoint::from_shared(url.clone())
            .expect("endpoint")
            .connect()
            .await
        {
            Ok(channel) => break AuditServiceClient::new(channel),
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "serve audit did not listen: {e}\n{}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            ),
        }
    };
    let owner = |tenant: TenantId| {
        tokens.access(&TenantUser {
            user_id: UserId::new_v7(),
            session_id: SessionId::new_v7(),
            tenant_id: tenant,
            tenant_slug: "t".into(),
            tenant_role: TenantRole::Owner,
            platform_role: PlatformRole::User,
        })
    };
    let at_start = vm_hwm(pid);
    // Each export also appends its own `audit.exported` event.
    assert_eq!(export(&mut client, &owner(small)).await, 20_001);
    let after_small = vm_hwm(pid);
    assert_eq!(export(&mut client, &owner(big)).await, 200_001);
    let after_big = vm_hwm(pid);
    println!(
        "serve audit VmHWM: {} MiB at start, {} MiB after 20,000 events, {} MiB after 200,000",
        at_start / MIB,
        after_small / MIB,
        after_big / MIB
    );
    // Held in memory, the 180,000 more events would add about 200 MiB.
    assert!(
        after_big <= after_small + 32 * MIB,
        "the peak grew by {} MiB from 20,000 to 200,000 events",
        (after_big - after_small) / MIB
    );
}

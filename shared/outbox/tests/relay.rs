//! The outbox against a real Postgres: messages commit with their change, and the
//! relay delivers every one exactly once, in commit order per tenant, through a
//! sink that fails before it works, with writers running concurrently.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_context::TenantId;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_db::{Db, DbError, TenantConn};
use bulkhead_outbox::{Message, Relay, RelayConfig, Sink, SinkError, SinkFuture, enqueue};
use bulkhead_postgres::testing::test_database;
use diesel::sql_types::Uuid as SqlUuid;
use diesel_async::RunQueryDsl;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use serde_json::json;
use uuid::Uuid;

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("tests/sample_migrations");
static WRITER: ServiceSchema =
    ServiceSchema::new("writer", &MIGRATIONS).with_shared(&[&bulkhead_outbox::MIGRATIONS]);

const TOPIC: &str = "audit";

/// Fails its first `failures` deliveries, then records every message it takes.
#[derive(Default)]
struct FlakySink {
    failures: usize,
    calls: AtomicUsize,
    taken: Mutex<Vec<Message>>,
}

impl Sink for FlakySink {
    fn deliver<'a>(&'a self, messages: &'a [Message]) -> SinkFuture<'a> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(SinkError("audit unavailable".into()));
            }
            self.taken.lock().expect("lock").extend_from_slice(messages);
            Ok(())
        })
    }
}

fn fast() -> RelayConfig {
    RelayConfig {
        batch_size: 50,
        poll_interval: Duration::from_millis(5),
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
    }
}

async fn db() -> Db {
    let database = test_database(&WRITER).await;
    database.app_db(16).await
}

/// A change and its message, in one transaction.
async fn change(tx: TenantConn<'_>, payload: serde_json::Value) -> Result<Uuid, DbError> {
    diesel::sql_query("INSERT INTO changes (tenant_id, id) VALUES ($1, $2)")
        .bind::<SqlUuid, _>(tx.tenant_id().as_uuid())
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .execute(&mut tx.pg())
        .await?;
    enqueue(tx, TOPIC, &payload).await
}

async fn drain(relay: &Relay, until: impl Fn() -> bool) {
    let started = Instant::now();
    while !until() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "relay did not drain"
        );
        relay.run_once().await.expect("round");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_is_delivered_once_in_commit_order_per_tenant() {
    let db = db().await;
    let sink = Arc::new(FlakySink {
        failures: 3,
        ..FlakySink::default()
    });
    let relay = Arc::new(Relay::new(db.clone(), fast()).route(TOPIC, sink.clone()));
    let tenants: Vec<TenantId> = (0..3).map(|_| TenantId::new_v7()).collect();
    let per_writer = 20;

    // Two writers per tenant, interleaving their commits, while the relay runs.
    let mut writers = Vec::new();
    for (t, tenant) in tenants.iter().enumerate() {
        for w in 0..2 {
            let db = db.clone();
            let tenant = *tenant;
            writers.push(tokio::spawn(async move {
                for n in 0..per_writer {
                    db.tenant_tx(tenant, async |tx| {
                        let id = change(tx, json!({"writer": format!("{t}-{w}"), "n": n})).await?;
                        if (n + w) % 3 == 0 {
                            // Hold the transaction open: commits come out of order.
                            tokio::time::sleep(Duration::from_millis(3)).await;
                        }
                        Ok::<_, DbError>(id)
                    })
                    .await
                    .expect("write");
                }
            }));
        }
    }
    let relaying = {
        let relay = relay.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                relay.run_once().await.expect("round");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    relaying.await.expect("relay task");
    let total = tenants.len() * 2 * per_writer;
    drain(&relay, || sink.taken.lock().expect("lock").len() >= total).await;
    relay.run_once().await.expect("a last round finds nothing");

    let taken = sink.taken.lock().expect("lock").clone();
    assert!(
        AtomicUsize::load(&sink.calls, Ordering::SeqCst) > 3,
        "the sink failed before it worked"
    );
    assert_eq!(taken.len(), total, "nothing lost, nothing twice");
    let ids: HashSet<Uuid> = taken.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), total, "each message exactly once");

    let mut seqs: HashMap<TenantId, Vec<i64>> = HashMap::new();
    let mut per_writer_order: HashMap<String, Vec<i64>> = HashMap::new();
    for m in &taken {
        seqs.entry(m.tenant_id).or_default().push(m.seq);
        let writer = m.payload["writer"].as_str().expect("writer").to_owned();
        per_writer_order
            .entry(writer)
            .or_default()
            .push(m.payload["n"].as_i64().expect("n"));
    }
    for tenant in &tenants {
        let expected: Vec<i64> = (1..=i64::try_from(2 * per_writer).expect("small")).collect();
        assert_eq!(seqs[tenant], expected, "gap-free, in commit order");
    }
    for (writer, ns) in per_writer_order {
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, sorted, "writer {writer}'s messages in its commit order");
    }
    let stats = relay.stats().await.expect("stats");
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.oldest_age, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_committed_late_is_not_skipped() {
    let db = db().await;
    let sink = Arc::new(FlakySink::default());
    let relay = Relay::new(db.clone(), fast()).route(TOPIC, sink.clone());
    let (a, b) = (TenantId::new_v7(), TenantId::new_v7());

    // A's first transaction writes its message, then waits before committing.
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let slow = {
        let db = db.clone();
        tokio::spawn(async move {
            db.tenant_tx(a, async |tx| {
                let id = change(tx, json!({"n": "a-first"})).await?;
                wait.await.expect("released");
                Ok::<_, DbError>(id)
            })
            .await
            .expect("slow write")
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A's second transaction starts later: it waits for the first (sequence lock).
    let second = {
        let db = db.clone();
        tokio::spawn(async move {
            db.tenant_tx(a, async |tx| change(tx, json!({"n": "a-second"})).await)
                .await
                .expect("second write")
        })
    };
    db.tenant_tx(b, async |tx| change(tx, json!({"n": "b"})).await)
        .await
        .expect("b write");

    let report = relay.run_once().await.expect("round");
    assert_eq!(report.delivered, 1, "only B's committed message so far");
    assert_eq!(sink.taken.lock().expect("lock")[0].tenant_id, b);

    release.send(()).expect("release");
    let first_id = slow.await.expect("slow");
    let second_id = second.await.expect("second");
    drain(&relay, || sink.taken.lock().expect("lock").len() >= 3).await;
    let taken = sink.taken.lock().expect("lock").clone();
    let a_ids: Vec<Uuid> = taken
        .iter()
        .filter(|m| m.tenant_id == a)
        .map(|m| m.id)
        .collect();
    assert_eq!(
        a_ids,
        vec![first_id, second_id],
        "the late commit delivered, in commit order"
    );
}

#[tokio::test]
async fn a_rolled_back_change_leaves_no_message() {
    let db = db().await;
    let sink = Arc::new(FlakySink::default());
    let relay = Relay::new(db.clone(), fast()).route(TOPIC, sink.clone());
    let tenant = TenantId::new_v7();
    let failed = db
        .tenant_tx(tenant, async |tx| {
            change(tx, json!({"n": 1})).await?;
            Err::<(), _>(DbError::Migration(
                "the change failed after its message".into(),
            ))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(relay.run_once().await.expect("round").delivered, 0);
    assert_eq!(relay.stats().await.expect("stats").pending, 0);
}

#[tokio::test]
async fn undeliverable_messages_stay_pending_and_are_counted() {
    let db = db().await;
    // No sink for the topic (the Audit service is not there yet): nothing is dropped.
    let relay = Relay::new(db.clone(), fast());
    let tenant = TenantId::new_v7();
    for n in 0..3 {
        db.tenant_tx(tenant, async |tx| change(tx, json!({"n": n})).await)
            .await
            .expect("write");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(relay.run_once().await.expect("round").delivered, 0);
    let stats = relay.stats().await.expect("stats");
    assert_eq!(stats.pending, 3);
    assert!(stats.oldest_age.expect("an age") >= Duration::from_millis(40));

    // A tenant sees only its own outbox rows.
    let other = TenantId::new_v7();
    let visible: i64 = db
        .tenant_read(other, async |tx| {
            #[derive(diesel::QueryableByName)]
            struct Count {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let c: Count = diesel::sql_query("SELECT count(*) AS n FROM outbox")
                .get_result(&mut tx.pg())
                .await?;
            Ok::<_, DbError>(c.n)
        })
        .await
        .expect("count");
    assert_eq!(visible, 0);
}

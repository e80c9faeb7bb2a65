//! The outbox against a real Postgres: messages commit with their change, and the
//! relay delivers every one exactly once, in commit order per tenant, through a
//! sink that fails before it works, with writers running concurrently; a message
//! the receiver keeps refusing is set aside without holding back the rest (never
//! on a retry-forever topic); a hung receiver holds no locks; delivered rows are
//! pruned.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_context::TenantId;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_db::{Db, DbError, TenantConn};
use bulkhead_outbox::dead::{self, Redrive};
use bulkhead_outbox::{
    Message, OnRejection, Relay, RelayConfig, Sink, SinkError, SinkFuture, enqueue,
};
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
                return Err(SinkError::unavailable("audit unavailable"));
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
        delivery_timeout: Duration::from_secs(5),
        dead_letter_after: 3,
        ..RelayConfig::default()
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
    let relay = Arc::new(Relay::new(db.clone(), fast()).route(
        TOPIC,
        sink.clone(),
        OnRejection::DeadLetter,
    ));
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
    let relay = Relay::new(db.clone(), fast()).route(TOPIC, sink.clone(), OnRejection::DeadLetter);
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
    let relay = Relay::new(db.clone(), fast()).route(TOPIC, sink.clone(), OnRejection::DeadLetter);
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

/// Refuses messages whose payload says `"poison": true` (while `refusing`),
/// and records the rest; can hang on its first call.
#[derive(Default)]
struct PickySink {
    refusing: std::sync::atomic::AtomicBool,
    hang_first: bool,
    calls: AtomicUsize,
    taken: Mutex<Vec<Message>>,
}

impl PickySink {
    fn refusing() -> Self {
        let sink = Self::default();
        sink.refusing.store(true, Ordering::SeqCst);
        sink
    }

    fn taken_ns(&self, tenant: TenantId) -> Vec<i64> {
        self.taken
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| m.tenant_id == tenant)
            .map(|m| m.payload["n"].as_i64().expect("n"))
            .collect()
    }
}

impl Sink for PickySink {
    fn deliver<'a>(&'a self, messages: &'a [Message]) -> SinkFuture<'a> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 && self.hang_first {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if std::sync::atomic::AtomicBool::load(&self.refusing, Ordering::SeqCst)
                && messages.iter().any(|m| m.payload["poison"] == json!(true))
            {
                return Err(SinkError::rejected("InvalidArgument: events[0].action"));
            }
            self.taken.lock().expect("lock").extend_from_slice(messages);
            Ok(())
        })
    }
}

async fn write(db: &Db, tenant: TenantId, payload: serde_json::Value) -> Uuid {
    db.tenant_tx(tenant, async |tx| change(tx, payload).await)
        .await
        .expect("write")
}

async fn rounds(relay: &Relay, n: usize) {
    for _ in 0..n {
        relay.run_once().await.expect("round");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A message the receiver refuses is retried alone, set aside after three
/// refusals, and the messages behind it (its tenant's) and beside it (other
/// tenants') are delivered; an operator lists it and resends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_set_aside_and_the_rest_flows() {
    let db = db().await;
    let sink = Arc::new(PickySink::refusing());
    let relay = Relay::new(db.clone(), fast()).route(TOPIC, sink.clone(), OnRejection::DeadLetter);
    let (a, b) = (TenantId::new_v7(), TenantId::new_v7());
    write(&db, a, json!({"n": 1})).await;
    let poison = write(&db, a, json!({"n": 2, "poison": true})).await;
    write(&db, a, json!({"n": 3})).await;
    for n in 1..=3 {
        write(&db, b, json!({"n": n})).await;
    }

    // One batch holds all six: B's and A's first are taken in the first round.
    relay.run_once().await.expect("round");
    assert_eq!(
        sink.taken_ns(b),
        vec![1, 2, 3],
        "other tenants are not held back"
    );
    assert_eq!(
        sink.taken_ns(a),
        vec![1],
        "A's order holds behind its bad message"
    );

    let started = Instant::now();
    while sink.taken_ns(a) != vec![1, 3] {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "A's rest never came"
        );
        rounds(&relay, 1).await;
    }
    let stats = relay.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.dead), (0, 1));
    let letters = dead::list_dead(&db, 10).await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, poison);
    assert_eq!(letters[0].rejections, 3);
    assert_eq!(
        letters[0].last_error.as_deref(),
        Some("InvalidArgument: events[0].action")
    );

    // Fixed on the receiver's side, then resent by an operator.
    sink.refusing.store(false, Ordering::SeqCst);
    rounds(&relay, 3).await;
    assert_eq!(
        sink.taken_ns(a),
        vec![1, 3],
        "a dead letter waits for the operator"
    );
    assert_eq!(
        dead::redrive(&db, &Redrive::One(poison))
            .await
            .expect("redrive"),
        1
    );
    drain(&relay, || sink.taken_ns(a).len() == 3).await;
    assert_eq!(sink.taken_ns(a), vec![1, 3, 2]);
    assert_eq!(relay.stats().await.expect("stats").dead, 0);
}

/// On a retry-forever topic (revocations: a lost one fails open) a refused
/// message is never set aside, and its tenant's later messages wait behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_on_a_retry_forever_topic_is_never_set_aside() {
    let db = db().await;
    let sink = Arc::new(PickySink::refusing());
    let relay =
        Relay::new(db.clone(), fast()).route(TOPIC, sink.clone(), OnRejection::RetryForever);
    let a = TenantId::new_v7();
    write(&db, a, json!({"n": 1, "poison": true})).await;
    write(&db, a, json!({"n": 2})).await;
    rounds(&relay, 40).await;
    let stats = relay.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.dead), (2, 0));
    assert!(
        sink.taken_ns(a).is_empty(),
        "order holds: nothing jumps the queue"
    );
    assert!(
        AtomicUsize::load(&sink.calls, Ordering::SeqCst) >= 5,
        "retried, again and again"
    );

    sink.refusing.store(false, Ordering::SeqCst);
    drain(&relay, || sink.taken_ns(a).len() == 2).await;
    assert_eq!(sink.taken_ns(a), vec![1, 2]);
}

/// A receiver that hangs holds no lock: while one relay waits on it (up to its
/// delivery deadline), a second relay delivers another tenant's new messages
/// and leaves the claimed ones alone; after the deadline they are retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_receiver_holds_no_lock_and_times_out() {
    let db = db().await;
    let config = RelayConfig {
        delivery_timeout: Duration::from_millis(1500),
        ..fast()
    };
    let hung = Arc::new(PickySink {
        hang_first: true,
        ..PickySink::default()
    });
    let first = Arc::new(Relay::new(db.clone(), config.clone()).route(
        TOPIC,
        hung.clone(),
        OnRejection::DeadLetter,
    ));
    let (a, b) = (TenantId::new_v7(), TenantId::new_v7());
    write(&db, a, json!({"n": 1})).await;
    let waiting = {
        let first = first.clone();
        tokio::spawn(async move { first.run_once().await.expect("round") })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let other = Arc::new(PickySink::default());
    let second =
        Relay::new(db.clone(), config).route(TOPIC, other.clone(), OnRejection::DeadLetter);
    write(&db, b, json!({"n": 1})).await;
    let report = second.run_once().await.expect("second relay's round");
    assert_eq!(report.delivered, 1, "B's message, not A's claimed one");
    assert_eq!(other.taken_ns(b), vec![1]);
    assert!(other.taken_ns(a).is_empty());

    let report = waiting.await.expect("first relay");
    assert_eq!(
        (report.delivered, report.failed),
        (0, 1),
        "timed out, rescheduled"
    );
    drain(&first, || hung.taken_ns(a) == vec![1]).await;
}

/// Delivered messages older than the pruning age (and a day at least) are
/// deleted; pending and dead ones never are, and the platform role cannot
/// backdate a delivery to hurry one out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_messages_are_pruned_and_nothing_else() {
    let database = test_database(&WRITER).await;
    let db = database.app_db(4).await;
    let sink = Arc::new(PickySink::refusing());
    let config = RelayConfig {
        dead_letter_after: 1,
        prune_after: Duration::ZERO,
        ..fast()
    };
    let relay = Relay::new(db.clone(), config).route(TOPIC, sink.clone(), OnRejection::DeadLetter);
    let (a, b) = (TenantId::new_v7(), TenantId::new_v7());
    for n in 0..5 {
        write(&db, a, json!({"n": n})).await;
    }
    write(&db, b, json!({"n": 0, "poison": true})).await;
    rounds(&relay, 3).await;
    // Pending: a topic no relay routes.
    db.tenant_tx(a, async |tx| enqueue(tx, "unrouted", &json!({})).await)
        .await
        .expect("write");
    assert_eq!(relay.prune().await.expect("prune"), 0, "delivered just now");

    let backdate = "UPDATE outbox SET delivered_time = now() - interval '2 days'
                     WHERE delivered_time IS NOT NULL";
    let as_platform = db
        .platform_tx(async |tx| {
            diesel::sql_query(backdate)
                .execute(&mut tx.pg())
                .await
                .map_err(DbError::from)
        })
        .await;
    assert!(
        as_platform.is_err(),
        "the relay's role cannot backdate a delivery"
    );
    let mut admin = database.admin_connection().await;
    diesel::sql_query("SET session_replication_role = replica")
        .execute(&mut admin)
        .await
        .expect("as the superuser, past the trigger");
    diesel::sql_query(backdate)
        .execute(&mut admin)
        .await
        .expect("two days pass");
    assert_eq!(relay.prune().await.expect("prune"), 5);
    let stats = relay.stats().await.expect("stats");
    assert_eq!((stats.pending, stats.dead), (1, 1));
}

/// Records what it takes after a pause that differs per call, so concurrent
/// rounds finish out of order.
#[derive(Default)]
struct SlowSink {
    calls: AtomicUsize,
    taken: Mutex<Vec<Message>>,
}

impl Sink for SlowSink {
    fn deliver<'a>(&'a self, messages: &'a [Message]) -> SinkFuture<'a> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(
                u64::try_from(call % 4).expect("small") * 3,
            ))
            .await;
            self.taken.lock().expect("lock").extend_from_slice(messages);
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rounds_deliver_once_and_keep_each_tenants_order() {
    let db = db().await;
    let sink = Arc::new(SlowSink::default());
    let config = RelayConfig {
        batch_size: 7,
        concurrency: 6,
        ..fast()
    };
    let relay = Relay::new(db.clone(), config).route(TOPIC, sink.clone(), OnRejection::DeadLetter);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay.run(shutdown));
    let tenants: Vec<TenantId> = (0..8).map(|_| TenantId::new_v7()).collect();
    let per_writer = 20_i64;
    let mut writers = Vec::new();
    for tenant in &tenants {
        for w in 0..2 {
            let (db, tenant) = (db.clone(), *tenant);
            writers.push(tokio::spawn(async move {
                for n in 0..per_writer {
                    write(&db, tenant, json!({ "writer": w, "n": n })).await;
                }
            }));
        }
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let total = tenants.len() * 2 * usize::try_from(per_writer).expect("small");
    let started = Instant::now();
    while sink.taken.lock().expect("lock").len() < total {
        assert!(started.elapsed() < Duration::from_secs(60), "not drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(true).expect("stop");
    running.await.expect("relay");
    let taken = sink.taken.lock().expect("lock").clone();
    assert_eq!(taken.len(), total, "nothing twice");
    let ids: HashSet<Uuid> = taken.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), total, "each once");
    let mut seqs: HashMap<TenantId, Vec<i64>> = HashMap::new();
    for m in &taken {
        seqs.entry(m.tenant_id).or_default().push(m.seq);
    }
    for tenant in &tenants {
        let expected: Vec<i64> = (1..=2 * per_writer).collect();
        assert_eq!(seqs[tenant], expected, "in order per tenant");
    }
    assert!(
        AtomicUsize::load(&sink.calls, Ordering::SeqCst) >= total / 7,
        "batches of 7 at most"
    );
}

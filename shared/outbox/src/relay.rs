//! Delivering pending messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder as _;
use bulkhead_context::TenantId;
use bulkhead_db::{Db, DbError};
use diesel::QueryableByName;
use diesel::sql_types::{
    Array, BigInt, Bool, Double, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use uuid::Uuid;

use crate::Message;

/// Why a sink could not take a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The receiver could not be reached or did not answer in time: retried,
    /// with backoff, for as long as it takes.
    Unavailable,
    /// The receiver refused the content (invalid, or breaking its rules):
    /// retried a few times, then, on topics that allow it, set aside.
    Rejected,
}

/// A sink could not take a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Whether to wait for the receiver or to suspect the message.
    pub failure: Failure,
    /// What the receiver said.
    pub message: String,
}

impl SinkError {
    /// The receiver is unreachable or busy.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            failure: Failure::Unavailable,
            message: message.into(),
        }
    }

    /// The receiver refused the messages.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            failure: Failure::Rejected,
            message: message.into(),
        }
    }
}

/// What the sink's delivery returns.
pub type SinkFuture<'a> = BoxFuture<'a, Result<(), SinkError>>;

/// Where the messages of one topic go. Must be idempotent by message id.
pub trait Sink: Send + Sync + 'static {
    /// Delivers `messages` (ordered by tenant, then commit order) as one batch:
    /// `Ok` means every one of them was taken.
    fn deliver<'a>(&'a self, messages: &'a [Message]) -> SinkFuture<'a>;
}

/// What becomes of a message its receiver keeps refusing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRejection {
    /// Set aside as a dead letter after [`RelayConfig::dead_letter_after`]
    /// refusals (kept; `bulkhead outbox redrive` resends it), so the tenant's
    /// later messages flow again. For audit events and assignment releases.
    DeadLetter,
    /// Retried forever (`outbox_rejected_total` counts it, an alert fires):
    /// for revocations, whose loss would fail open.
    RetryForever,
}

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most messages claimed per round.
    pub batch_size: i64,
    /// Pause between rounds that found nothing to do.
    pub poll_interval: Duration,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay: a receiver down for long is retried at this pace.
    pub max_backoff: Duration,
    /// Longest wait for one delivery call; past it the call counts as unavailable.
    pub delivery_timeout: Duration,
    /// Refusals after which a message of an [`OnRejection::DeadLetter`] topic is
    /// set aside.
    pub dead_letter_after: i32,
    /// Age after which delivered messages are deleted.
    pub prune_after: Duration,
    /// Rounds in flight at once: while one waits for its receiver, the next
    /// claims other tenants' messages. A tenant's messages stay in order: its
    /// later ones wait behind those another round holds. Two by default: on
    /// the 2-core machine of the Audit benchmark, 2 rounds of 1,000 delivered
    /// about 10.5k events/s where 4 of 500 delivered 7.7k (claims take turns
    /// and skip the messages other rounds hold).
    pub concurrency: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_millis(250),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            delivery_timeout: Duration::from_secs(10),
            dead_letter_after: 5,
            prune_after: Duration::from_secs(7 * 24 * 3600),
            concurrency: 2,
        }
    }
}

impl RelayConfig {
    /// How long a claim lasts: the round's deliveries end well before it, so a
    /// second relay only takes over the messages of one that died.
    fn lease(&self) -> Duration {
        self.delivery_timeout * 4 + Duration::from_secs(30)
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Messages delivered and marked.
    pub delivered: usize,
    /// Messages that failed and were rescheduled (or set aside).
    pub failed: usize,
    /// Messages set aside as dead letters this round.
    pub dead: usize,
}

/// The backlog, for metrics and health.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxStats {
    /// Messages not yet delivered.
    pub pending: i64,
    /// Age of the oldest of them.
    pub oldest_age: Option<Duration>,
    /// Messages set aside as dead letters.
    pub dead: i64,
}

/// Delivers the outbox of one service database to its sinks.
pub struct Relay {
    db: Db,
    sinks: HashMap<String, (Arc<dyn Sink>, OnRejection)>,
    config: RelayConfig,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("topics", &self.sinks.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Integer)]
    rejections: i32,
    #[diesel(sql_type = Timestamptz)]
    create_time: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    traceparent: Option<String>,
}

struct Claimed {
    message: Message,
    attempts: i32,
    rejections: i32,
}

/// What became of one claimed message.
enum Outcome {
    Delivered,
    Failed {
        error: String,
        failure: Failure,
    },
    /// Not tried this round (an earlier message of its tenant failed): claim dropped.
    Released,
}

#[derive(QueryableByName)]
struct StatsRow {
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = Nullable<Double>)]
    oldest_seconds: Option<f64>,
    #[diesel(sql_type = BigInt)]
    dead: i64,
}

/// Any constant shared by every relay of a database: claims are taken one
/// relay at a time (briefly), so two never split one tenant's order.
const CLAIM_LOCK: i64 = 7_305_242;

/// Most delivered messages deleted per pruning statement.
const PRUNE_BATCH: i64 = 10_000;

/// How often the running relay prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// Claims up to `$1` due messages of topic `$2` for round `$4`, with a lease
/// of `$3` ms from the moment of the claim (not the transaction's start, which
/// may lie before a wait for the claim lock). `waiting`: per tenant, the first message that waits (backing
/// off, or claimed by a round in flight); its successors wait behind it (order
/// per tenant). Found through the two small indexes of waiting messages, not
/// by walking every pending one; tested row by row (a join would lose the
/// index's order and sort every pending message).
const CLAIM: &str = "WITH waiting AS MATERIALIZED (
        SELECT w.tenant_id, min(w.seq) AS seq FROM (
            SELECT tenant_id, seq FROM outbox
             WHERE delivered_time IS NULL AND dead_time IS NULL
               AND next_attempt_time > now() AND topic = $2
            UNION ALL
            SELECT tenant_id, seq FROM outbox
             WHERE claimed_until > now() AND topic = $2) w
         GROUP BY w.tenant_id),
     due AS (
        SELECT o.tenant_id, o.seq FROM outbox o
         WHERE o.delivered_time IS NULL AND o.dead_time IS NULL
           AND o.next_attempt_time <= now()
           AND (o.claimed_until IS NULL OR o.claimed_until <= now())
           AND o.topic = $2
           AND o.seq < COALESCE(
               (SELECT b.seq FROM waiting b WHERE b.tenant_id = o.tenant_id),
               9223372036854775807)
         ORDER BY o.tenant_id, o.seq
         LIMIT $1
         FOR UPDATE OF o)
     UPDATE outbox o SET claimed_until = clock_timestamp() + $3 * interval '1 millisecond',
                         claim_id = $4
       FROM due WHERE o.tenant_id = due.tenant_id AND o.seq = due.seq
     RETURNING o.tenant_id, o.seq, o.id, o.topic, o.payload, o.attempts, o.rejections,
               o.create_time, o.traceparent";

/// How often a running relay refreshes its gauges.
const STATS_EVERY: Duration = Duration::from_secs(10);

impl Relay {
    /// A relay over `db` (whose platform pool delivers).
    #[must_use]
    pub fn new(db: Db, config: RelayConfig) -> Self {
        Self {
            db,
            sinks: HashMap::new(),
            config,
        }
    }

    /// Sends the messages of `topic` to `sink`; `on_rejection` says what
    /// becomes of one it keeps refusing. Topics without a sink stay pending.
    #[must_use]
    pub fn route(mut self, topic: &str, sink: Arc<dyn Sink>, on_rejection: OnRejection) -> Self {
        self.sinks.insert(topic.to_owned(), (sink, on_rejection));
        self
    }

    /// One round, outside any open transaction while it waits on a receiver:
    /// claims the due messages (at most `batch_size`) with a lease, hands each
    /// topic's batch to its sink under [`RelayConfig::delivery_timeout`], then
    /// marks what was taken and reschedules what was not.
    ///
    /// A message is due when its retry time has come and no earlier message of
    /// the same tenant and topic is waiting for a retry or claimed, so order
    /// holds per tenant. A batch the receiver refuses is retried one message at
    /// a time, so one bad message does not hold back other tenants' messages;
    /// after it, its own tenant's wait for the next round.
    ///
    /// # Errors
    /// [`DbError`] when the database fails; sink failures are not errors here.
    pub async fn run_once(&self) -> Result<RoundReport, DbError> {
        let round = Uuid::now_v7();
        let claimed = self.claim(round).await?;
        if claimed.is_empty() {
            return Ok(RoundReport::default());
        }
        let mut by_topic: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        for c in claimed {
            by_topic.entry(c.message.topic.clone()).or_default().push(c);
        }
        let mut outcomes = Vec::new();
        // Stop trying well inside the lease: what is left is released, never
        // delivered while another relay may have taken it over.
        let deadline = std::time::Instant::now() + self.config.lease() / 2;
        for (topic, mut batch) in by_topic {
            batch.sort_by_key(|c| (*c.message.tenant_id.as_uuid(), c.message.seq));
            let (messages, counts): (Vec<Message>, Vec<(i32, i32)>) = batch
                .into_iter()
                .map(|c| (c.message, (c.attempts, c.rejections)))
                .unzip();
            let results = match self.sinks.get(&topic) {
                Some((sink, _)) if std::time::Instant::now() < deadline => {
                    self.deliver(sink.as_ref(), &messages, deadline).await
                }
                _ => messages.iter().map(|_| Outcome::Released).collect(),
            };
            let claimed =
                messages
                    .into_iter()
                    .zip(counts)
                    .map(|(message, (attempts, rejections))| Claimed {
                        message,
                        attempts,
                        rejections,
                    });
            outcomes.extend(claimed.zip(results));
        }
        self.mark(round, outcomes).await
    }

    /// Claims the due messages of routed topics with a lease.
    async fn claim(&self, round: Uuid) -> Result<Vec<Claimed>, DbError> {
        let topics: Vec<String> = self.sinks.keys().cloned().collect();
        let lease_ms = self.config.lease().as_secs_f64() * 1000.0;
        let batch_size = self.config.batch_size;
        let rows: Vec<ClaimedRow> = self
            .db
            .platform_tx(async |tx| {
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<BigInt, _>(CLAIM_LOCK)
                    .execute(&mut tx.pg())
                    .await?;
                // One topic at a time: with the topic fixed, the pending index
                // yields (tenant, seq) order as it is, and the LIMIT stops the
                // scan (an `= ANY` on its second column sorted every pending
                // message on each claim: 130 ms with 10^5 pending).
                let mut rows: Vec<ClaimedRow> = Vec::new();
                for topic in &topics {
                    let budget = batch_size - i64::try_from(rows.len()).unwrap_or(i64::MAX);
                    if budget <= 0 {
                        break;
                    }
                    rows.extend(
                        diesel::sql_query(CLAIM)
                            .bind::<BigInt, _>(budget)
                            .bind::<Text, _>(topic)
                            .bind::<Double, _>(lease_ms)
                            .bind::<SqlUuid, _>(round)
                            .load::<ClaimedRow>(&mut tx.pg())
                            .await?,
                    );
                }
                Ok::<_, DbError>(rows)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Claimed {
                message: Message {
                    tenant_id: TenantId::from_uuid(row.tenant_id),
                    seq: row.seq,
                    id: row.id,
                    topic: row.topic,
                    payload: row.payload,
                    create_time: row.create_time,
                    traceparent: row.traceparent,
                },
                attempts: row.attempts,
                rejections: row.rejections,
            })
            .collect())
    }

    /// One call under the deadline.
    async fn send(&self, sink: &dyn Sink, messages: &[Message]) -> Result<(), SinkError> {
        match tokio::time::timeout(self.config.delivery_timeout, sink.deliver(messages)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::unavailable(format!(
                "no answer within {:?}",
                self.config.delivery_timeout
            ))),
        }
    }

    /// Delivers one topic's batch; an outcome per message, in order.
    async fn deliver(
        &self,
        sink: &dyn Sink,
        batch: &[Message],
        deadline: std::time::Instant,
    ) -> Vec<Outcome> {
        let err = match self.send(sink, batch).await {
            Ok(()) => return batch.iter().map(|_| Outcome::Delivered).collect(),
            Err(err) => err,
        };
        if err.failure == Failure::Unavailable || batch.len() == 1 {
            return batch
                .iter()
                .map(|_| Outcome::Failed {
                    error: err.message.clone(),
                    failure: err.failure,
                })
                .collect();
        }
        // Refused as a batch: find the message(s) refused, one at a time. After
        // a failure, that tenant's later messages wait (order per tenant).
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut held: Vec<TenantId> = Vec::new();
        let mut unreachable = false;
        for message in batch {
            let tenant = message.tenant_id;
            if unreachable || held.contains(&tenant) || std::time::Instant::now() >= deadline {
                outcomes.push(Outcome::Released);
                continue;
            }
            match self.send(sink, std::slice::from_ref(message)).await {
                Ok(()) => outcomes.push(Outcome::Delivered),
                Err(err) => {
                    unreachable = err.failure == Failure::Unavailable;
                    held.push(tenant);
                    outcomes.push(Outcome::Failed {
                        error: err.message,
                        failure: err.failure,
                    });
                }
            }
        }
        outcomes
    }

    /// Records a round's outcomes in one short transaction.
    async fn mark(
        &self,
        round: Uuid,
        outcomes: Vec<(Claimed, Outcome)>,
    ) -> Result<RoundReport, DbError> {
        let mut report = RoundReport::default();
        let (mut delivered, mut released) = (Keys::default(), Keys::default());
        let mut failed = Keys::default();
        let (mut delays, mut errors, mut rejected, mut dead) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (c, outcome) in outcomes {
            let m = &c.message;
            match outcome {
                Outcome::Delivered => {
                    delivered.push(m);
                    metrics::counter!("outbox_delivered_total", "topic" => m.topic.clone())
                        .increment(1);
                    report.delivered += 1;
                }
                Outcome::Released => released.push(m),
                Outcome::Failed { error, failure } => {
                    let refused = failure == Failure::Rejected;
                    let on_rejection = self
                        .sinks
                        .get(&m.topic)
                        .map_or(OnRejection::RetryForever, |(_, on)| *on);
                    let is_dead = refused
                        && on_rejection == OnRejection::DeadLetter
                        && c.rejections + 1 >= self.config.dead_letter_after;
                    let reason = if refused { "rejected" } else { "unavailable" };
                    metrics::counter!("outbox_delivery_failures_total",
                        "topic" => m.topic.clone(), "reason" => reason)
                    .increment(1);
                    if is_dead {
                        metrics::counter!("outbox_dead_lettered_total", "topic" => m.topic.clone())
                            .increment(1);
                        tracing::error!(topic = m.topic, id = %m.id, tenant = %m.tenant_id,
                            %error, "outbox message set aside as a dead letter (bulkhead outbox list-dead)");
                        report.dead += 1;
                    } else if refused && on_rejection == OnRejection::RetryForever {
                        metrics::counter!("outbox_rejected_total", "topic" => m.topic.clone())
                            .increment(1);
                        tracing::error!(topic = m.topic, id = %m.id, tenant = %m.tenant_id,
                            %error, "outbox message refused; it is retried until taken");
                    } else {
                        tracing::warn!(topic = m.topic, id = %m.id, %error, reason, "outbox delivery failed");
                    }
                    failed.push(m);
                    delays.push(self.backoff(c.attempts).as_secs_f64() * 1000.0);
                    errors.push(error);
                    rejected.push(i32::from(refused));
                    dead.push(is_dead);
                    report.failed += 1;
                }
            }
        }
        self.db
            .platform_tx(async |tx| {
                if !delivered.is_empty() {
                    diesel::sql_query(
                        "UPDATE outbox o
                            SET delivered_time = now(), claimed_until = NULL, claim_id = NULL,
                                last_error = NULL
                           FROM unnest($1::uuid[], $2::bigint[]) AS d(tenant_id, seq)
                          WHERE o.tenant_id = d.tenant_id AND o.seq = d.seq AND o.claim_id = $3",
                    )
                    .bind::<Array<SqlUuid>, _>(&delivered.tenants)
                    .bind::<Array<BigInt>, _>(&delivered.seqs)
                    .bind::<SqlUuid, _>(round)
                    .execute(&mut tx.pg())
                    .await?;
                }
                if !failed.is_empty() {
                    diesel::sql_query(
                        "UPDATE outbox o
                            SET attempts = o.attempts + 1,
                                rejections = o.rejections + d.rejected,
                                next_attempt_time = now() + d.delay_ms * interval '1 millisecond',
                                last_error = d.error,
                                claimed_until = NULL,
                                claim_id = NULL,
                                dead_time = CASE WHEN d.dead THEN now() END
                           FROM unnest($1::uuid[], $2::bigint[], $3::float8[], $4::text[],
                                       $5::int[], $6::bool[])
                                AS d(tenant_id, seq, delay_ms, error, rejected, dead)
                          WHERE o.tenant_id = d.tenant_id AND o.seq = d.seq AND o.claim_id = $7",
                    )
                    .bind::<Array<SqlUuid>, _>(&failed.tenants)
                    .bind::<Array<BigInt>, _>(&failed.seqs)
                    .bind::<Array<Double>, _>(&delays)
                    .bind::<Array<Text>, _>(&errors)
                    .bind::<Array<Integer>, _>(&rejected)
                    .bind::<Array<Bool>, _>(&dead)
                    .bind::<SqlUuid, _>(round)
                    .execute(&mut tx.pg())
                    .await?;
                }
                if !released.is_empty() {
                    diesel::sql_query(
                        "UPDATE outbox o SET claimed_until = NULL, claim_id = NULL
                           FROM unnest($1::uuid[], $2::bigint[]) AS d(tenant_id, seq)
                          WHERE o.tenant_id = d.tenant_id AND o.seq = d.seq AND o.claim_id = $3",
                    )
                    .bind::<Array<SqlUuid>, _>(&released.tenants)
                    .bind::<Array<BigInt>, _>(&released.seqs)
                    .bind::<SqlUuid, _>(round)
                    .execute(&mut tx.pg())
                    .await?;
                }
                Ok::<_, DbError>(())
            })
            .await?;
        Ok(report)
    }

    /// Deletes messages delivered longer ago than [`RelayConfig::prune_after`]
    /// (in batches); how many. Pending and dead messages are never deleted.
    ///
    /// # Errors
    /// [`DbError`] when the database fails.
    pub async fn prune(&self) -> Result<usize, DbError> {
        let age_ms = self.config.prune_after.as_secs_f64() * 1000.0;
        let mut total = 0;
        loop {
            let deleted = self
                .db
                .platform_tx(async |tx| {
                    diesel::sql_query(
                        "DELETE FROM outbox WHERE (tenant_id, seq) IN (
                            SELECT tenant_id, seq FROM outbox
                             WHERE delivered_time < now() - $1 * interval '1 millisecond'
                             LIMIT $2)",
                    )
                    .bind::<Double, _>(age_ms)
                    .bind::<BigInt, _>(PRUNE_BATCH)
                    .execute(&mut tx.pg())
                    .await
                    .map_err(DbError::from)
                })
                .await?;
            total += deleted;
            if i64::try_from(deleted).unwrap_or(i64::MAX) < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    /// The delay before attempt `attempts + 1`: exponential with jitter, capped.
    fn backoff(&self, attempts: i32) -> Duration {
        let steps = usize::try_from(attempts).unwrap_or(0);
        backon::ExponentialBuilder::default()
            .with_min_delay(self.config.min_backoff)
            .with_max_delay(self.config.max_backoff)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(steps)
            .unwrap_or(self.config.max_backoff)
    }

    /// The backlog: pending messages and the oldest one's age; also published as
    /// the `outbox_pending` and `outbox_oldest_age_seconds` gauges.
    ///
    /// # Errors
    /// [`DbError`] when the database fails.
    pub async fn stats(&self) -> Result<OutboxStats, DbError> {
        let row: StatsRow = self
            .db
            .platform_tx(async |tx| {
                Ok::<_, DbError>(
                    diesel::sql_query(
                        "SELECT count(*) FILTER (WHERE dead_time IS NULL) AS pending,
                                extract(epoch FROM now() - min(create_time)
                                    FILTER (WHERE dead_time IS NULL))::float8 AS oldest_seconds,
                                count(*) FILTER (WHERE dead_time IS NOT NULL) AS dead
                           FROM outbox WHERE delivered_time IS NULL",
                    )
                    .get_result(&mut tx.pg())
                    .await?,
                )
            })
            .await?;
        let stats = OutboxStats {
            pending: row.pending,
            oldest_age: row
                .oldest_seconds
                .map(|s| Duration::from_secs_f64(s.max(0.0))),
            dead: row.dead,
        };
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!("outbox_pending").set(stats.pending as f64);
        metrics::gauge!("outbox_oldest_age_seconds")
            .set(stats.oldest_age.map_or(0.0, |a| a.as_secs_f64()));
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!("outbox_dead").set(stats.dead as f64);
        Ok(stats)
    }

    /// Runs rounds until `shutdown` flips to true: immediately again after a busy
    /// round, after `poll_interval` after an idle one; [`RelayConfig::concurrency`]
    /// of them at once.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let relay = Arc::new(self);
        let others: Vec<_> = (1..relay.config.concurrency.max(1))
            .map(|_| {
                let (relay, shutdown) = (Arc::clone(&relay), shutdown.clone());
                tokio::spawn(async move { relay.rounds(shutdown, false).await })
            })
            .collect();
        relay.rounds(shutdown, true).await;
        for other in others {
            let _ = other.await;
        }
    }

    /// One line of rounds; the first also prunes and keeps the gauges.
    async fn rounds(&self, mut shutdown: watch::Receiver<bool>, housekeeping: bool) {
        let mut last_prune: Option<std::time::Instant> = None;
        let mut last_stats: Option<std::time::Instant> = None;
        loop {
            if housekeeping && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(std::time::Instant::now());
                match self.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "pruned delivered outbox messages"),
                    Err(err) => tracing::warn!(%err, "outbox pruning failed"),
                }
            }
            let busy = match self.run_once().await {
                Ok(report) => report.delivered + report.failed > 0,
                Err(err) => {
                    tracing::error!(%err, "outbox relay round failed");
                    false
                }
            };
            // The gauges count every pending message (a scan of the backlog):
            // every 10 s at most, well inside a Prometheus scrape interval.
            if housekeeping && last_stats.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
                last_stats = Some(std::time::Instant::now());
                if let Err(err) = self.stats().await {
                    tracing::warn!(%err, "outbox stats failed");
                }
            }
            if *shutdown.borrow() {
                return;
            }
            if !busy {
                // Only the first line polls at the configured pace; the others,
                // there for bursts, look less often while there is nothing.
                let pause = if housekeeping {
                    self.config.poll_interval
                } else {
                    self.config.poll_interval * 4
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// The keys of some messages, as the two arrays the statements take.
#[derive(Default)]
struct Keys {
    tenants: Vec<Uuid>,
    seqs: Vec<i64>,
}

impl Keys {
    fn push(&mut self, m: &Message) {
        self.tenants.push(*m.tenant_id.as_uuid());
        self.seqs.push(m.seq);
    }

    fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

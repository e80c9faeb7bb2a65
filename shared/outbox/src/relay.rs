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

/// A sink could not take a batch; the relay retries it later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// What a sink's delivery returns.
pub type SinkFuture<'a> = BoxFuture<'a, Result<(), SinkError>>;

/// Where the messages of one topic go. Must be idempotent by message id.
pub trait Sink: Send + Sync + 'static {
    /// Delivers `messages` (ordered by tenant, then commit order) as one batch:
    /// `Ok` means every one of them was taken.
    fn deliver<'a>(&'a self, messages: &'a [Message]) -> SinkFuture<'a>;
}

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most messages read per round.
    pub batch_size: i64,
    /// Pause between rounds that found nothing to do.
    pub poll_interval: Duration,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay: a sink down for long is retried at this pace, forever.
    pub max_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            poll_interval: Duration::from_millis(250),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Messages delivered and marked.
    pub delivered: usize,
    /// Messages whose batch failed and were rescheduled.
    pub failed: usize,
}

/// The backlog, for metrics and health.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxStats {
    /// Messages not yet delivered.
    pub pending: i64,
    /// Age of the oldest of them.
    pub oldest_age: Option<Duration>,
}

/// Delivers the outbox of one service database to its sinks.
pub struct Relay {
    db: Db,
    sinks: HashMap<String, Arc<dyn Sink>>,
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
struct PendingRow {
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
    #[diesel(sql_type = Timestamptz)]
    create_time: chrono::DateTime<chrono::Utc>,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

#[derive(QueryableByName)]
struct StatsRow {
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = Nullable<Double>)]
    oldest_seconds: Option<f64>,
}

/// Any constant shared by every relay of a database: one relay at a time.
const RELAY_LOCK: i64 = 7_305_242;

impl Relay {
    /// A relay over `db` (whose pool has the service's support role).
    #[must_use]
    pub fn new(db: Db, config: RelayConfig) -> Self {
        Self {
            db,
            sinks: HashMap::new(),
            config,
        }
    }

    /// Sends the messages of `topic` to `sink`. Topics without a sink stay pending.
    #[must_use]
    pub fn route(mut self, topic: &str, sink: Arc<dyn Sink>) -> Self {
        self.sinks.insert(topic.to_owned(), sink);
        self
    }

    /// One round: reads the due messages (at most `batch_size`), hands each topic's
    /// batch to its sink, marks what was taken and reschedules what was not.
    ///
    /// A message is due when its retry time has come and no earlier message of
    /// the same tenant and topic is waiting for a retry, so order holds per tenant.
    /// The round runs in one platform transaction holding a transaction-level
    /// advisory lock: a second relay on the same database skips the round.
    ///
    /// # Errors
    /// [`DbError`] when the database fails; sink failures are not errors here.
    pub async fn run_once(&self) -> Result<RoundReport, DbError> {
        let topics: Vec<String> = self.sinks.keys().cloned().collect();
        self.db
            .platform_tx(async |tx| {
                let locked: Flag = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS flag")
                    .bind::<BigInt, _>(RELAY_LOCK)
                    .get_result(&mut tx.pg())
                    .await?;
                if !locked.flag {
                    return Ok(RoundReport::default());
                }
                let rows: Vec<PendingRow> = diesel::sql_query(
                    "SELECT o.tenant_id, o.seq, o.id, o.topic, o.payload, o.attempts, o.create_time
                       FROM outbox o
                      WHERE o.delivered_time IS NULL
                        AND o.next_attempt_time <= now()
                        AND o.topic = ANY($2)
                        AND NOT EXISTS (
                            SELECT 1 FROM outbox b
                             WHERE b.tenant_id = o.tenant_id AND b.topic = o.topic
                               AND b.delivered_time IS NULL AND b.seq < o.seq
                               AND b.next_attempt_time > now())
                      ORDER BY o.tenant_id, o.topic, o.seq
                      LIMIT $1
                      FOR UPDATE OF o",
                )
                .bind::<BigInt, _>(self.config.batch_size)
                .bind::<Array<Text>, _>(&topics)
                .load(&mut tx.pg())
                .await?;

                let mut by_topic: BTreeMap<String, (Vec<Message>, i32)> = BTreeMap::new();
                for row in rows {
                    let entry = by_topic.entry(row.topic.clone()).or_default();
                    entry.1 = entry.1.max(row.attempts);
                    entry.0.push(Message {
                        tenant_id: TenantId::from_uuid(row.tenant_id),
                        seq: row.seq,
                        id: row.id,
                        topic: row.topic,
                        payload: row.payload,
                        create_time: row.create_time,
                    });
                }

                let mut report = RoundReport::default();
                for (topic, (messages, attempts)) in by_topic {
                    let Some(sink) = self.sinks.get(&topic) else {
                        continue;
                    };
                    let tenants: Vec<Uuid> = messages.iter().map(|m| *m.tenant_id.as_uuid()).collect();
                    let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
                    match sink.deliver(&messages).await {
                        Ok(()) => {
                            diesel::sql_query(
                                "UPDATE outbox o SET delivered_time = now(), last_error = NULL
                                   FROM unnest($1::uuid[], $2::bigint[]) AS d(tenant_id, seq)
                                  WHERE o.tenant_id = d.tenant_id AND o.seq = d.seq",
                            )
                            .bind::<Array<SqlUuid>, _>(&tenants)
                            .bind::<Array<BigInt>, _>(&seqs)
                            .execute(&mut tx.pg())
                            .await?;
                            report.delivered += messages.len();
                        }
                        Err(err) => {
                            let delay = self.backoff(attempts);
                            tracing::warn!(topic, error = %err, retry_in_ms = delay.as_millis(), count = messages.len(), "outbox delivery failed");
                            diesel::sql_query(
                                "UPDATE outbox o
                                    SET attempts = o.attempts + 1,
                                        next_attempt_time = now() + $3 * interval '1 millisecond',
                                        last_error = $4
                                   FROM unnest($1::uuid[], $2::bigint[]) AS d(tenant_id, seq)
                                  WHERE o.tenant_id = d.tenant_id AND o.seq = d.seq",
                            )
                            .bind::<Array<SqlUuid>, _>(&tenants)
                            .bind::<Array<BigInt>, _>(&seqs)
                            .bind::<Double, _>(delay.as_secs_f64() * 1000.0)
                            .bind::<Text, _>(err.to_string())
                            .execute(&mut tx.pg())
                            .await?;
                            report.failed += messages.len();
                        }
                    }
                }
                Ok(report)
            })
            .await
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
                        "SELECT count(*) AS pending,
                                extract(epoch FROM now() - min(create_time))::float8 AS oldest_seconds
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
        };
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!("outbox_pending").set(stats.pending as f64);
        metrics::gauge!("outbox_oldest_age_seconds")
            .set(stats.oldest_age.map_or(0.0, |a| a.as_secs_f64()));
        Ok(stats)
    }

    /// Runs rounds until `shutdown` flips to true: immediately again after a busy
    /// round, after `poll_interval` after an idle one.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let busy = match self.run_once().await {
                Ok(report) => report.delivered + report.failed > 0,
                Err(err) => {
                    tracing::error!(%err, "outbox relay round failed");
                    false
                }
            };
            if let Err(err) = self.stats().await {
                tracing::warn!(%err, "outbox stats failed");
            }
            if *shutdown.borrow() {
                return;
            }
            if !busy {
                tokio::select! {
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

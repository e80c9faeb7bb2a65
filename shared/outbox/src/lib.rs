//! The transactional outbox (ARCHITECTURE.md §5): every message that must survive
//! a crash between a change and its delivery (audit events, revocation requests)
//! is written by [`enqueue`] in the *same* transaction as the change, and a
//! [`Relay`] delivers it afterwards — claimed with a lease, sent outside any open
//! transaction under a deadline, in batches retried with exponential backoff and
//! jitter, in commit order per tenant and topic, marked delivered row by row.
//!
//! Receivers must be idempotent by message id: a relay that crashes after a
//! delivery and before marking it delivers again. Nothing is ever dropped: a
//! message whose receiver is down stays pending (and shows in [`OutboxStats`]);
//! one it keeps refusing is, on topics that allow it, set aside as a dead letter
//! ([`dead`]) — kept until an operator resends it — so the rest flows.

pub mod audit;
pub mod dead;
mod relay;

use bulkhead_context::TenantId;
use bulkhead_db::{AsyncPgConnection, DbError, PlatformConn, TenantConn};
use diesel::sql_types::{Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use uuid::Uuid;

pub use relay::{
    Failure, OnRejection, OutboxStats, Relay, RelayConfig, RoundReport, Sink, SinkError, SinkFuture,
};

/// The topic of revocation requests for Auth's `RevokeSessions` (Tenant writes
/// them when a change lowers or ends someone's access).
pub const REVOKE_TOPIC: &str = "auth.revoke";

/// The topic of assignment releases for Task's `ReleaseAssignments` (Tenant
/// writes them when someone leaves a tenant, or the tenant is deactivated).
pub const RELEASE_TOPIC: &str = "task.release";

/// The outbox tables, for [`bulkhead_db::schema::ServiceSchema::with_shared`].
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A message as the relay hands it to a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The tenant the message belongs to.
    pub tenant_id: TenantId,
    /// Its place in the tenant's commit order.
    pub seq: i64,
    /// Its id: the receiver's idempotency key.
    pub id: Uuid,
    /// Which sink it goes to (`audit`, `auth.revoke`).
    pub topic: String,
    /// What the writer stored.
    pub payload: serde_json::Value,
    /// When its transaction wrote it (the writer database's clock).
    pub create_time: chrono::DateTime<chrono::Utc>,
    /// The W3C `traceparent` of the span that wrote it: the receiver's span
    /// of its delivery continues that trace.
    pub traceparent: Option<String>,
}

/// Stores a message for `topic` in the current tenant-scoped transaction: it
/// commits or rolls back with the change. The current span's trace context is
/// kept with it.
///
/// # Errors
/// [`DbError`] when the insert fails (the whole transaction then fails with it).
pub async fn enqueue(
    tx: TenantConn<'_>,
    topic: &str,
    payload: &serde_json::Value,
) -> Result<Uuid, DbError> {
    insert(tx.pg(), tx.tenant_id(), topic, payload).await
}

/// Stores a message for `tenant` from a platform transaction (e.g. the tenant a
/// SUPER_ADMIN just created).
///
/// # Errors
/// As [`enqueue`].
pub async fn enqueue_for(
    tx: PlatformConn<'_>,
    tenant: TenantId,
    topic: &str,
    payload: &serde_json::Value,
) -> Result<Uuid, DbError> {
    insert(tx.pg(), tenant, topic, payload).await
}

diesel::define_sql_function! {
    /// `outbox_enqueue(tenant, id, topic, payload, traceparent)`: the outbox
    /// migrations' function (one prepared, cached statement); returns the
    /// message's `seq`.
    fn outbox_enqueue(
        tenant: SqlUuid,
        id: SqlUuid,
        topic: Text,
        payload: Jsonb,
        traceparent: Nullable<Text>,
    ) -> BigInt;
}

/// How many of the messages `ids` have not been delivered yet (a receiver
/// that accepted a message confirms it: the relay marks it delivered).
///
/// # Errors
/// On database failure.
pub async fn undelivered(tx: PlatformConn<'_>, ids: &[Uuid]) -> Result<i64, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM outbox WHERE id = ANY ($1) AND delivered_time IS NULL",
    )
    .bind::<diesel::sql_types::Array<SqlUuid>, _>(ids)
    .get_result(&mut tx.pg())
    .await?;
    Ok(count.n)
}

async fn insert(
    conn: &AsyncPgConnection,
    tenant: TenantId,
    topic: &str,
    payload: &serde_json::Value,
) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let traceparent = bulkhead_telemetry::propagation::traceparent(&tracing::Span::current());
    diesel::select(outbox_enqueue(
        *tenant.as_uuid(),
        id,
        topic,
        payload,
        traceparent,
    ))
    .get_result::<i64>(&mut &*conn)
    .await?;
    Ok(id)
}

//! Dead letters: messages a receiver kept refusing, set aside so the messages
//! behind them flow. Never deleted; an operator reads them and resends them
//! (`bulkhead outbox list-dead`, `bulkhead outbox redrive`).

use bulkhead_db::{Db, DbError};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

/// A message set aside.
#[derive(Debug, Clone, PartialEq, QueryableByName, serde::Serialize)]
pub struct DeadLetter {
    /// Its tenant.
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    /// Its place in the tenant's commit order.
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    /// Its id (the receiver's idempotency key).
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Where it goes.
    #[diesel(sql_type = Text)]
    pub topic: String,
    /// When its change committed.
    #[diesel(sql_type = Timestamptz)]
    pub create_time: chrono::DateTime<chrono::Utc>,
    /// When it was set aside.
    #[diesel(sql_type = Timestamptz)]
    pub dead_time: chrono::DateTime<chrono::Utc>,
    /// Deliveries tried.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Of which refused by the receiver.
    #[diesel(sql_type = Integer)]
    pub rejections: i32,
    /// What the receiver said last.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// What the writer stored.
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
}

/// The dead letters of `db`'s outbox, oldest set aside first (at most `limit`).
///
/// # Errors
/// [`DbError`] when the database fails.
pub async fn list_dead(db: &Db, limit: i64) -> Result<Vec<DeadLetter>, DbError> {
    db.platform_tx(async |tx| {
        diesel::sql_query(
            "SELECT tenant_id, seq, id, topic, create_time, dead_time, attempts, rejections,
                    last_error, payload
               FROM outbox WHERE dead_time IS NOT NULL
              ORDER BY dead_time, tenant_id, seq LIMIT $1",
        )
        .bind::<BigInt, _>(limit)
        .load(&mut tx.pg())
        .await
        .map_err(DbError::from)
    })
    .await
}

/// Which dead letters to resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    /// The one with this id.
    One(Uuid),
    /// Every one.
    All,
}

/// Puts dead letters back in line (due now, their refusals forgotten); how
/// many. A message resent after later ones of its tenant were delivered
/// arrives after them.
///
/// # Errors
/// [`DbError`] when the database fails.
pub async fn redrive(db: &Db, which: &Redrive) -> Result<usize, DbError> {
    let id = match which {
        Redrive::One(id) => Some(*id),
        Redrive::All => None,
    };
    db.platform_tx(async |tx| {
        diesel::sql_query(
            "UPDATE outbox SET dead_time = NULL, rejections = 0, next_attempt_time = now(),
                    claimed_until = NULL, claim_id = NULL
              WHERE dead_time IS NOT NULL AND ($1::uuid IS NULL OR id = $1)",
        )
        .bind::<Nullable<SqlUuid>, _>(id)
        .execute(&mut tx.pg())
        .await
        .map_err(DbError::from)
    })
    .await
}

//! Retention: `bulkhead audit prune`, run as the job role `audit_retention`
//! (the only role the append-only trigger lets delete, and only a prefix of a
//! chain recorded in `prunes`).
//!
//! Per tenant, the events Audit received before the tenant's retention period
//! (its row in `retention_periods`, or the job's default) are deleted from the
//! start of the chain, after Audit's key signs the last of them: that signed
//! checkpoint, kept in `prunes`, is where VerifyChain and exports start, so the
//! chain that remains stays verifiable — and a prune is never silent, since
//! its record cannot be deleted either.

use bulkhead_context::TenantId;
use bulkhead_db::{Db, PlatformConn};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::chain::GENESIS;
use crate::checkpoint::Notary;
use crate::error::AuditError;
use crate::repo::EventRow;
use crate::schema::{chain_heads, events, prunes, retention_periods};

/// One chain's prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The tenant (nil: the platform chain).
    pub tenant_id: Uuid,
    /// Events 1 to this one are gone.
    pub through: i64,
    /// How many this run deleted.
    pub deleted: i64,
}

/// Where a pruned chain now starts: its last deleted event, signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Horizon {
    /// The last event deleted.
    pub sequence: i64,
    /// Its hash: the `prev_hash` of the first event kept.
    pub hash: Vec<u8>,
    /// Audit's signed checkpoint of it.
    pub jws: String,
}

/// One tenant's retention period.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct Period {
    /// The tenant (nil: the platform chain).
    pub tenant_id: Uuid,
    /// Days events are kept.
    pub retain_days: i32,
    /// When it was set.
    pub update_time: DateTime<Utc>,
}

/// Prunes every chain: in each tenant's own transaction, the events received
/// before `now` minus its period (default `default_days`) from the start of the
/// chain up to the first one received later. With `dry_run`, reports what it
/// would delete and deletes nothing.
///
/// # Errors
/// On database failure, or when signing fails.
pub async fn prune(
    db: &Db,
    notary: &Notary,
    default_days: u32,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<Pruned>, AuditError> {
    if !dry_run && now > Utc::now() + chrono::Duration::minutes(1) {
        return Err(AuditError::PruneRefused(
            "a prune as of a time to come deletes nothing it should not yet: only with --dry-run"
                .into(),
        ));
    }
    let tenants: Vec<Uuid> = db
        .platform_tx(async |tx| {
            Ok::<_, AuditError>(
                chain_heads::table
                    .select(chain_heads::tenant_id)
                    .order(chain_heads::tenant_id)
                    .load(&mut tx.pg())
                    .await?,
            )
        })
        .await?;
    let mut report = Vec::new();
    for tenant in tenants {
        let pruned = db
            .platform_tx(async |tx| {
                prune_chain(tx, notary, tenant, default_days, now, dry_run).await
            })
            .await?;
        report.extend(pruned);
    }
    Ok(report)
}

async fn prune_chain(
    tx: PlatformConn<'_>,
    notary: &Notary,
    tenant: Uuid,
    default_days: u32,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Option<Pruned>, AuditError> {
    // One prune of a chain at a time (two jobs started together).
    diesel::sql_query("SELECT pg_advisory_xact_lock(7305242, hashtext($1::text))")
        .bind::<diesel::sql_types::Uuid, _>(tenant)
        .execute(&mut tx.pg())
        .await?;
    let days: i32 = retention_periods::table
        .filter(retention_periods::tenant_id.eq(tenant))
        .select(retention_periods::retain_days)
        .first(&mut tx.pg())
        .await
        .optional()?
        .unwrap_or_else(|| i32::try_from(default_days).unwrap_or(i32::MAX));
    let cutoff = now - chrono::Duration::days(i64::from(days));
    let done: i64 = prunes::table
        .filter(prunes::tenant_id.eq(tenant))
        .select(diesel::dsl::max(prunes::sequence))
        .first::<Option<i64>>(&mut tx.pg())
        .await?
        .unwrap_or(0);
    // The first event kept: the first received at or after the cutoff (walked
    // in chain order from the start, so only what goes is read).
    let first_kept: Option<i64> = events::table
        .filter(events::tenant_id.eq(tenant))
        .filter(events::sequence.gt(done))
        .filter(events::receive_time.ge(cutoff))
        .order(events::sequence.asc())
        .select(events::sequence)
        .first(&mut tx.pg())
        .await
        .optional()?;
    // Only events received before the cutoff go: an event appended meanwhile
    // is newer than it.
    let through: i64 = events::table
        .filter(events::tenant_id.eq(tenant))
        .filter(events::sequence.gt(done))
        .filter(events::sequence.lt(first_kept.unwrap_or(i64::MAX)))
        .filter(events::receive_time.lt(cutoff))
        .select(diesel::dsl::max(events::sequence))
        .first::<Option<i64>>(&mut tx.pg())
        .await?
        .unwrap_or(0);
    if through <= done {
        return Ok(None);
    }
    let deleted = through - done;
    if dry_run {
        return Ok(Some(Pruned {
            tenant_id: tenant,
            through,
            deleted,
        }));
    }
    // What goes is checked first: a prune signs the chain as stored, so it
    // must not launder events altered before it.
    let hash = verified_segment(&tx, notary, tenant, done, through).await?;
    let jws = notary
        .sign_prune(tenant, through, &hash, cutoff)
        .map_err(AuditError::Signing)?;
    // The table's triggers hold the record to the chain: its hash must be the
    // stored event's, it only moves forward, and by commit every event up to
    // it must be gone.
    diesel::insert_into(prunes::table)
        .values((
            prunes::tenant_id.eq(tenant),
            prunes::sequence.eq(through),
            prunes::hash.eq(&hash),
            prunes::jws.eq(&jws),
            prunes::deleted_count.eq(deleted),
        ))
        .execute(&mut tx.pg())
        .await?;
    let gone = diesel::delete(
        events::table
            .filter(events::tenant_id.eq(tenant))
            .filter(events::sequence.gt(done))
            .filter(events::sequence.le(through)),
    )
    .execute(&mut tx.pg())
    .await?;
    Ok(Some(Pruned {
        tenant_id: tenant,
        through,
        deleted: i64::try_from(gone).unwrap_or(i64::MAX),
    }))
}

/// Recomputes `tenant`'s events `after + 1 ..= through` from the prune before
/// (or the chain's start), and the link to the event after them; returns the
/// hash of `through`.
async fn verified_segment(
    tx: &PlatformConn<'_>,
    notary: &Notary,
    tenant: Uuid,
    after: i64,
    through: i64,
) -> Result<Vec<u8>, AuditError> {
    let mut prev: Vec<u8> = if after == 0 {
        GENESIS.to_vec()
    } else {
        // The prune this one builds on must be one Audit signed: one the job
        // role wrote on its own is never covered by a signature after it.
        let (hash, jws): (Vec<u8>, String) = prunes::table
            .filter(prunes::tenant_id.eq(tenant))
            .filter(prunes::sequence.eq(after))
            .select((prunes::hash, prunes::jws))
            .first(&mut tx.pg())
            .await?;
        let signed = notary.verify(&jws).is_some_and(|p| {
            p.is_prune() && p.names(&tenant.to_string(), after, &crate::checkpoint::hex(&hash))
        });
        if !signed {
            return Err(AuditError::PruneRefused(format!(
                "tenant {tenant}: the prune through event {after} is not one Audit signed; the chain was not pruned further (VerifyChain reports it)"
            )));
        }
        hash
    };
    let mut expected = after + 1;
    let refuse = |sequence: i64, what: &str| {
        AuditError::PruneRefused(format!(
            "tenant {tenant}: event {sequence} {what}; the chain was not pruned (VerifyChain shows where it breaks)"
        ))
    };
    while expected <= through + 1 {
        let rows: Vec<EventRow> = events::table
            .filter(events::tenant_id.eq(tenant))
            .filter(events::sequence.ge(expected))
            .filter(events::sequence.le(through + 1))
            .order(events::sequence.asc())
            .limit(1000)
            .select(EventRow::as_select())
            .load(&mut tx.pg())
            .await?;
        let Some(last) = rows.last().map(|r| r.sequence) else {
            break;
        };
        for row in &rows {
            if row.sequence != expected {
                return Err(refuse(expected, "is missing"));
            }
            if row.prev_hash != prev {
                return Err(refuse(
                    row.sequence,
                    "does not name the previous event's hash",
                ));
            }
            if row.sequence <= through && row.expected_hash(&prev).as_slice() != row.hash {
                return Err(refuse(row.sequence, "was altered"));
            }
            prev.clone_from(&row.hash);
            expected += 1;
        }
        if last > through {
            break;
        }
    }
    if expected <= through {
        return Err(refuse(expected, "is missing"));
    }
    // The hash of `through` (the last one checked may be the event after it).
    Ok(events::table
        .filter(events::tenant_id.eq(tenant))
        .filter(events::sequence.eq(through))
        .select(events::hash)
        .first(&mut tx.pg())
        .await?)
}

/// Sets `tenant`'s retention period, through the platform role (`db`'s
/// platform pool), and records it in the tenant's own trail in the same
/// transaction: `audit.retention_set`, with the period before and after.
///
/// # Errors
/// On database failure (a period under a day is refused by the table).
pub async fn set_period(db: &Db, tenant: TenantId, days: i32) -> Result<(), AuditError> {
    db.platform_tx(async |tx| {
        let before: Option<i32> = retention_periods::table
            .filter(retention_periods::tenant_id.eq(tenant.as_uuid()))
            .select(retention_periods::retain_days)
            .first(&mut tx.pg())
            .await
            .optional()?;
        diesel::insert_into(retention_periods::table)
            .values((
                retention_periods::tenant_id.eq(tenant.as_uuid()),
                retention_periods::retain_days.eq(days),
            ))
            .on_conflict(retention_periods::tenant_id)
            .do_update()
            .set((
                retention_periods::retain_days.eq(days),
                retention_periods::update_time.eq(diesel::dsl::now),
            ))
            .execute(&mut tx.pg())
            .await?;
        let event = crate::requests::NewEvent {
            id: Uuid::now_v7(),
            tenant,
            actor_user_id: String::new(),
            actor_service: "retention".into(),
            action: "audit.retention_set".into(),
            resource_type: "audit_trail".into(),
            resource_id: tenant.to_string(),
            old_value: before.map(|d| serde_json::json!({ "retain_days": d })),
            new_value: Some(serde_json::json!({ "retain_days": days })),
            metadata: None,
            request_id: String::new(),
            trace_id: String::new(),
            occur_time: crate::grpc::now_micros(),
        };
        crate::repo::append(tx, "audit", std::slice::from_ref(&event)).await?;
        Ok(())
    })
    .await
}

/// Every period set.
///
/// # Errors
/// On database failure.
pub async fn periods(db: &Db) -> Result<Vec<Period>, AuditError> {
    db.platform_tx(async |tx| {
        Ok(retention_periods::table
            .order(retention_periods::tenant_id)
            .load(&mut tx.pg())
            .await?)
    })
    .await
}

//! Repository functions: reads through the caller's tenant scope
//! ([`TenantConn`]), appends through the platform role ([`PlatformConn`]), which
//! may insert events and move chain heads and nothing else.

use std::collections::BTreeMap;

use bulkhead_context::TenantId;
use bulkhead_db::{PlatformConn, TenantConn};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::chain::{self, Chained};
use crate::error::AuditError;
use crate::requests::{Filter, NewEvent};
use crate::retention::Horizon;
use crate::schema::{chain_heads, checkpoints, events, prunes};

/// A stored event.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = events)]
pub struct EventRow {
    pub tenant_id: Uuid,
    pub sequence: i64,
    pub id: Uuid,
    pub actor_user_id: String,
    pub actor_service: String,
    pub source_service: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub old_value: Option<serde_json::Value>,
    pub new_value: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Value>,
    pub request_id: String,
    pub trace_id: String,
    pub occur_time: DateTime<Utc>,
    #[diesel(skip_insertion)]
    pub receive_time: DateTime<Utc>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl EventRow {
    /// Whether `e`, sent by `source`, is this event (the same content: what
    /// Audit assigns — sequence, hashes, receive time — aside).
    #[must_use]
    pub fn same_event(&self, e: &NewEvent, source: &str) -> bool {
        self.source_service == source
            && self.actor_user_id == e.actor_user_id
            && self.actor_service == e.actor_service
            && self.action == e.action
            && self.resource_type == e.resource_type
            && self.resource_id == e.resource_id
            && self.old_value == e.old_value
            && self.new_value == e.new_value
            && self.metadata == e.metadata
            && self.request_id == e.request_id
            && self.trace_id == e.trace_id
            && self.occur_time == e.occur_time
    }

    /// The hash this row should have after `prev`, from its own fields.
    #[must_use]
    pub fn expected_hash(&self, prev: &[u8]) -> [u8; 32] {
        let (tenant, id) = (self.tenant_id.to_string(), self.id.to_string());
        chain::hash(
            prev,
            &Chained {
                tenant_id: &tenant,
                sequence: self.sequence,
                id: &id,
                actor_user_id: &self.actor_user_id,
                actor_service: &self.actor_service,
                source_service: &self.source_service,
                action: &self.action,
                resource_type: &self.resource_type,
                resource_id: &self.resource_id,
                old_value: self.old_value.as_ref(),
                new_value: self.new_value.as_ref(),
                metadata: self.metadata.as_ref(),
                request_id: &self.request_id,
                trace_id: &self.trace_id,
                occur_time: self.occur_time,
            },
        )
    }
}

/// Appends `batch` for `source_service`: per tenant (in tenant order, so two
/// batches never wait on each other in a circle), the chain head is locked,
/// events already stored are skipped (idempotent by id), and the others get the
/// next sequence numbers and hashes. Returns every id now stored.
///
/// # Errors
/// On database failure.
pub async fn append(
    tx: PlatformConn<'_>,
    source_service: &str,
    batch: &[NewEvent],
) -> Result<Vec<Uuid>, AuditError> {
    let mut by_tenant: BTreeMap<Uuid, Vec<&NewEvent>> = BTreeMap::new();
    for event in batch {
        by_tenant
            .entry(*event.tenant.as_uuid())
            .or_default()
            .push(event);
    }
    let receive_time = Utc::now();
    let mut accepted = Vec::with_capacity(batch.len());
    for (tenant, events) in by_tenant {
        diesel::insert_into(chain_heads::table)
            .values((
                chain_heads::tenant_id.eq(tenant),
                chain_heads::sequence.eq(0_i64),
                chain_heads::hash.eq(chain::GENESIS.to_vec()),
            ))
            .on_conflict_do_nothing()
            .execute(&mut tx.pg())
            .await?;
        let (mut sequence, mut prev): (i64, Vec<u8>) = chain_heads::table
            .filter(chain_heads::tenant_id.eq(tenant))
            .select((chain_heads::sequence, chain_heads::hash))
            .for_update()
            .first(&mut tx.pg())
            .await?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let stored: Vec<EventRow> = events::table
            .filter(events::tenant_id.eq(tenant))
            .filter(events::id.eq_any(&ids))
            .select(EventRow::as_select())
            .load(&mut tx.pg())
            .await?;
        let mut rows: Vec<EventRow> = Vec::new();
        for e in events {
            accepted.push(e.id);
            // Seen before (stored, or earlier in this batch): the same event
            // again is acknowledged; another event under its id is refused.
            if let Some(first) = stored.iter().chain(&rows).find(|r| r.id == e.id) {
                if !first.same_event(e, source_service) {
                    return Err(AuditError::IdReused(e.id));
                }
                continue;
            }
            sequence += 1;
            let mut row = EventRow {
                tenant_id: tenant,
                sequence,
                id: e.id,
                actor_user_id: e.actor_user_id.clone(),
                actor_service: e.actor_service.clone(),
                source_service: source_service.to_owned(),
                action: e.action.clone(),
                resource_type: e.resource_type.clone(),
                resource_id: e.resource_id.clone(),
                old_value: e.old_value.clone(),
                new_value: e.new_value.clone(),
                metadata: e.metadata.clone(),
                request_id: e.request_id.clone(),
                trace_id: e.trace_id.clone(),
                occur_time: e.occur_time,
                receive_time,
                prev_hash: prev.clone(),
                hash: Vec::new(),
            };
            row.hash = row.expected_hash(&prev).to_vec();
            prev.clone_from(&row.hash);
            rows.push(row);
        }
        if !rows.is_empty() {
            insert(&tx, &rows).await?;
            diesel::update(chain_heads::table.filter(chain_heads::tenant_id.eq(tenant)))
                .set((
                    chain_heads::sequence.eq(sequence),
                    chain_heads::hash.eq(&prev),
                ))
                .execute(&mut tx.pg())
                .await?;
        }
    }
    Ok(accepted)
}

/// Inserts `rows` as one statement of arrays: the same text whatever the
/// batch size, so it is prepared once per connection (a multi-row VALUES has
/// new text, and 18 parameters a row, for every batch size).
async fn insert(tx: &PlatformConn<'_>, rows: &[EventRow]) -> Result<(), AuditError> {
    use diesel::sql_types::{Array, BigInt, Bytea, Jsonb, Nullable, Text, Timestamptz};
    let column = |f: fn(&EventRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let json = |f: fn(&EventRow) -> Option<serde_json::Value>| {
        rows.iter()
            .map(f)
            .collect::<Vec<Option<serde_json::Value>>>()
    };
    diesel::sql_query(
        "INSERT INTO events (tenant_id, sequence, id, actor_user_id, actor_service,
                             source_service, action, resource_type, resource_id, old_value,
                             new_value, metadata, request_id, trace_id, occur_time,
                             prev_hash, hash)
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[],
                              $11::jsonb[], $12::jsonb[], $13::text[], $14::text[],
                              $15::timestamptz[], $16::bytea[], $17::bytea[])",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(rows.iter().map(|r| r.tenant_id).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.sequence).collect::<Vec<_>>())
    .bind::<Array<diesel::sql_types::Uuid>, _>(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(column(|r| r.actor_user_id.clone()))
    .bind::<Array<Text>, _>(column(|r| r.actor_service.clone()))
    .bind::<Array<Text>, _>(column(|r| r.source_service.clone()))
    .bind::<Array<Text>, _>(column(|r| r.action.clone()))
    .bind::<Array<Text>, _>(column(|r| r.resource_type.clone()))
    .bind::<Array<Text>, _>(column(|r| r.resource_id.clone()))
    .bind::<Array<Nullable<Jsonb>>, _>(json(|r| r.old_value.clone()))
    .bind::<Array<Nullable<Jsonb>>, _>(json(|r| r.new_value.clone()))
    .bind::<Array<Nullable<Jsonb>>, _>(json(|r| r.metadata.clone()))
    .bind::<Array<Text>, _>(column(|r| r.request_id.clone()))
    .bind::<Array<Text>, _>(column(|r| r.trace_id.clone()))
    .bind::<Array<Timestamptz>, _>(rows.iter().map(|r| r.occur_time).collect::<Vec<_>>())
    .bind::<Array<Bytea>, _>(rows.iter().map(|r| r.prev_hash.clone()).collect::<Vec<_>>())
    .bind::<Array<Bytea>, _>(rows.iter().map(|r| r.hash.clone()).collect::<Vec<_>>())
    .execute(&mut tx.pg())
    .await?;
    Ok(())
}

type Boxed<'a> = events::BoxedQuery<'a, diesel::pg::Pg>;

/// The tenant's events matching `filter` (audit queries vary too much for one
/// static shape: each filter is an indexed column).
fn filtered<'a>(tenant: TenantId, filter: &'a Filter) -> Boxed<'a> {
    let mut query = events::table
        .filter(events::tenant_id.eq(*tenant.as_uuid()))
        .into_boxed();
    if let Some(start) = filter.start {
        query = query.filter(events::occur_time.ge(start));
    }
    if let Some(end) = filter.end {
        query = query.filter(events::occur_time.lt(end));
    }
    if let Some(action) = &filter.action {
        query = query.filter(events::action.eq(action));
    }
    if let Some(resource_type) = &filter.resource_type {
        query = query.filter(events::resource_type.eq(resource_type));
    }
    if let Some(resource_id) = &filter.resource_id {
        query = query.filter(events::resource_id.eq(resource_id));
    }
    if let Some(actor) = &filter.actor_user_id {
        query = query.filter(events::actor_user_id.eq(actor));
    }
    query
}

/// A page of the tenant's events before `before` (occur_time, sequence),
/// newest first.
///
/// # Errors
/// On database failure.
pub async fn query(
    tx: TenantConn<'_>,
    filter: &Filter,
    before: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<EventRow>, AuditError> {
    let mut query = filtered(tx.tenant_id(), filter);
    if let Some((time, sequence)) = before {
        query = query.filter(
            events::occur_time.le(time).and(
                events::occur_time
                    .lt(time)
                    .or(events::sequence.lt(sequence)),
            ),
        );
    }
    Ok(query
        .order((events::occur_time.desc(), events::sequence.desc()))
        .limit(limit)
        .select(EventRow::as_select())
        .load(&mut tx.pg())
        .await?)
}

/// A batch of the tenant's events after sequence `after`, oldest first.
///
/// # Errors
/// On database failure.
pub async fn batch_after(
    tx: TenantConn<'_>,
    filter: &Filter,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRow>, AuditError> {
    Ok(filtered(tx.tenant_id(), filter)
        .filter(events::sequence.gt(after))
        .order(events::sequence.asc())
        .limit(limit)
        .select(EventRow::as_select())
        .load(&mut tx.pg())
        .await?)
}

/// The head of `tenant`'s chain: last sequence and hash (none before its first
/// event).
///
/// # Errors
/// On database failure.
pub async fn head(
    tx: PlatformConn<'_>,
    tenant: TenantId,
) -> Result<Option<(i64, Vec<u8>)>, AuditError> {
    Ok(chain_heads::table
        .filter(chain_heads::tenant_id.eq(tenant.as_uuid()))
        .select((chain_heads::sequence, chain_heads::hash))
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// The tenant's newest checkpoint: (sequence, hash, jws).
///
/// # Errors
/// On database failure.
pub async fn latest_checkpoint(
    tx: TenantConn<'_>,
) -> Result<Option<(i64, Vec<u8>, String)>, AuditError> {
    Ok(checkpoints::table
        .filter(checkpoints::tenant_id.eq(tx.tenant_id().as_uuid()))
        .order(checkpoints::sequence.desc())
        .select((checkpoints::sequence, checkpoints::hash, checkpoints::jws))
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// Where the tenant's stored chain starts when its oldest events were pruned:
/// the newest prune's signed checkpoint.
///
/// # Errors
/// On database failure.
pub async fn horizon(tx: TenantConn<'_>) -> Result<Option<Horizon>, AuditError> {
    Ok(prunes::table
        .filter(prunes::tenant_id.eq(tx.tenant_id().as_uuid()))
        .order(prunes::sequence.desc())
        .select((prunes::sequence, prunes::hash, prunes::jws))
        .first::<(i64, Vec<u8>, String)>(&mut tx.pg())
        .await
        .optional()?
        .map(|(sequence, hash, jws)| Horizon {
            sequence,
            hash,
            jws,
        }))
}

/// Stores a checkpoint (once per tenant and sequence).
///
/// # Errors
/// On database failure.
pub async fn store_checkpoint(
    tx: PlatformConn<'_>,
    tenant: Uuid,
    sequence: i64,
    hash: &[u8],
    jws: &str,
) -> Result<(), AuditError> {
    diesel::insert_into(checkpoints::table)
        .values((
            checkpoints::tenant_id.eq(tenant),
            checkpoints::sequence.eq(sequence),
            checkpoints::hash.eq(hash),
            checkpoints::jws.eq(jws),
        ))
        .on_conflict_do_nothing()
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    sequence: i64,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    hash: Vec<u8>,
}

/// The chain heads that moved since their newest checkpoint.
///
/// # Errors
/// On database failure.
pub async fn heads_to_checkpoint(
    tx: PlatformConn<'_>,
) -> Result<Vec<(Uuid, i64, Vec<u8>)>, AuditError> {
    let heads: Vec<Head> = diesel::sql_query(
        "SELECT h.tenant_id, h.sequence, h.hash FROM chain_heads h
          WHERE h.sequence > COALESCE(
                (SELECT max(c.sequence) FROM checkpoints c WHERE c.tenant_id = h.tenant_id), 0)",
    )
    .load(&mut tx.pg())
    .await?;
    Ok(heads
        .into_iter()
        .map(|h| (h.tenant_id, h.sequence, h.hash))
        .collect())
}

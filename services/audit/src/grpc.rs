//! The gRPC handlers: appends from the writer services' relays (the source
//! service from the caller's token), and a tenant's own reads.

use bulkhead_context::{PlatformRole, TenantId, TenantRole};
use bulkhead_db::Db;
use bulkhead_guard::{RequestContext, SecurityEvents};
use bulkhead_proto::audit::v1 as pb;
use bulkhead_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use tonic::{Request, Response, Status};

use crate::chain::GENESIS;
use crate::checkpoint::{Notary, hex};
use crate::convert;
use crate::error::AuditError;
use crate::repo;
use crate::requests::{Append, NewEvent, Query, export_filter};
use bulkhead_rpc::InvalidRequest;

/// Events read per export batch and per verification step: with events capped
/// at 64 KiB of values, memory stays bounded whatever the size of the chain.
const BATCH: i64 = 100;

/// Exports of one tenant's trail running at once; more wait for one to end
/// (RESOURCE_EXHAUSTED with RetryInfo), so one tenant cannot hold every
/// connection of the pool with exports.
pub const EXPORTS_PER_TENANT: usize = 2;

/// How long an export waits for its reader to take the next message before
/// it gives up (and frees its slot).
const EXPORT_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Most bytes in one streamed export message or one query page: clients' default
/// limit is 4 MiB.
const MESSAGE_BYTES: usize = 1024 * 1024;

/// Now, to the microsecond (what the database keeps, so what the chain hashes).
/// Signs and stores `tenant`'s chain head now (none for a chain with no event).
async fn sign_head(
    tx: bulkhead_db::PlatformConn<'_>,
    notary: &Notary,
    tenant: TenantId,
) -> Result<Option<pb::Checkpoint>, AuditError> {
    let Some((sequence, hash)) = repo::head(tx, tenant).await?.filter(|(s, _)| *s > 0) else {
        return Ok(None);
    };
    let (jws, time) = notary
        .sign(*tenant.as_uuid(), sequence, &hash)
        .map_err(AuditError::Signing)?;
    repo::store_checkpoint(tx, *tenant.as_uuid(), sequence, &hash, &jws).await?;
    Ok(Some(pb::Checkpoint {
        tenant_id: tenant.to_string(),
        sequence,
        hash: hex(&hash),
        create_time: Some(bulkhead_rpc::timestamp(time)),
        jws,
    }))
}

/// A signed checkpoint as the API shows it, from what its signature says.
fn checkpoint_message(jws: &str, payload: &crate::checkpoint::Payload) -> pb::Checkpoint {
    pb::Checkpoint {
        tenant_id: payload.tenant_id.clone(),
        sequence: payload.sequence,
        hash: payload.hash.clone(),
        create_time: chrono::DateTime::from_timestamp(payload.iat, 0).map(bulkhead_rpc::timestamp),
        jws: jws.to_owned(),
    }
}

/// The chain a trail request reads: the caller's tenant's (OWNER/ADMIN), or,
/// asked for, the platform chain of events of no tenant (SUPER_ADMIN only).
/// A SUPER_ADMIN reads a tenant's trail only as that tenant's OWNER/ADMIN.
fn chain_of(ctx: &RequestContext, platform: bool) -> Result<TenantId, Status> {
    let user = ctx.tenant_user()?;
    if platform {
        return if user.platform_role == PlatformRole::SuperAdmin {
            Ok(TenantId::from_uuid(uuid::Uuid::nil()))
        } else {
            Err(AuditError::Forbidden.into())
        };
    }
    if user.tenant_role >= TenantRole::Admin {
        Ok(user.tenant_id)
    } else {
        Err(AuditError::Forbidden.into())
    }
}

pub(crate) fn now_micros() -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound as _;
    let now = chrono::Utc::now();
    now.duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or(now)
}

/// The exports running, per tenant.
#[derive(Debug, Clone, Default)]
struct Exports(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<TenantId, usize>>>);

/// One running export; dropped when its stream ends.
struct ExportSlot {
    exports: Exports,
    tenant: TenantId,
}

impl Exports {
    fn take(&self, tenant: TenantId) -> Option<ExportSlot> {
        let mut running = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = running.entry(tenant).or_insert(0);
        if *count >= EXPORTS_PER_TENANT {
            return None;
        }
        *count += 1;
        Some(ExportSlot {
            exports: self.clone(),
            tenant,
        })
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        let mut running = self
            .exports
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = running.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.tenant);
            }
        }
    }
}

/// The Audit service's handlers.
#[derive(Debug, Clone)]
pub struct AuditApi {
    db: Db,
    notary: Notary,
    exports: Exports,
    /// Where refusals made here (past the guard) go, like the guard's own.
    security: Option<SecurityEvents>,
}

impl AuditApi {
    /// Handlers over the service's pools, signing checkpoints with `notary`.
    #[must_use]
    pub fn new(db: Db, notary: Notary) -> Self {
        Self {
            db,
            notary,
            exports: Exports::default(),
            security: None,
        }
    }

    /// Reports the refusals the handlers make (a platform chain asked for by a
    /// non-SUPER_ADMIN, a SUPER_ADMIN below ADMIN in their tenant) to `events`.
    #[must_use]
    pub fn with_security(mut self, events: SecurityEvents) -> Self {
        self.security = Some(events);
        self
    }

    /// The chain a trail request reads ([`chain_of`]); a refusal is also a
    /// security event.
    fn chain(
        &self,
        ctx: &RequestContext,
        platform: bool,
        method: &str,
    ) -> Result<TenantId, Status> {
        let refused = match chain_of(ctx, platform) {
            Ok(chain) => return Ok(chain),
            Err(refused) => refused,
        };
        if let (Some(events), true) = (
            &self.security,
            refused.code() == tonic::Code::PermissionDenied,
        ) {
            events.report_denied(ctx, format!("/{}/{method}", crate::SERVICE_NAME));
        }
        Err(refused)
    }

    /// Signs every chain head that moved since its newest checkpoint (the
    /// periodic job); returns how many.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn checkpoint_all(&self) -> Result<usize, AuditError> {
        let notary = &self.notary;
        self.db
            .platform_tx(async |tx| {
                let heads = repo::heads_to_checkpoint(tx).await?;
                for (tenant, sequence, hash) in &heads {
                    let (jws, _) = notary
                        .sign(*tenant, *sequence, hash)
                        .map_err(AuditError::Signing)?;
                    repo::store_checkpoint(tx, *tenant, *sequence, hash, &jws).await?;
                }
                Ok(heads.len())
            })
            .await
    }

    /// Walks `tenant`'s chain from its start (event 1, or after its newest
    /// signed prune) and holds it to the newest stored checkpoint, `given`,
    /// and the chain head.
    async fn check_chain(
        &self,
        tenant: TenantId,
        given: Option<&crate::checkpoint::Payload>,
    ) -> Result<(pb::VerifyChainResponse, Option<i64>), Status> {
        // The checkpoints to hold the chain to: the newest stored one (its
        // signature checked, never its columns) and the caller's own copy.
        let notary = &self.notary;
        let (stored, horizon) = self
            .db
            .tenant_read(tenant, async |tx| {
                Ok::<_, AuditError>((repo::latest_checkpoint(tx).await?, repo::horizon(tx).await?))
            })
            .await?;
        // Where the chain started for this walk (the prune it read).
        let started = horizon.as_ref().map(|h| h.sequence);
        let fault = |id: String, detail: String, checked: i64| {
            Ok((
                pb::VerifyChainResponse {
                    ok: false,
                    first_bad_event_id: id,
                    checked_count: checked,
                    detail,
                    pruned_through: None,
                },
                started,
            ))
        };
        // A pruned chain starts after the prune's checkpoint, whose signature
        // (never its columns) says which event and hash it was.
        let pruned_through = match &horizon {
            None => None,
            Some(h) => match notary
                .verify(&h.jws)
                .filter(|p| p.is_prune() && p.names(&tenant.to_string(), h.sequence, &hex(&h.hash)))
            {
                Some(payload) => Some(checkpoint_message(&h.jws, &payload)),
                None => {
                    return fault(
                        String::new(),
                        "the record of a prune does not verify: it was altered".into(),
                        0,
                    );
                }
            },
        };
        let mut checkpoints: Vec<(i64, String)> = Vec::new();
        if let Some((_, _, jws)) = stored {
            match notary
                .verify(&jws)
                .filter(|p| p.tenant_id == tenant.to_string())
            {
                Some(payload) => checkpoints.push((payload.sequence, payload.hash)),
                None => {
                    return fault(
                        String::new(),
                        "the newest stored checkpoint does not verify: it was altered".into(),
                        0,
                    );
                }
            }
        }
        if let Some(payload) = given {
            checkpoints.push((payload.sequence, payload.hash.clone()));
        }
        // The head, read after the checkpoints (it only grows past them) and
        // before the walk: appends committed meanwhile are beyond it, not a
        // false alarm.
        let head = self
            .db
            .platform_tx(async |tx| repo::head(tx, tenant).await)
            .await?;
        let last = head.as_ref().map_or(i64::MAX, |(sequence, _)| *sequence);
        let everything = crate::requests::Filter::default();
        let (mut prev, start) = horizon
            .as_ref()
            .map_or((GENESIS.to_vec(), 0), |h| (h.hash.clone(), h.sequence));
        let mut expected = start + 1;
        let mut checked = 0_i64;
        // Checkpoints of pruned events: only the prune's own can be held.
        let mut at_checkpoints = std::collections::HashMap::new();
        if let Some(h) = &horizon {
            at_checkpoints.insert(h.sequence, hex(&h.hash));
        }
        checkpoints.retain(|(sequence, _)| *sequence >= start);
        loop {
            let rows = self
                .db
                .tenant_read(tenant, async |tx| {
                    repo::batch_after(tx, &everything, expected - 1, BATCH).await
                })
                .await?;
            if rows.is_empty() || expected > last {
                break;
            }
            for row in rows.iter().take_while(|r| r.sequence <= last) {
                if row.sequence != expected {
                    return fault(
                        row.id.to_string(),
                        format!(
                            "event {expected} is missing (the next stored is {})",
                            row.sequence
                        ),
                        checked,
                    );
                }
                if row.prev_hash != prev || row.expected_hash(&prev).as_slice() != row.hash {
                    return fault(
                        row.id.to_string(),
                        format!("event {expected} was altered"),
                        checked,
                    );
                }
                if checkpoints
                    .iter()
                    .any(|(sequence, _)| *sequence == row.sequence)
                {
                    at_checkpoints.insert(row.sequence, hex(&row.hash));
                }
                prev.clone_from(&row.hash);
                expected += 1;
                checked += 1;
            }
        }
        let end = expected - 1;
        // Events cut off the end leave no gap: a signed checkpoint, and the
        // chain head, still name them.
        for (sequence, hash) in &checkpoints {
            match at_checkpoints.get(sequence) {
                None => {
                    return fault(
                        String::new(),
                        format!(
                            "the chain ends at event {end} but a signed checkpoint covers {sequence}: events were removed from its end"
                        ),
                        checked,
                    );
                }
                Some(found) if found != hash => {
                    return fault(
                        String::new(),
                        format!("event {sequence} is not the one its signed checkpoint names"),
                        checked,
                    );
                }
                Some(_) => {}
            }
        }
        if let Some((sequence, hash)) = head
            && (sequence != end || hash != prev)
        {
            return fault(
                String::new(),
                format!(
                    "the chain ends at event {end} but its head says {sequence}: events were removed from its end"
                ),
                checked,
            );
        }
        Ok((
            pb::VerifyChainResponse {
                ok: true,
                first_bad_event_id: String::new(),
                checked_count: checked,
                detail: String::new(),
                pruned_through,
            },
            started,
        ))
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> AuditServiceServer<Self> {
        AuditServiceServer::new(self)
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn append_events(
        &self,
        request: Request<pb::AppendEventsRequest>,
    ) -> Reply<pb::AppendEventsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        // The writer's name from its token, never from the request.
        let source = ctx
            .principal()
            .service()
            .ok_or(AuditError::Forbidden)?
            .name
            .clone();
        let Append(events) = Append::parse(request.get_ref(), &source)?;
        let spans = recording_spans(request.get_ref());
        let accepted = self
            .db
            .platform_tx(async |tx| repo::append(tx, &source, &events).await)
            .await?;
        drop(spans);
        Ok(Response::new(pb::AppendEventsResponse {
            accepted_ids: accepted.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn query_events(
        &self,
        request: Request<pb::QueryEventsRequest>,
    ) -> Reply<pb::QueryEventsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let chain = self.chain(ctx, request.get_ref().platform, "QueryEvents")?;
        let query = Query::parse(request.get_ref(), chain)?;
        let mut rows = self
            .db
            .tenant_read(chain, async |tx| {
                repo::query(tx, &query.filter, query.before, query.size + 1).await
            })
            .await?;
        let limit = usize::try_from(query.size).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        // A page also ends before it passes MESSAGE_BYTES.
        let mut events = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        for row in &rows {
            let event = convert::event(row);
            bytes += prost::Message::encoded_len(&event);
            if bytes > MESSAGE_BYTES && !events.is_empty() {
                break;
            }
            events.push(event);
        }
        let cut = events.len() < rows.len();
        let next_page_token = if more || cut {
            events
                .len()
                .checked_sub(1)
                .and_then(|i| rows.get(i))
                .map(|r| query.next_token(r.occur_time, r.sequence))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::QueryEventsResponse {
            events,
            next_page_token,
        }))
    }

    type ExportEventsStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::ExportEventsResponse, Status>>;

    async fn export_events(
        &self,
        request: Request<pb::ExportEventsRequest>,
    ) -> Reply<Self::ExportEventsStream> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let tenant = self.chain(ctx, request.get_ref().platform, "ExportEvents")?;
        let filter = export_filter(request.get_ref())?;
        let slot = self.exports.take(tenant).ok_or_else(|| {
            bulkhead_rpc::throttled(
                &format!("{EXPORTS_PER_TENANT} exports of this trail are running"),
                std::time::Duration::from_secs(5),
            )
        })?;
        // An export is itself in the trail, before the events it carries.
        let exported = NewEvent {
            id: uuid::Uuid::now_v7(),
            tenant,
            actor_user_id: user.user_id.to_string(),
            actor_service: ctx
                .principal()
                .service()
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            action: "audit.exported".into(),
            resource_type: "audit_trail".into(),
            resource_id: tenant.to_string(),
            old_value: None,
            new_value: Some(serde_json::json!({ "filter": {
                "start_time": filter.start.map(crate::chain::time_text),
                "end_time": filter.end.map(crate::chain::time_text),
                "action": filter.action,
                "resource_type": filter.resource_type,
                "resource_id": filter.resource_id,
                "actor_user_id": filter.actor_user_id,
            } })),
            metadata: None,
            request_id: ctx.request_id().as_str().to_owned(),
            trace_id: ctx.trace_id().unwrap_or_default().to_owned(),
            occur_time: now_micros(),
        };
        let notary = &self.notary;
        let checkpoint = self
            .db
            .platform_tx(async |tx| {
                repo::append(tx, "audit", std::slice::from_ref(&exported)).await?;
                sign_head(tx, notary, tenant).await
            })
            .await?;
        let pruned_through = self
            .db
            .tenant_read(tenant, async |tx| repo::horizon(tx).await)
            .await?
            .map(|h| match notary.verify(&h.jws) {
                Some(payload) => checkpoint_message(&h.jws, &payload),
                // Sent as stored: the verifier finds it altered.
                None => pb::Checkpoint {
                    tenant_id: tenant.to_string(),
                    sequence: h.sequence,
                    hash: hex(&h.hash),
                    create_time: None,
                    jws: h.jws,
                },
            });
        // Events at or below the prune are gone, or going; events past the
        // head signed as the export began are not in it (the checkpoint could
        // not vouch for them).
        let start_after = pruned_through.as_ref().map_or(0, |c| c.sequence);
        let through = checkpoint.as_ref().map_or(0, |c| c.sequence);
        // Two batches in flight at most: a slow reader slows the reads.
        let (send, receive) = tokio::sync::mpsc::channel(2);
        let db = self.db.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // Held until the stream ends, its reader goes away, or stops
            // reading for EXPORT_STALL.
            let _slot = slot;
            // A long export stops when its reader's session is revoked or
            // its tenant deactivated, as a new call would be refused: each
            // message goes out only while the reader's identity stands.
            let put = async |item: Result<pb::ExportEventsResponse, Status>| {
                let (item, stands) = match ctx.still_stands() {
                    Ok(()) => (item, true),
                    Err(refused) => (Err(refused), false),
                };
                let sent = matches!(
                    tokio::time::timeout(EXPORT_STALL, send.send(item)).await,
                    Ok(Ok(()))
                );
                sent && stands
            };
            if pruned_through.is_some() {
                let start = pb::ExportEventsResponse {
                    events: Vec::new(),
                    checkpoint: None,
                    pruned_through,
                };
                if !put(Ok(start)).await {
                    return;
                }
            }
            let mut after = start_after;
            loop {
                let rows = db
                    .tenant_read(tenant, async |tx| {
                        repo::batch_after(tx, &filter, after, BATCH).await
                    })
                    .await;
                let mut rows = match rows {
                    Ok(rows) => rows,
                    Err(err) => {
                        put(Err(Status::from(err))).await;
                        return;
                    }
                };
                rows.retain(|r| r.sequence <= through);
                let Some(last) = rows.last().map(|r| r.sequence) else {
                    let end = pb::ExportEventsResponse {
                        events: Vec::new(),
                        checkpoint,
                        pruned_through: None,
                    };
                    put(Ok(end)).await;
                    return;
                };
                after = last;
                // Messages of at most MESSAGE_BYTES (one event always fits).
                let mut events = Vec::new();
                let mut bytes = 0;
                for row in &rows {
                    let event = convert::event(row);
                    let size = prost::Message::encoded_len(&event);
                    if bytes + size > MESSAGE_BYTES && !events.is_empty() {
                        let batch = pb::ExportEventsResponse {
                            events: std::mem::take(&mut events),
                            checkpoint: None,
                            pruned_through: None,
                        };
                        if !put(Ok(batch)).await {
                            return; // the reader went away, or stopped reading
                        }
                        bytes = 0;
                    }
                    bytes += size;
                    events.push(event);
                }
                let batch = pb::ExportEventsResponse {
                    events,
                    checkpoint: None,
                    pruned_through: None,
                };
                if !put(Ok(batch)).await {
                    return; // the reader went away, or stopped reading
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            receive,
        )))
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Reply<pb::VerifyChainResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let tenant = self.chain(ctx, request.get_ref().platform, "VerifyChain")?;
        let given = request.get_ref().checkpoint.trim();
        let given = if given.is_empty() {
            None
        } else {
            Some(
                self.notary
                    .verify(given)
                    .filter(|p| p.tenant_id == tenant.to_string())
                    .ok_or_else(|| {
                        InvalidRequest::field(
                            "checkpoint",
                            "is not a checkpoint of this tenant signed by Audit",
                        )
                    })?,
            )
        };
        // A prune committed during the walk deletes events the walk expected:
        // when the chain's start moved meanwhile, the walk is done again.
        let (mut verified, start) = self.check_chain(tenant, given.as_ref()).await?;
        if !verified.ok {
            let now = self
                .db
                .tenant_read(tenant, async |tx| repo::horizon(tx).await)
                .await?
                .map(|h| h.sequence);
            if now != start {
                (verified, _) = self.check_chain(tenant, given.as_ref()).await?;
            }
        }
        Ok(Response::new(verified))
    }

    async fn create_checkpoint(
        &self,
        request: Request<pb::CreateCheckpointRequest>,
    ) -> Reply<pb::CreateCheckpointResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let tenant = self.chain(ctx, request.get_ref().platform, "CreateCheckpoint")?;
        let notary = &self.notary;
        let checkpoint = self
            .db
            .platform_tx(async |tx| sign_head(tx, notary, tenant).await)
            .await?;
        Ok(Response::new(pb::CreateCheckpointResponse { checkpoint }))
    }

    async fn get_checkpoint_keys(
        &self,
        _request: Request<pb::GetCheckpointKeysRequest>,
    ) -> Reply<pb::GetCheckpointKeysResponse> {
        Ok(Response::new(pb::GetCheckpointKeysResponse {
            jwks_json: self.notary.jwks_json(),
        }))
    }
}

/// When traces are exported: one span per event that came with its writer's
/// trace context, a child of the span that wrote it (so the request that
/// caused an event shows its recording), open while the batch is stored.
fn recording_spans(request: &pb::AppendEventsRequest) -> Vec<tracing::Span> {
    if !bulkhead_telemetry::exporting() {
        return Vec::new();
    }
    request
        .events
        .iter()
        .filter(|e| !e.traceparent.is_empty())
        .map(|e| {
            let span = tracing::info_span!(
                "audit.record",
                otel.kind = "consumer",
                tenant.id = e.tenant_id.as_str(),
                audit.action = e.action.as_str(),
                audit.event_id = e.id.as_str(),
            );
            bulkhead_telemetry::propagation::continue_from(&span, &e.traceparent);
            span
        })
        .collect()
}

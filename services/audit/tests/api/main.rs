//! Audit's API tests on real sockets and a real Postgres: idempotent appends,
//! a gap-free and fork-free chain under concurrent appenders, tenant isolation
//! and roles, tampering and truncation found by VerifyChain, the append-only
//! trigger, the writer's name from its token, queries and exports.

mod retention;

use std::sync::Arc;

use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_postgres::testing::{TestDatabase, test_database};
use bulkhead_proto::audit::v1 as pb;
use bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient;
use bulkhead_server::Peers;
use bulkhead_testkit::{Caller, Tokens, start_module};
use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};
use tonic::Code;
use tonic::transport::Channel;

struct Harness {
    client: AuditServiceClient<Channel>,
    tokens: Tokens,
    database: TestDatabase,
    guard: bulkhead_server::SharedGuard,
}

async fn spawn_service() -> Harness {
    spawn_with(bulkhead_audit::AuditModule::default()).await
}

async fn spawn_with(module: bulkhead_audit::AuditModule) -> Harness {
    let database = test_database(&bulkhead_audit::SCHEMA).await;
    // Appends come from Task.
    let tokens = Tokens::new("task");
    let guard = tokens.guard();
    let url = start_module(&module, &database, &guard, Peers::default(), None).await;
    Harness {
        client: AuditServiceClient::new(bulkhead_testkit::channel(&url)),
        tokens,
        database,
        guard,
    }
}

impl Harness {
    fn as_service<T>(&self, name: &str, message: T) -> tonic::Request<T> {
        let token = self.tokens.service_named(name);
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "x-service-authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        request
    }

    fn as_user<T>(&self, tenant: TenantId, role: TenantRole, message: T) -> tonic::Request<T> {
        let user = TenantUser {
            user_id: UserId::new_v7(),
            session_id: SessionId::new_v7(),
            tenant_id: tenant,
            tenant_slug: "t".into(),
            tenant_role: role,
            platform_role: PlatformRole::User,
        };
        self.tokens.request(&Caller::User(user), message)
    }

    /// 5,000 events of about 1 KB each in `tenant`'s trail, written as the
    /// owner (hashes not chained: for exports, not for verification).
    async fn seed_large_trail(&self, tenant: TenantId) {
        self.sql(&format!(
            "INSERT INTO events (tenant_id, sequence, id, source_service, action, occur_time, new_value, prev_hash, hash)
             SELECT '{tenant}', g, gen_random_uuid(), 'task', 'task.created', now(),
                    jsonb_build_object('d', repeat('x', 1000)), '\\x00'::bytea, sha256(g::text::bytea)
               FROM generate_series(1, 5000) g;
             INSERT INTO chain_heads VALUES ('{tenant}', 5000, sha256('5000'::bytea));"
        ))
        .await;
    }

    async fn append(&self, events: Vec<pb::AuditEvent>) -> Result<Vec<String>, tonic::Status> {
        self.client
            .clone()
            .append_events(self.as_service("task", pb::AppendEventsRequest { events }))
            .await
            .map(|r| r.into_inner().accepted_ids)
    }

    async fn verify(&self, tenant: TenantId) -> pb::VerifyChainResponse {
        self.verify_with(tenant, String::new())
            .await
            .expect("verify")
    }

    async fn verify_with(
        &self,
        tenant: TenantId,
        checkpoint: String,
    ) -> Result<pb::VerifyChainResponse, tonic::Status> {
        self.client
            .clone()
            .verify_chain(self.as_user(
                tenant,
                TenantRole::Admin,
                pb::VerifyChainRequest {
                    checkpoint,
                    ..Default::default()
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn checkpoint(&self, tenant: TenantId) -> pb::Checkpoint {
        self.client
            .clone()
            .create_checkpoint(self.as_user(
                tenant,
                TenantRole::Owner,
                pb::CreateCheckpointRequest::default(),
            ))
            .await
            .expect("checkpoint")
            .into_inner()
            .checkpoint
            .expect("a chain with events has a head")
    }

    async fn query(
        &self,
        tenant: TenantId,
        request: pb::QueryEventsRequest,
    ) -> Result<pb::QueryEventsResponse, tonic::Status> {
        self.client
            .clone()
            .query_events(self.as_user(tenant, TenantRole::Admin, request))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn sql(&self, statements: &str) {
        let mut admin = self.database.admin_connection().await;
        admin
            .batch_execute(statements)
            .await
            .unwrap_or_else(|e| panic!("{statements}: {e}"));
    }

    async fn sequences(&self, tenant: TenantId) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            sequence: i64,
            #[diesel(sql_type = diesel::sql_types::Bytea)]
            prev_hash: Vec<u8>,
            #[diesel(sql_type = diesel::sql_types::Bytea)]
            hash: Vec<u8>,
        }
        let mut admin = self.database.admin_connection().await;
        diesel::sql_query(format!(
            "SELECT sequence, prev_hash, hash FROM events WHERE tenant_id = '{tenant}' ORDER BY sequence"
        ))
        .load::<Row>(&mut admin)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| (r.sequence, r.prev_hash, r.hash))
        .collect()
    }
}

fn event(tenant: TenantId, action: &str) -> pb::AuditEvent {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "title".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("x".into())),
        },
    );
    pb::AuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.to_string(),
        actor_user_id: UserId::new_v7().to_string(),
        action: action.into(),
        resource_type: "task".into(),
        resource_id: "r1".into(),
        new_value: Some(prost_types::Struct { fields }),
        request_id: "req".into(),
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
        source_service: "auth".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_idempotent_and_the_writer_is_named_by_its_token() {
    let h = spawn_service().await;
    let tenant = TenantId::new_v7();
    let batch = vec![event(tenant, "task.created"), event(tenant, "task.updated")];
    let ids: Vec<String> = batch.iter().map(|e| e.id.clone()).collect();
    assert_eq!(h.append(batch.clone()).await.expect("append"), ids);
    assert_eq!(
        h.append(batch.clone()).await.expect("again"),
        ids,
        "acknowledged again"
    );
    let stored = h
        .query(tenant, pb::QueryEventsRequest::default())
        .await
        .expect("query")
        .events;
    assert_eq!(stored.len(), 2, "one copy each");
    assert!(
        stored.iter().all(|e| e.source_service == "task"),
        "from the token, not the body"
    );
    assert_eq!(stored[0].sequence, 2, "newest first");
    assert_eq!(
        stored[1].occur_time,
        Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_000
        }),
        "microseconds, as the chain hashes them"
    );
    assert!(h.verify(tenant).await.ok);

    // The same id with other content is another event: refused, nothing stored
    // (a writer's bug or a forgery, never silently acknowledged).
    let mut rewritten = batch[0].clone();
    rewritten.action = "task.deleted".into();
    let conflict = h
        .append(vec![event(tenant, "task.created"), rewritten])
        .await
        .expect_err("another event under a stored id");
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert!(
        conflict.message().contains(&batch[0].id),
        "{}",
        conflict.message()
    );
    let twice = event(tenant, "task.created");
    let mut other = twice.clone();
    other.resource_id = "r2".into();
    let conflict = h
        .append(vec![twice, other])
        .await
        .expect_err("two events, one id");
    assert_eq!(conflict.code(), Code::AlreadyExists);
    assert_eq!(
        h.sequences(tenant).await.len(),
        2,
        "nothing stored by either"
    );
}

/// 8 appenders for one tenant at once: sequence numbers 1..n without a gap,
/// each event chained to the one before (no fork).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_leave_a_gap_free_fork_free_chain() {
    let h = Arc::new(spawn_service().await);
    let tenant = TenantId::new_v7();
    let mut appenders = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        appenders.push(tokio::spawn(async move {
            for _ in 0..5 {
                let batch = (0..4).map(|_| event(tenant, "task.created")).collect();
                h.append(batch).await.expect("append");
            }
        }));
    }
    for appender in appenders {
        appender.await.expect("appender");
    }
    let rows = h.sequences(tenant).await;
    assert_eq!(rows.len(), 160);
    let mut prev = bulkhead_audit::GENESIS.to_vec();
    for (i, (sequence, prev_hash, hash)) in rows.iter().enumerate() {
        assert_eq!(*sequence, i64::try_from(i).expect("i") + 1, "no gap");
        assert_eq!(*prev_hash, prev, "no fork at {sequence}");
        prev.clone_from(hash);
    }
    let verified = h.verify(tenant).await;
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.checked_count, 160);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reads_only_its_own_trail_and_only_as_owner_or_admin() {
    let h = spawn_service().await;
    let (a, b) = (TenantId::new_v7(), TenantId::new_v7());
    h.append(vec![event(a, "task.created"), event(b, "task.created")])
        .await
        .expect("append");
    let seen = h
        .query(a, pb::QueryEventsRequest::default())
        .await
        .expect("query")
        .events;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].tenant_id, a.to_string());
    let mut export = h
        .client
        .clone()
        .export_events(h.as_user(a, TenantRole::Owner, pb::ExportEventsRequest::default()))
        .await
        .expect("export")
        .into_inner();
    let mut exported = Vec::new();
    while let Some(batch) = export.message().await.expect("batch") {
        exported.extend(batch.events);
    }
    assert_eq!(exported.len(), 2, "A's event, and the export itself");
    assert!(exported.iter().all(|e| e.tenant_id == a.to_string()));
    assert_eq!(exported[1].action, "audit.exported");
    assert_eq!(exported[1].source_service, "audit");
    assert!(
        h.verify(a).await.ok,
        "the export's own event is chained like any other"
    );
    for role in [TenantRole::Viewer, TenantRole::Member] {
        let denied = h
            .client
            .clone()
            .query_events(h.as_user(a, role, pb::QueryEventsRequest::default()))
            .await
            .expect_err("below ADMIN");
        assert_eq!(denied.code(), Code::PermissionDenied);
        let denied = h
            .client
            .clone()
            .verify_chain(h.as_user(a, role, pb::VerifyChainRequest::default()))
            .await
            .expect_err("below ADMIN");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    // Only the writer services append: not a user, not another service.
    let by_user = h
        .client
        .clone()
        .append_events(h.as_user(
            a,
            TenantRole::Owner,
            pb::AppendEventsRequest {
                events: vec![event(a, "x.y")],
            },
        ))
        .await
        .expect_err("users do not append");
    assert_eq!(by_user.code(), Code::PermissionDenied);
    let by_other = h
        .client
        .clone()
        .append_events(h.as_service(
            "billing",
            pb::AppendEventsRequest {
                events: vec![event(a, "x.y")],
            },
        ))
        .await
        .expect_err("an unknown service does not append");
    assert_eq!(by_other.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_is_append_only_and_verification_finds_what_was_changed() {
    let h = spawn_service().await;
    let tenant = TenantId::new_v7();
    let batch: Vec<_> = (0..6)
        .map(|i| event(tenant, &format!("task.step{i}")))
        .collect();
    let ids: Vec<String> = batch.iter().map(|e| e.id.clone()).collect();
    h.append(batch).await.expect("append");
    // Not even the superuser (past every policy) updates, deletes or truncates
    // while the trigger stands.
    let mut owner = h.database.admin_connection().await;
    for statement in [
        format!("UPDATE events SET action = 'forged' WHERE tenant_id = '{tenant}'"),
        format!("DELETE FROM events WHERE tenant_id = '{tenant}'"),
        "TRUNCATE events".to_owned(),
    ] {
        assert!(
            owner.batch_execute(&statement).await.is_err(),
            "{statement}"
        );
    }
    assert!(h.verify(tenant).await.ok);

    // Altered behind the trigger's back: found at that event.
    h.sql(&format!(
        "ALTER TABLE events DISABLE TRIGGER events_append_only;
         UPDATE events SET action = 'task.forged' WHERE tenant_id = '{tenant}' AND sequence = 3;
         ALTER TABLE events ENABLE TRIGGER events_append_only;"
    ))
    .await;
    let verified = h.verify(tenant).await;
    assert!(!verified.ok);
    assert_eq!(verified.first_bad_event_id, ids[2]);
    assert_eq!(verified.checked_count, 2);
    assert!(
        verified.detail.contains("event 3 was altered"),
        "{}",
        verified.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_finds_a_missing_event_and_a_cut_off_end() {
    let h = spawn_service().await;
    let (gap, cut) = (TenantId::new_v7(), TenantId::new_v7());
    let gap_batch: Vec<_> = (0..5).map(|_| event(gap, "task.created")).collect();
    let gap_ids: Vec<String> = gap_batch.iter().map(|e| e.id.clone()).collect();
    h.append(gap_batch).await.expect("append");
    h.append((0..5).map(|_| event(cut, "task.created")).collect())
        .await
        .expect("append");
    h.sql(&format!(
        "ALTER TABLE events DISABLE TRIGGER events_append_only;
         DELETE FROM events WHERE tenant_id = '{gap}' AND sequence = 2;
         DELETE FROM events WHERE tenant_id = '{cut}' AND sequence >= 4;
         ALTER TABLE events ENABLE TRIGGER events_append_only;"
    ))
    .await;
    let verified = h.verify(gap).await;
    assert!(!verified.ok);
    assert_eq!(
        verified.first_bad_event_id, gap_ids[2],
        "the first event after the missing one"
    );
    assert!(
        verified.detail.contains("event 2 is missing"),
        "{}",
        verified.detail
    );
    let verified = h.verify(cut).await;
    assert!(!verified.ok);
    assert!(
        verified.detail.contains("events were removed from its end"),
        "{}",
        verified.detail
    );
    assert_eq!(verified.checked_count, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_filter_and_page_and_bad_input_is_reported() {
    let h = spawn_service().await;
    let tenant = TenantId::new_v7();
    let mut batch: Vec<_> = (0..5).map(|_| event(tenant, "task.created")).collect();
    batch.push(event(tenant, "task.deleted"));
    h.append(batch).await.expect("append");
    let created = pb::AuditEventFilter {
        action: "task.created".into(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .query(
                tenant,
                pb::QueryEventsRequest {
                    filter: Some(created.clone()),
                    page_size: 2,
                    page_token: token.clone(),
                    platform: false,
                },
            )
            .await
            .expect("page");
        seen.extend(page.events.iter().map(|e| e.sequence));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, [5, 4, 3, 2, 1]);
    let first = h
        .query(
            tenant,
            pb::QueryEventsRequest {
                filter: Some(created),
                page_size: 2,
                page_token: String::new(),
                platform: false,
            },
        )
        .await
        .expect("page");
    let refused = h
        .query(
            tenant,
            pb::QueryEventsRequest {
                filter: None,
                page_size: 2,
                page_token: first.next_page_token.clone(),
                platform: false,
            },
        )
        .await
        .expect_err("a token of another filter");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = h
        .query(
            TenantId::new_v7(),
            pb::QueryEventsRequest {
                filter: None,
                page_size: 2,
                page_token: first.next_page_token,
                platform: false,
            },
        )
        .await
        .expect_err("a token of another tenant");
    assert_eq!(refused.code(), Code::InvalidArgument);

    let mut bad = event(tenant, "");
    bad.id = "nope".into();
    bad.occur_time = None;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "n".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(1.5)),
        },
    );
    bad.old_value = Some(prost_types::Struct { fields });
    let status = h.append(vec![bad]).await.expect_err("bad event");
    use tonic_types::StatusExt as _;
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        fields,
        [
            "events[0].id",
            "events[0].action",
            "events[0].occur_time",
            "events[0].old_value"
        ]
    );
    let rows = h.sequences(tenant).await;
    assert_eq!(rows.len(), 6, "nothing of the bad batch was stored");
}

/// Events cut off the end with the chain head rewritten to match: the signed
/// checkpoint still names them; and with the stored checkpoints deleted too,
/// a checkpoint the verifier kept does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_checkpoints_find_a_truncated_end_even_with_the_head_rewritten() {
    let h = spawn_service().await;
    let tenant = TenantId::new_v7();
    h.append((0..5).map(|_| event(tenant, "task.created")).collect())
        .await
        .expect("append");
    let kept = h.checkpoint(tenant).await;
    assert_eq!(kept.sequence, 5);
    assert!(h.verify(tenant).await.ok);
    h.sql(&format!(
        "ALTER TABLE events DISABLE TRIGGER events_append_only;
         DELETE FROM events WHERE tenant_id = '{tenant}' AND sequence >= 4;
         ALTER TABLE events ENABLE TRIGGER events_append_only;
         UPDATE chain_heads SET sequence = 3,
                hash = (SELECT hash FROM events WHERE tenant_id = '{tenant}' AND sequence = 3)
          WHERE tenant_id = '{tenant}';"
    ))
    .await;
    let verified = h.verify(tenant).await;
    assert!(!verified.ok);
    assert!(
        verified.detail.contains("a signed checkpoint covers 5"),
        "{}",
        verified.detail
    );

    h.sql(&format!(
        "ALTER TABLE checkpoints DISABLE TRIGGER checkpoints_append_only;
         DELETE FROM checkpoints WHERE tenant_id = '{tenant}';
         ALTER TABLE checkpoints ENABLE TRIGGER checkpoints_append_only;"
    ))
    .await;
    assert!(
        h.verify(tenant).await.ok,
        "nothing left in the database says otherwise"
    );
    let verified = h
        .verify_with(tenant, kept.jws.clone())
        .await
        .expect("verify");
    assert!(!verified.ok, "the kept checkpoint does");
    assert!(
        verified.detail.contains("a signed checkpoint covers 5"),
        "{}",
        verified.detail
    );

    // A checkpoint of another tenant, or with a byte changed, is refused.
    let other = TenantId::new_v7();
    h.append(vec![event(other, "task.created")])
        .await
        .expect("append");
    let foreign = h.checkpoint(other).await;
    assert_eq!(
        h.verify_with(tenant, foreign.jws)
            .await
            .expect_err("foreign")
            .code(),
        Code::InvalidArgument
    );
    let mut forged = kept.jws.into_bytes();
    let at = forged.len() - 4;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert_eq!(
        h.verify_with(tenant, forged)
            .await
            .expect_err("forged")
            .code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_are_checkpointed_periodically_with_a_published_key() {
    let key = Arc::new(bulkhead_guard::token::SigningKey::generate());
    let h = spawn_with(bulkhead_audit::AuditModule::new(
        Some(key.clone()),
        std::time::Duration::from_millis(100),
    ))
    .await;
    let tenant = TenantId::new_v7();
    h.append((0..3).map(|_| event(tenant, "task.created")).collect())
        .await
        .expect("append");
    let started = std::time::Instant::now();
    loop {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut admin = h.database.admin_connection().await;
        let n = diesel::sql_query(format!(
            "SELECT count(*) AS n FROM checkpoints WHERE tenant_id = '{tenant}' AND sequence = 3"
        ))
        .get_result::<N>(&mut admin)
        .await
        .expect("count")
        .n;
        if n == 1 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "no checkpoint was signed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The key set is public and names the key the checkpoints carry.
    let jwks = h
        .client
        .clone()
        .get_checkpoint_keys(pb::GetCheckpointKeysRequest {})
        .await
        .expect("public")
        .into_inner()
        .jwks_json;
    assert!(jwks.contains(key.kid()), "{jwks}");
}

/// A review found these: the newest stored checkpoint counts even when the
/// caller passes an older one, and it is trusted for its signature, never its
/// columns; writers record only their own actions; oversized or NUL-bearing
/// input is INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_writers_and_limits_hold_against_misuse() {
    let h = spawn_service().await;
    let tenant = TenantId::new_v7();
    h.append((0..5).map(|_| event(tenant, "task.created")).collect())
        .await
        .expect("append");
    let older = h.checkpoint(tenant).await;
    h.append((0..2).map(|_| event(tenant, "task.updated")).collect())
        .await
        .expect("append");
    assert_eq!(h.checkpoint(tenant).await.sequence, 7);
    h.sql(&format!(
        "ALTER TABLE events DISABLE TRIGGER events_append_only;
         DELETE FROM events WHERE tenant_id = '{tenant}' AND sequence = 7;
         ALTER TABLE events ENABLE TRIGGER events_append_only;
         UPDATE chain_heads SET sequence = 6,
                hash = (SELECT hash FROM events WHERE tenant_id = '{tenant}' AND sequence = 6)
          WHERE tenant_id = '{tenant}';"
    ))
    .await;
    let verified = h.verify_with(tenant, older.jws).await.expect("verify");
    assert!(
        !verified.ok,
        "an older kept checkpoint does not hide the newest stored one"
    );
    assert!(verified.detail.contains("covers 7"), "{}", verified.detail);
    h.sql(&format!(
        "ALTER TABLE checkpoints DISABLE TRIGGER checkpoints_append_only;
         UPDATE checkpoints SET jws = jws || 'x' WHERE tenant_id = '{tenant}' AND sequence = 7;
         ALTER TABLE checkpoints ENABLE TRIGGER checkpoints_append_only;"
    ))
    .await;
    let verified = h.verify(tenant).await;
    assert!(!verified.ok);
    assert!(
        verified.detail.contains("does not verify"),
        "{}",
        verified.detail
    );

    // Task records task and compliance actions only.
    let status = h
        .append(vec![event(tenant, "auth.login")])
        .await
        .expect_err("not task's to record");
    assert_eq!(status.code(), Code::InvalidArgument);
    // Values past 64 KiB, and NUL characters, are refused, not stored.
    let mut big = event(tenant, "task.updated");
    big.new_value.as_mut().expect("values").fields.insert(
        "description".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("x".repeat(70_000))),
        },
    );
    assert_eq!(
        h.append(vec![big]).await.expect_err("too big").code(),
        Code::InvalidArgument
    );
    let mut nul = event(tenant, "task.updated");
    nul.new_value.as_mut().expect("values").fields.insert(
        "title".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("a\0b".into())),
        },
    );
    assert_eq!(
        h.append(vec![nul]).await.expect_err("NUL").code(),
        Code::InvalidArgument
    );
    let filter = pb::AuditEventFilter {
        action: "a\0b".into(),
        ..Default::default()
    };
    assert_eq!(
        h.query(
            tenant,
            pb::QueryEventsRequest {
                filter: Some(filter),
                ..Default::default()
            }
        )
        .await
        .expect_err("NUL in a filter")
        .code(),
        Code::InvalidArgument
    );
}

/// Verification while appends continue: an append committed during the walk is
/// beyond the head it read, never a false alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_during_appends_never_raises_a_false_alarm() {
    let h = Arc::new(spawn_service().await);
    let tenant = TenantId::new_v7();
    h.append((0..150).map(|_| event(tenant, "task.created")).collect())
        .await
        .expect("seed");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut appenders = Vec::new();
    for _ in 0..4 {
        let (h, stopped) = (h.clone(), stopped.clone());
        appenders.push(tokio::spawn(async move {
            while !*stopped.borrow() {
                h.append(vec![event(tenant, "task.updated")])
                    .await
                    .expect("append");
            }
        }));
    }
    for _ in 0..20 {
        let verified = h.verify(tenant).await;
        assert!(verified.ok, "{verified:?}");
    }
    let _ = stop.send(true);
    for appender in appenders {
        appender.await.expect("appender");
    }
}

/// The platform chain (events of no tenant) is read, exported, verified and
/// checkpointed by SUPER_ADMINs only; a SUPER_ADMIN reads a tenant's trail only
/// as that tenant's OWNER/ADMIN, and a tenant ADMIN never the platform's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_super_admins_read_the_platform_chain() {
    let h = spawn_service().await;
    let platform = TenantId::from_uuid(uuid::Uuid::nil());
    let a = TenantId::new_v7();
    h.append(vec![
        event(platform, "task.read_across_tenants"),
        event(a, "task.created"),
    ])
    .await
    .expect("append");
    let operator = Caller::User(TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: a,
        tenant_slug: "t".into(),
        tenant_role: TenantRole::Viewer,
        platform_role: PlatformRole::SuperAdmin,
    });
    let mut client = h.client.clone();

    let events = client
        .query_events(h.tokens.request(
            &operator,
            pb::QueryEventsRequest {
                platform: true,
                ..Default::default()
            },
        ))
        .await
        .expect("a SUPER_ADMIN reads the platform chain")
        .into_inner()
        .events;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.tenant_id.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![(platform.to_string().as_str(), "task.read_across_tenants")]
    );

    let denied = client
        .query_events(
            h.tokens
                .request(&operator, pb::QueryEventsRequest::default()),
        )
        .await
        .expect_err("a VIEWER of A, SUPER_ADMIN or not");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .query_events(h.as_user(
            a,
            TenantRole::Owner,
            pb::QueryEventsRequest {
                platform: true,
                ..Default::default()
            },
        ))
        .await
        .expect_err("a tenant OWNER");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut export = client
        .export_events(h.tokens.request(
            &operator,
            pb::ExportEventsRequest {
                platform: true,
                ..Default::default()
            },
        ))
        .await
        .expect("export")
        .into_inner();
    let mut exported = Vec::new();
    while let Some(batch) = export.message().await.expect("batch") {
        exported.extend(batch.events);
    }
    let actions: Vec<&str> = exported.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["task.read_across_tenants", "audit.exported"]);
    assert!(exported.iter().all(|e| e.tenant_id == platform.to_string()));

    let checkpoint = client
        .create_checkpoint(
            h.tokens
                .request(&operator, pb::CreateCheckpointRequest { platform: true }),
        )
        .await
        .expect("checkpoint")
        .into_inner()
        .checkpoint
        .expect("a head");
    assert_eq!(checkpoint.tenant_id, platform.to_string());
    let verified = client
        .verify_chain(h.tokens.request(
            &operator,
            pb::VerifyChainRequest {
                checkpoint: checkpoint.jws,
                platform: true,
            },
        ))
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{}", verified.detail);
    assert_eq!(verified.checked_count, 2);
    // What A's chain gained: the two refusals above, recorded by Audit itself
    // (a SUPER_ADMIN who is only a VIEWER of A reading A's trail, a tenant
    // OWNER asking for the platform chain), nothing else.
    let started = std::time::Instant::now();
    let actions = loop {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            action: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            resource_id: String,
        }
        let mut admin = h.database.admin_connection().await;
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT action, resource_id FROM events WHERE tenant_id = '{a}' ORDER BY sequence"
        ))
        .load(&mut admin)
        .await
        .expect("rows");
        if rows.len() >= 3 || started.elapsed() > std::time::Duration::from_secs(10) {
            break rows
                .into_iter()
                .map(|r| format!("{} {}", r.action, r.resource_id))
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        actions,
        [
            "task.created r1",
            "security.permission_denied /bulkhead.audit.v1.AuditService/QueryEvents",
            "security.permission_denied /bulkhead.audit.v1.AuditService/QueryEvents",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_runs_two_exports_at_once_at_most() {
    use tonic_types::StatusExt as _;
    let h = spawn_service().await;
    let (a, b) = (TenantId::new_v7(), TenantId::new_v7());
    // Enough events (about 5 MB) that an export nobody reads stays open.
    h.seed_large_trail(a).await;
    h.append(vec![event(b, "task.created")])
        .await
        .expect("append");
    let export = |tenant: TenantId| {
        let mut client = h.client.clone();
        let request = h.as_user(
            tenant,
            TenantRole::Owner,
            pb::ExportEventsRequest::default(),
        );
        async move { client.export_events(request).await }
    };
    let first = export(a).await.expect("first export");
    let second = export(a).await.expect("second export");
    let third = export(a).await.expect_err("a third at once");
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(
        third.get_error_details().retry_info().is_some(),
        "says when to retry"
    );
    // Another tenant is not held up by a's exports.
    let mut other = export(b).await.expect("b's export").into_inner();
    while other.message().await.expect("b's batch").is_some() {}
    // A reader that goes away frees its slot.
    drop(first);
    let started = std::time::Instant::now();
    loop {
        match export(a).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(10),
                    "the abandoned export's slot was never freed"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    drop(second);
}

/// An export is a long call: it stops, with the refusal a new call would
/// get, once its reader's session is revoked, rather than streaming the rest
/// of the trail to a session that no longer exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_stops_when_its_readers_session_is_revoked() {
    let h = spawn_service().await;
    let tenant = TenantId::new_v7();
    // 50 batches of 100 events.
    h.seed_large_trail(tenant).await;
    let reader = TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: tenant,
        tenant_slug: "t".into(),
        tenant_role: TenantRole::Owner,
        platform_role: PlatformRole::User,
    };
    let mut export = h
        .client
        .clone()
        .export_events(h.tokens.request(
            &Caller::User(reader.clone()),
            pb::ExportEventsRequest::default(),
        ))
        .await
        .expect("export")
        .into_inner();
    let first = export
        .message()
        .await
        .expect("a batch")
        .expect("not the end");
    assert!(!first.events.is_empty());
    h.guard.revoked.revoke(
        reader.session_id,
        std::time::SystemTime::now() + std::time::Duration::from_secs(600),
    );
    let mut after = 0;
    let refused = loop {
        match export.message().await {
            Ok(Some(_)) => after += 1,
            Ok(None) => panic!("the whole trail went out after the revocation"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        after <= 3,
        "at most what was already queued: {after} batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_run_newest_first_by_occurrence_even_when_events_arrive_out_of_order() {
    let h = spawn_service().await;
    let tenant = TenantId::new_v7();
    // Appended in one order, happened in another (writers' clocks, relays).
    let seconds = [50, 10, 40, 40, 20, 60, 30];
    let events: Vec<pb::AuditEvent> = seconds
        .iter()
        .map(|s| {
            let mut e = event(tenant, "task.created");
            e.occur_time = Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + s,
                nanos: 0,
            });
            e
        })
        .collect();
    h.append(events).await.expect("append");
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = h
            .query(
                tenant,
                pb::QueryEventsRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("page");
        seen.extend(page.events.iter().map(|e| {
            (
                e.occur_time
                    .as_ref()
                    .map_or(0, |t| t.seconds - 1_700_000_000),
                e.sequence,
            )
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        seen,
        vec![
            (60, 6),
            (50, 1),
            (40, 4),
            (40, 3),
            (30, 7),
            (20, 5),
            (10, 2)
        ],
        "every event once, newest occurrence first, ties by sequence"
    );
}

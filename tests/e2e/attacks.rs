//! The attack catalogue (issue #13, item 1): one table a reader can scan.
//!
//! All four services run on a real Postgres. Tenant A's users attack tenant
//! B: every RPC of every service (enumerated from the descriptor set, so an
//! RPC without a case fails the test) is called with B's ids, page tokens,
//! filters and slugs; then forged, stale and misplaced identities; then SQL
//! through the runtime roles. Every case names the exact status it expects,
//! and every database, read as its owner before and after, must be unchanged
//! but for the tables the case lists (a failed login is counted and
//! audited). A successful answer must carry none of B's identifiers.
//!
//! The table is printed (`cargo test -p bulkhead-e2e attack_catalogue --
//! --nocapture`); every mismatch is listed before the test fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bulkhead::services::ServiceKind;
use bulkhead_context::{TenantId, TenantUser};
use bulkhead_guard::VerifierConfig;
use bulkhead_guard::token::{Claims, SigningKey, unix_now};
use bulkhead_proto::audit::v1 as audit;
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_testkit::bearer;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use prost::Message as _;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::support::{TestSuite, spawn_suite};

const PASSWORD: &str = "a long enough password";
/// In every name and title tenant B writes: an answer to A that holds it leaks.
const B_SECRET: &str = "B-SECRET";

// ---------------------------------------------------------------------------
// Calling any RPC with raw bytes.

/// Passes request and response bodies through as bytes: one caller for every
/// RPC, and answers searched for B's identifiers without decoding them.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        Self
    }
    fn decoder(&mut self) -> Self::Decoder {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}

/// The streaming RPCs (read to their end, or for a second).
const STREAMING: [&str; 2] = [
    "/bulkhead.audit.v1.AuditService/ExportEvents",
    "/bulkhead.auth.v1.AuthService/WatchRevocations",
];

/// Calls `method` with `body` and `metadata` (appended: a name may repeat);
/// the answer's messages, or its status.
async fn call(
    channel: tonic::transport::Channel,
    method: &str,
    metadata: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(10));
    for (key, value) in metadata {
        request
            .metadata_mut()
            .append(*key, value.parse().expect("ascii metadata"));
    }
    let path = method.parse().expect("method path");
    if STREAMING.contains(&method) {
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        let mut messages = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(next) = tokio::time::timeout_at(deadline, stream.message()).await {
            match next? {
                Some(message) => messages.push(message),
                None => break,
            }
        }
        Ok(messages)
    } else {
        let response = grpc.unary(request, path, RawCodec).await?;
        Ok(vec![response.into_inner()])
    }
}

// ---------------------------------------------------------------------------
// The databases, read as their owners.

#[derive(QueryableByName)]
struct TableDigest {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    digest: Option<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `service.table` -> a digest of its rows, for every table of every database.
type Snapshot = BTreeMap<String, String>;

async fn table_names(conn: &mut AsyncPgConnection) -> Vec<String> {
    tables_where(conn, "true").await
}

/// The tables with a `tenant_id` column.
async fn tenant_tables(conn: &mut AsyncPgConnection) -> Vec<String> {
    tables_where(
        conn,
        "EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                  AND a.attname = 'tenant_id' AND NOT a.attisdropped)",
    )
    .await
}

async fn tables_where(conn: &mut AsyncPgConnection, condition: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    diesel::sql_query(format!(
        "SELECT c.relname::text AS name FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            AND c.relname <> '__diesel_schema_migrations' AND {condition}
          ORDER BY 1"
    ))
    .load::<Name>(conn)
    .await
    .expect("tables")
    .into_iter()
    .map(|n| n.name)
    .collect()
}

/// Every table's rows as one digest (`service.table`), and tenant B's rows
/// of every table that has a tenant (`service.table@B`). An outbox row counts
/// by what it says, not by its delivery bookkeeping (the relays mark rows
/// delivered while the test runs).
async fn snapshot(suite: &TestSuite, b: TenantId) -> Snapshot {
    let mut all = Snapshot::new();
    for kind in ServiceKind::ALL {
        let mut owner = suite.databases[kind.name()].admin_connection().await;
        let tables = table_names(&mut owner).await;
        let with_tenant = tenant_tables(&mut owner).await;
        let row = |t: &str| {
            if t == "outbox" {
                "ROW(r.tenant_id, r.seq, r.id, r.topic, r.payload)::text"
            } else {
                "r::text"
            }
        };
        // The outbox by topic: a refusal may queue its audit event, nothing
        // else (a revocation or a release queued for A would act later).
        let outbox_topics = [
            ("outbox[audit]", "r.topic = 'audit'"),
            ("outbox[other]", "r.topic <> 'audit'"),
        ];
        let query = tables
            .iter()
            .flat_map(|t| {
                if t == "outbox" {
                    outbox_topics
                        .iter()
                        .map(|(name, filter)| {
                            format!(
                                "SELECT '{name}'::text AS name, md5(string_agg({}, '|' ORDER BY {})) AS digest FROM outbox r WHERE {filter}",
                                row(t),
                                row(t)
                            )
                        })
                        .collect::<Vec<_>>()
                } else {
                    vec![format!(
                        "SELECT '{t}'::text AS name, md5(string_agg({}, '|' ORDER BY {})) AS digest FROM \"{t}\" r",
                        row(t),
                        row(t)
                    )]
                }
            })
            .chain(with_tenant.iter().map(|t| {
                format!(
                    "SELECT '{t}@B'::text AS name, md5(string_agg({}, '|' ORDER BY {})) AS digest FROM \"{t}\" r WHERE r.tenant_id = '{b}'",
                    row(t),
                    row(t)
                )
            }))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for row in diesel::sql_query(query)
            .load::<TableDigest>(&mut owner)
            .await
            .expect("digests")
        {
            all.insert(
                format!("{}.{}", kind.name(), row.name),
                row.digest.unwrap_or_default(),
            );
        }
    }
    all
}

/// Undelivered outbox messages in the writer services (the relays at work).
async fn pending_messages(suite: &TestSuite) -> i64 {
    let mut pending = 0;
    for name in ["auth", "tenant", "task"] {
        let mut owner = suite.databases[name].admin_connection().await;
        pending += diesel::sql_query(
            "SELECT count(*) AS n FROM outbox WHERE delivered_time IS NULL AND dead_time IS NULL",
        )
        .get_result::<Count>(&mut owner)
        .await
        .expect("pending")
        .n;
    }
    pending
}

/// Waits for the relays to deliver what is pending (the audit events of
/// the call just made; a refusal's event passes through an in-memory queue
/// first, so until two snapshots 100 ms apart agree too); that state.
async fn settled(suite: &TestSuite, b: TenantId) -> Snapshot {
    let started = Instant::now();
    let mut last: Option<Snapshot> = None;
    loop {
        if pending_messages(suite).await == 0 {
            let now = snapshot(suite, b).await;
            if last.as_ref() == Some(&now) {
                return now;
            }
            last = Some(now);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the relays did not settle within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn changed(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `pattern` names `table`: `service.table`, `service.*` or `*.table`.
/// Tenant B's rows (`table@B`) are named by no pattern but their own.
fn allowed(pattern: &str, table: &str) -> bool {
    if table.ends_with("@B") && !pattern.ends_with("@B") {
        return false;
    }
    pattern == table
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| table.starts_with(prefix))
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| table.ends_with(suffix))
}

/// What any call may leave: the audit trail of the attempt itself (a
/// refusal is a security event: its outbox message on the `audit` topic,
/// nothing else), in the caller's chain, never in B's; and Audit's periodic
/// checkpoint of a chain that moved (A's).
const TRAIL: [&str; 5] = [
    "*.outbox[audit]",
    "*.outbox_sequence",
    "audit.events",
    "audit.chain_heads",
    "audit.checkpoints",
];

// ---------------------------------------------------------------------------
// The world: tenants A and B (and C, deactivated), their users and B's data.

struct World {
    suite: TestSuite,
    a: TenantId,
    b: TenantId,
    b_slug: String,
    /// A's OWNER (real login): the attacker, with every tenant role there is.
    a_owner: String,
    a_owner_user: TenantUser,
    /// A's VIEWER (real login).
    a_viewer: String,
    /// A's owner's email (for Login with B's slug).
    a_owner_email: String,
    /// B's ids, page tokens and checkpoint.
    ids: BTreeMap<&'static str, String>,
    /// Strings that must never reach A: B's ids, slug, emails, names.
    markers: Vec<String>,
    /// A task of A's own: the target of the identity cases (a write that a
    /// valid token would make).
    a_task: task::Task,
    /// Tokens that were valid once: of a removed member, of a logged-out
    /// session, of a deactivated tenant's owner.
    removed_member: String,
    logged_out: String,
    deactivated: String,
}

impl World {
    fn id(&self, key: &str) -> String {
        self.ids
            .get(key)
            .unwrap_or_else(|| panic!("no id {key}"))
            .clone()
    }
}

async fn create_user(suite: &TestSuite, operator: &str, email: &str) -> String {
    auth::auth_service_client::AuthServiceClient::new(suite.channel(ServiceKind::Auth))
        .create_user(bearer(
            operator,
            auth::CreateUserRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                platform_role: auth::PlatformRole::User.into(),
            },
        ))
        .await
        .expect("user")
        .into_inner()
        .user
        .expect("user")
        .id
}

async fn login(suite: &TestSuite, email: &str, slug: &str) -> auth::LoginResponse {
    auth::auth_service_client::AuthServiceClient::new(suite.channel(ServiceKind::Auth))
        .login(auth::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            tenant_slug: slug.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("login {email}: {s:?}"))
        .into_inner()
}

fn access(login: &auth::LoginResponse) -> String {
    login.tokens.as_ref().expect("tokens").access_token.clone()
}

/// Waits until `token` is refused (a revocation or deactivation travelling).
async fn until_refused(suite: &TestSuite, token: &str) {
    let started = Instant::now();
    let mut tenants =
        tenant::tenant_service_client::TenantServiceClient::new(suite.channel(ServiceKind::Tenant));
    let mut tasks =
        task::task_service_client::TaskServiceClient::new(suite.channel(ServiceKind::Task));
    loop {
        let t = tenants
            .list_members(bearer(token, tenant::ListMembersRequest::default()))
            .await;
        let k = tasks
            .list_tasks(bearer(token, task::ListTasksRequest::default()))
            .await;
        if t.is_err() && k.is_err() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a revoked token still works after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ts(seconds_from_now: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + seconds_from_now,
        nanos: 0,
    })
}

#[allow(clippy::too_many_lines, reason = "the whole world, in order")]
async fn world() -> World {
    let suite = spawn_suite().await;
    let operator = suite.operator_token();
    let ch = |k| suite.channel(k);
    let mut tenants =
        tenant::tenant_service_client::TenantServiceClient::new(ch(ServiceKind::Tenant));
    let mut tasks = task::task_service_client::TaskServiceClient::new(ch(ServiceKind::Task));
    let mut catalog =
        task::catalog_service_client::CatalogServiceClient::new(ch(ServiceKind::Task));
    let mut audits = audit::audit_service_client::AuditServiceClient::new(ch(ServiceKind::Audit));
    let mut auths = auth::auth_service_client::AuthServiceClient::new(ch(ServiceKind::Auth));

    let mut ids = BTreeMap::new();
    let emails = [
        "a-owner@a.example",
        "a-viewer@a.example",
        "a-leaver@a.example",
        "b-owner-b-secret@b.example",
        "b-member-b-secret@b.example",
        "c-owner@c.example",
    ];
    let mut users = BTreeMap::new();
    for email in emails {
        users.insert(email, create_user(&suite, &operator, email).await);
    }
    let mut make_tenant = async |slug: &str, owner: &str| -> String {
        tenants
            .create_tenant(bearer(
                &operator,
                tenant::CreateTenantRequest {
                    slug: slug.into(),
                    name: format!("{slug} name"),
                    domain: String::new(),
                    owner_user_id: users[owner].clone(),
                },
            ))
            .await
            .expect("tenant")
            .into_inner()
            .tenant
            .expect("tenant")
            .id
    };
    let a: TenantId = make_tenant("tenant-a", "a-owner@a.example")
        .await
        .parse()
        .expect("id");
    let b_slug = "b-secret-globex".to_owned();
    let b: TenantId = make_tenant(&b_slug, "b-owner-b-secret@b.example")
        .await
        .parse()
        .expect("id");
    let c = make_tenant("tenant-c", "c-owner@c.example").await;
    ids.insert("b.tenant", b.to_string());
    ids.insert("b.member", users["b-member-b-secret@b.example"].clone());
    ids.insert("b.owner", users["b-owner-b-secret@b.example"].clone());

    // A: its owner, a VIEWER and a member who will leave.
    let a_owner_login = login(&suite, "a-owner@a.example", "tenant-a").await;
    let a_owner = access(&a_owner_login);
    for (email, role) in [
        ("a-viewer@a.example", tenant::TenantRole::Viewer),
        ("a-leaver@a.example", tenant::TenantRole::Member),
    ] {
        tenants
            .add_member(bearer(
                &a_owner,
                tenant::AddMemberRequest {
                    user_id: users[email].clone(),
                    role: role.into(),
                },
            ))
            .await
            .expect("A member");
    }
    let a_viewer = access(&login(&suite, "a-viewer@a.example", "tenant-a").await);
    let removed_member = access(&login(&suite, "a-leaver@a.example", "tenant-a").await);
    let a_task = tasks
        .create_task(bearer(
            &a_owner,
            task::CreateTaskRequest {
                title: "A's own task".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("A task")
        .into_inner()
        .task
        .expect("task");

    // B: an owner, a member, two of everything (so its lists have a second page).
    let b_owner = access(&login(&suite, "b-owner-b-secret@b.example", &b_slug).await);
    tenants
        .add_member(bearer(
            &b_owner,
            tenant::AddMemberRequest {
                user_id: ids["b.member"].clone(),
                role: tenant::TenantRole::Member.into(),
            },
        ))
        .await
        .expect("B member");
    for n in 1..=2 {
        let t = tasks
            .create_task(bearer(
                &b_owner,
                task::CreateTaskRequest {
                    title: format!("{B_SECRET} task {n}"),
                    assignee_user_id: ids["b.member"].clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("B task")
            .into_inner()
            .task
            .expect("task");
        let record = tasks
            .create_compliance_record(bearer(
                &b_owner,
                task::CreateComplianceRecordRequest {
                    title: format!("{B_SECRET} record {n}"),
                    due_time: ts(90 * 86_400),
                    task_id: t.id.clone(),
                },
            ))
            .await
            .expect("B record")
            .into_inner()
            .record
            .expect("record");
        let service = catalog
            .create_service(bearer(
                &b_owner,
                task::CreateServiceRequest {
                    service: Some(task::Service {
                        slug: format!("b-secret-svc-{n}"),
                        name: format!("{B_SECRET} service {n}"),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .expect("B service")
            .into_inner()
            .service
            .expect("service");
        let request = catalog
            .create_service_request(bearer(
                &b_owner,
                task::CreateServiceRequestRequest {
                    service_id: service.id.clone(),
                    details: format!("{B_SECRET} details {n}"),
                },
            ))
            .await
            .expect("B request")
            .into_inner()
            .service_request
            .expect("request");
        let booking = catalog
            .create_booking(bearer(
                &b_owner,
                task::CreateBookingRequest {
                    service_id: service.id.clone(),
                    start_time: ts(30 * 86_400 + n * 7200),
                    end_time: None,
                },
            ))
            .await
            .expect("B booking")
            .into_inner()
            .booking
            .expect("booking");
        if n == 1 {
            ids.insert("b.task", t.id.clone());
            ids.insert("b.task.etag", t.etag.clone());
            ids.insert("b.record", record.id.clone());
            ids.insert("b.record.etag", record.etag.clone());
            ids.insert("b.service", service.id.clone());
            ids.insert("b.service.etag", service.etag.clone());
            ids.insert("b.service.slug", service.slug.clone());
            ids.insert("b.request", request.id.clone());
            ids.insert("b.request.etag", request.etag.clone());
            ids.insert("b.booking", booking.id.clone());
            ids.insert("b.booking.etag", booking.etag.clone());
        }
    }

    // B's page tokens: the first page of one row of each list.
    let page = |token: String, key: &'static str, ids: &mut BTreeMap<&'static str, String>| {
        assert!(!token.is_empty(), "{key}: B's list has a second page");
        ids.insert(key, token);
    };
    page(
        tasks
            .list_tasks(bearer(
                &b_owner,
                task::ListTasksRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("B tasks")
            .into_inner()
            .next_page_token,
        "b.page.tasks",
        &mut ids,
    );
    page(
        tasks
            .list_compliance_records(bearer(
                &b_owner,
                task::ListComplianceRecordsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("B records")
            .into_inner()
            .next_page_token,
        "b.page.records",
        &mut ids,
    );
    page(
        catalog
            .list_services(bearer(
                &b_owner,
                task::ListServicesRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("B services")
            .into_inner()
            .next_page_token,
        "b.page.services",
        &mut ids,
    );
    page(
        catalog
            .list_service_requests(bearer(
                &b_owner,
                task::ListServiceRequestsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("B requests")
            .into_inner()
            .next_page_token,
        "b.page.requests",
        &mut ids,
    );
    page(
        catalog
            .list_bookings(bearer(
                &b_owner,
                task::ListBookingsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("B bookings")
            .into_inner()
            .next_page_token,
        "b.page.bookings",
        &mut ids,
    );
    page(
        tenants
            .list_members(bearer(
                &b_owner,
                tenant::ListMembersRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("B members")
            .into_inner()
            .next_page_token,
        "b.page.members",
        &mut ids,
    );
    page(
        tenants
            .list_tenants(bearer(
                &operator,
                tenant::ListTenantsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("tenants")
            .into_inner()
            .next_page_token,
        "page.tenants",
        &mut ids,
    );

    // B's audit trail (through the relays) and a checkpoint of it, once all
    // of it arrived (B's chain moves no more: no periodic checkpoint of it).
    settled(&suite, b).await;
    let started = Instant::now();
    let checkpoint = loop {
        let events = audits
            .query_events(bearer(
                &b_owner,
                audit::QueryEventsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            ))
            .await
            .expect("B events")
            .into_inner();
        if !events.next_page_token.is_empty() {
            ids.insert("b.page.events", events.next_page_token);
            ids.insert("b.event", events.events[0].id.clone());
            break audits
                .create_checkpoint(bearer(&b_owner, audit::CreateCheckpointRequest::default()))
                .await
                .expect("B checkpoint")
                .into_inner()
                .checkpoint
                .expect("a chain");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B's audit events did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ids.insert("b.checkpoint", checkpoint.jws);

    // Tokens that were valid once.
    tenants
        .remove_member(bearer(
            &a_owner,
            tenant::RemoveMemberRequest {
                user_id: users["a-leaver@a.example"].clone(),
            },
        ))
        .await
        .expect("the leaver leaves");
    let logged_out = access(&login(&suite, "a-owner@a.example", "tenant-a").await);
    auths
        .logout(bearer(
            &logged_out,
            auth::LogoutRequest {
                all_sessions: false,
            },
        ))
        .await
        .expect("logout");
    let deactivated = access(&login(&suite, "c-owner@c.example", "tenant-c").await);
    tenants
        .set_tenant_active(bearer(
            &operator,
            tenant::SetTenantActiveRequest {
                tenant_id: c,
                is_active: false,
            },
        ))
        .await
        .expect("C deactivated");
    for token in [&removed_member, &logged_out, &deactivated] {
        until_refused(&suite, token).await;
    }

    let who = auths
        .who_am_i(bearer(&a_owner, auth::WhoAmIRequest {}))
        .await
        .expect("who am i")
        .into_inner();
    let a_owner_user = TenantUser {
        user_id: who.user_id.parse().expect("user"),
        session_id: who.session_id.parse().expect("session"),
        tenant_id: a,
        tenant_slug: who.tenant_slug,
        tenant_role: bulkhead_context::TenantRole::Owner,
        platform_role: bulkhead_context::PlatformRole::User,
    };

    let mut markers: Vec<String> = ids
        .iter()
        .filter(|(k, v)| {
            !k.contains("page") && !k.contains("etag") && **k != "b.checkpoint" && !v.is_empty()
        })
        .map(|(_, v)| v.clone())
        .collect();
    markers.extend([
        B_SECRET.to_owned(),
        "b-secret".to_owned(),
        b_slug.clone(),
        "b.example".to_owned(),
    ]);
    World {
        suite,
        a,
        b,
        b_slug,
        a_owner,
        a_owner_user,
        a_viewer,
        a_owner_email: "a-owner@a.example".into(),
        ids,
        markers,
        a_task,
        removed_member,
        logged_out,
        deactivated,
    }
}

// ---------------------------------------------------------------------------
// The cases.

/// One attack: who calls what with which body, and what must come of it.
struct Case {
    id: String,
    method: String,
    metadata: Vec<(&'static str, String)>,
    body: Vec<u8>,
    expect: Code,
    /// Tables that may change (`service.table` or `service.*`): a refused
    /// login is counted and audited.
    may_change: &'static [&'static str],
    /// Tables that must change (the control case: proves the check can fail).
    must_change: &'static [&'static str],
    proves: String,
}

fn path(service: &str, method: &str) -> String {
    format!("/{service}/{method}")
}

fn user(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

const AUTH: &str = "bulkhead.auth.v1.AuthService";
const TENANT: &str = "bulkhead.tenant.v1.TenantService";
const TASK: &str = "bulkhead.task.v1.TaskService";
const CATALOG: &str = "bulkhead.task.v1.CatalogService";
const AUDIT: &str = "bulkhead.audit.v1.AuditService";

/// What a failed login leaves besides its audit event: its counters.
const LOGIN_TRACES: &[&str] = &["auth.login_attempts", "auth.login_known_networks"];

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// Every RPC called by A's OWNER with B's ids: the cross-tenant cases.
#[allow(
    clippy::too_many_lines,
    reason = "one case per RPC: the catalogue itself"
)]
fn cross_tenant_cases(w: &World) -> Vec<Case> {
    let mut cases = Vec::new();
    let me = user(&w.a_owner);
    let with_b_header = || {
        let mut m = user(&w.a_owner);
        m.push(("x-tenant-id", w.b.to_string()));
        m
    };
    let mut add = |id: &str,
                   service: &str,
                   method: &str,
                   metadata: Vec<(&'static str, String)>,
                   body: Vec<u8>,
                   expect: Code,
                   may_change: &'static [&'static str],
                   proves: &str| {
        cases.push(Case {
            id: id.to_owned(),
            method: path(service, method),
            metadata,
            body,
            expect,
            may_change,
            must_change: &[],
            proves: proves.to_owned(),
        });
    };
    let id = |k: &str| w.id(k);

    // Auth.
    add(
        "X-AUTH-01",
        AUTH,
        "Login",
        vec![],
        auth::LoginRequest {
            email: w.a_owner_email.clone(),
            password: PASSWORD.into(),
            tenant_slug: w.b_slug.clone(),
        }
        .encode_to_vec(),
        Code::Unauthenticated,
        LOGIN_TRACES,
        "A's owner's right password opens no session in B, and the answer is a wrong password's",
    );
    add(
        "X-AUTH-02",
        AUTH,
        "Refresh",
        vec![],
        auth::RefreshRequest {
            refresh_token: format!("{}x", id("b.tenant")),
        }
        .encode_to_vec(),
        Code::Unauthenticated,
        &[],
        "a made-up refresh token is no credential and revokes nothing of B's",
    );
    add(
        "X-AUTH-03",
        AUTH,
        "SwitchTenant",
        me.clone(),
        auth::SwitchTenantRequest {
            tenant: Some(auth::switch_tenant_request::Tenant::TenantSlug(
                w.b_slug.clone(),
            )),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "no token for B to a user who is not B's member (by slug)",
    );
    add(
        "X-AUTH-03b",
        AUTH,
        "SwitchTenant",
        me.clone(),
        auth::SwitchTenantRequest {
            tenant: Some(auth::switch_tenant_request::Tenant::TenantId(id(
                "b.tenant",
            ))),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "no token for B to a user who is not B's member (by id)",
    );
    add(
        "X-AUTH-04",
        AUTH,
        "Logout",
        with_b_header(),
        auth::LogoutRequest { all_sessions: true }.encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "a call asserting B with A's token is refused before it ends anything",
    );
    add(
        "X-AUTH-05",
        AUTH,
        "WhoAmI",
        with_b_header(),
        auth::WhoAmIRequest {}.encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "x-tenant-id naming B is refused, not believed",
    );
    add(
        "X-AUTH-06",
        AUTH,
        "GetJwks",
        vec![],
        auth::GetJwksRequest {}.encode_to_vec(),
        Code::Ok,
        &[],
        "the public keys carry nothing of any tenant",
    );
    add(
        "X-AUTH-07",
        AUTH,
        "CreateUser",
        me.clone(),
        auth::CreateUserRequest {
            email: "escalated@a.example".into(),
            password: PASSWORD.into(),
            display_name: String::new(),
            platform_role: auth::PlatformRole::SuperAdmin.into(),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "a tenant's OWNER cannot mint a SUPER_ADMIN (a platform role escape)",
    );
    add(
        "X-AUTH-08",
        AUTH,
        "ChangePassword",
        with_b_header(),
        auth::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "another long password".into(),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "a change asserting B with A's token is refused",
    );
    add(
        "X-AUTH-09",
        AUTH,
        "IssueServiceToken",
        me.clone(),
        auth::IssueServiceTokenRequest {
            client_id: "tenant".into(),
            client_secret: w.a_owner.clone(),
        }
        .encode_to_vec(),
        Code::Unauthenticated,
        &[],
        "a user's token is no client secret: no service identity for A's owner",
    );
    add(
        "X-AUTH-10",
        AUTH,
        "RevokeSessions",
        me.clone(),
        auth::RevokeSessionsRequest {
            user_id: id("b.member"),
            tenant_id: Some(id("b.tenant")),
            reason: "attack".into(),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "only Tenant ends sessions: A cannot end B's member's",
    );
    add(
        "X-AUTH-11",
        AUTH,
        "WatchRevocations",
        me.clone(),
        auth::WatchRevocationsRequest {}.encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "the revocation feed (every tenant's sessions) is for services only",
    );

    // Tenant.
    add(
        "X-TEN-01",
        TENANT,
        "CreateTenant",
        me.clone(),
        tenant::CreateTenantRequest {
            slug: "a-takes-b".into(),
            name: "x".into(),
            domain: String::new(),
            owner_user_id: id("b.member"),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "only a SUPER_ADMIN creates tenants",
    );
    add(
        "X-TEN-02",
        TENANT,
        "GetTenant",
        me.clone(),
        tenant::GetTenantRequest {
            tenant: Some(tenant::get_tenant_request::Tenant::TenantId(id("b.tenant"))),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B by id is not found for A, never forbidden",
    );
    add(
        "X-TEN-02b",
        TENANT,
        "GetTenant",
        me.clone(),
        tenant::GetTenantRequest {
            tenant: Some(tenant::get_tenant_request::Tenant::TenantSlug(
                w.b_slug.clone(),
            )),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B by slug is not found for A",
    );
    add(
        "X-TEN-03",
        TENANT,
        "ListTenants",
        me.clone(),
        tenant::ListTenantsRequest {
            page_token: id("page.tenants"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::Ok,
        &[],
        "an operator's page token lists A's own tenant at most",
    );
    add(
        "X-TEN-04",
        TENANT,
        "UpdateTenant",
        with_b_header(),
        tenant::UpdateTenantRequest {
            name: "renamed by A".into(),
            domain: String::new(),
            update_mask: mask(&["name"]),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "A cannot rename B by asserting it",
    );
    add(
        "X-TEN-05",
        TENANT,
        "SetTenantActive",
        me.clone(),
        tenant::SetTenantActiveRequest {
            tenant_id: id("b.tenant"),
            is_active: false,
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "A's OWNER cannot deactivate B",
    );
    add(
        "X-TEN-06",
        TENANT,
        "AddMember",
        with_b_header(),
        tenant::AddMemberRequest {
            user_id: w.a_owner_user.user_id.to_string(),
            role: tenant::TenantRole::Owner.into(),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "A's owner cannot add himself to B",
    );
    add(
        "X-TEN-07",
        TENANT,
        "RemoveMember",
        me.clone(),
        tenant::RemoveMemberRequest {
            user_id: id("b.member"),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's member is not A's to remove, and not even seen",
    );
    add(
        "X-TEN-08",
        TENANT,
        "UpdateMemberRole",
        me.clone(),
        tenant::UpdateMemberRoleRequest {
            user_id: id("b.member"),
            role: tenant::TenantRole::Admin.into(),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's member's role is not A's to change",
    );
    add(
        "X-TEN-09",
        TENANT,
        "ListMembers",
        me.clone(),
        tenant::ListMembersRequest {
            page_token: id("b.page.members"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::Ok,
        &[],
        "B's page token lists A's members only",
    );
    add(
        "X-TEN-10",
        TENANT,
        "GetSettings",
        with_b_header(),
        tenant::GetSettingsRequest::default().encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "B's settings are not readable by asserting B",
    );
    add(
        "X-TEN-11",
        TENANT,
        "UpdateSettings",
        me.clone(),
        tenant::UpdateSettingsRequest {
            settings: Some(tenant::OrganizationSettings {
                locale: "fr-FR".into(),
                ..Default::default()
            }),
            update_mask: mask(&["locale"]),
            global_default: true,
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "A's OWNER cannot change every tenant's defaults",
    );
    add(
        "X-TEN-12",
        TENANT,
        "ListUserMemberships",
        me.clone(),
        tenant::ListUserMembershipsRequest {
            user_id: id("b.member"),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "which tenants B's member is in: for Auth only",
    );
    add(
        "X-TEN-13",
        TENANT,
        "CheckMembership",
        me.clone(),
        tenant::CheckMembershipRequest {
            user_id: id("b.member"),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "a membership oracle: for Task only",
    );

    // Task.
    add(
        "X-TASK-01",
        TASK,
        "CreateTask",
        me.clone(),
        task::CreateTaskRequest {
            title: "assigned across".into(),
            assignee_user_id: id("b.member"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::FailedPrecondition,
        &[],
        "B's member cannot be assigned A's work",
    );
    add(
        "X-TASK-02",
        TASK,
        "GetTask",
        me.clone(),
        task::GetTaskRequest {
            task_id: id("b.task"),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's task is not found for A",
    );
    add(
        "X-TASK-03",
        TASK,
        "UpdateTask",
        me.clone(),
        task::UpdateTaskRequest {
            task: Some(task::Task {
                id: id("b.task"),
                title: "taken".into(),
                etag: id("b.task.etag"),
                ..Default::default()
            }),
            update_mask: mask(&["title"]),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's task cannot be changed by A, even with its etag",
    );
    add(
        "X-TASK-04",
        TASK,
        "DeleteTask",
        me.clone(),
        task::DeleteTaskRequest {
            task_id: id("b.task"),
            etag: id("b.task.etag"),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's task cannot be deleted by A",
    );
    add(
        "X-TASK-05",
        TASK,
        "ListTasks",
        me.clone(),
        task::ListTasksRequest {
            page_token: id("b.page.tasks"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::InvalidArgument,
        &[],
        "B's page token is refused: Task's page tokens name their tenant",
    );
    add(
        "X-TASK-05b",
        TASK,
        "ListTasks",
        me.clone(),
        task::ListTasksRequest {
            assignee_user_id: id("b.member"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::Ok,
        &[],
        "a filter on B's member lists nothing of B's",
    );
    add(
        "X-TASK-06",
        TASK,
        "BulkUpdateTaskStatus",
        me.clone(),
        task::BulkUpdateTaskStatusRequest {
            task_ids: vec![id("b.task")],
            status: task::TaskStatus::Completed.into(),
        }
        .encode_to_vec(),
        Code::Ok,
        &[],
        "a bulk change naming B's task updates nothing and names nothing back",
    );
    add(
        "X-TASK-07",
        TASK,
        "GetTaskAnalytics",
        with_b_header(),
        task::GetTaskAnalyticsRequest { trend_days: 7 }.encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "B's figures are not readable by asserting B",
    );
    add(
        "X-TASK-08",
        TASK,
        "CreateComplianceRecord",
        me.clone(),
        task::CreateComplianceRecordRequest {
            title: "linked across".into(),
            due_time: ts(86_400),
            task_id: id("b.task"),
        }
        .encode_to_vec(),
        Code::FailedPrecondition,
        &[],
        "no record of A can point at B's task (compound key)",
    );
    add(
        "X-TASK-09",
        TASK,
        "ListComplianceRecords",
        me.clone(),
        task::ListComplianceRecordsRequest {
            page_token: id("b.page.records"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::InvalidArgument,
        &[],
        "B's page token is refused: it names its tenant",
    );
    add(
        "X-TASK-10",
        TASK,
        "UpdateComplianceRecord",
        me.clone(),
        task::UpdateComplianceRecordRequest {
            record: Some(task::ComplianceRecord {
                id: id("b.record"),
                title: "taken".into(),
                etag: id("b.record.etag"),
                ..Default::default()
            }),
            update_mask: mask(&["title"]),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's record cannot be changed by A",
    );
    add(
        "X-TASK-11",
        TASK,
        "ReleaseAssignments",
        me.clone(),
        task::ReleaseAssignmentsRequest {
            tenant_id: id("b.tenant"),
            user_id: id("b.member"),
            membership_create_time: ts(0),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "only Tenant releases assignments: A cannot unassign B's work",
    );

    // Catalog.
    add(
        "X-CAT-01",
        CATALOG,
        "CreateService",
        with_b_header(),
        task::CreateServiceRequest {
            service: Some(task::Service {
                slug: "planted".into(),
                name: "planted".into(),
                ..Default::default()
            }),
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "A cannot plant a service in B by asserting it",
    );
    add(
        "X-CAT-02",
        CATALOG,
        "GetService",
        me.clone(),
        task::GetServiceRequest {
            key: Some(task::get_service_request::Key::ServiceId(id("b.service"))),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's service is not found for A (by id)",
    );
    add(
        "X-CAT-02b",
        CATALOG,
        "GetService",
        me.clone(),
        task::GetServiceRequest {
            key: Some(task::get_service_request::Key::Slug(id("b.service.slug"))),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's service is not found for A (by slug)",
    );
    add(
        "X-CAT-03",
        CATALOG,
        "ListServices",
        me.clone(),
        task::ListServicesRequest {
            page_token: id("b.page.services"),
            include_inactive: true,
            ..Default::default()
        }
        .encode_to_vec(),
        Code::InvalidArgument,
        &[],
        "B's page token is refused: it names its tenant",
    );
    add(
        "X-CAT-04",
        CATALOG,
        "UpdateService",
        me.clone(),
        task::UpdateServiceRequest {
            service: Some(task::Service {
                id: id("b.service"),
                name: "taken".into(),
                etag: id("b.service.etag"),
                ..Default::default()
            }),
            update_mask: mask(&["name"]),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's service cannot be changed by A",
    );
    add(
        "X-CAT-05",
        CATALOG,
        "DeactivateService",
        me.clone(),
        task::DeactivateServiceRequest {
            service_id: id("b.service"),
            etag: id("b.service.etag"),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's service cannot be deactivated by A",
    );
    add(
        "X-CAT-06",
        CATALOG,
        "CreateServiceRequest",
        me.clone(),
        task::CreateServiceRequestRequest {
            service_id: id("b.service"),
            details: "across".into(),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "A cannot request B's service",
    );
    add(
        "X-CAT-07",
        CATALOG,
        "ListServiceRequests",
        me.clone(),
        task::ListServiceRequestsRequest {
            page_token: id("b.page.requests"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::InvalidArgument,
        &[],
        "B's page token is refused: it names its tenant",
    );
    add(
        "X-CAT-07b",
        CATALOG,
        "ListServiceRequests",
        me.clone(),
        task::ListServiceRequestsRequest {
            service_id: id("b.service"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::Ok,
        &[],
        "a filter on B's service lists nothing of B's",
    );
    add(
        "X-CAT-08",
        CATALOG,
        "UpdateServiceRequest",
        me.clone(),
        task::UpdateServiceRequestRequest {
            service_request: Some(task::ServiceRequest {
                id: id("b.request"),
                details: "taken".into(),
                etag: id("b.request.etag"),
                ..Default::default()
            }),
            update_mask: mask(&["details"]),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's request cannot be changed by A",
    );
    add(
        "X-CAT-09",
        CATALOG,
        "CreateBooking",
        me.clone(),
        task::CreateBookingRequest {
            service_id: id("b.service"),
            start_time: ts(40 * 86_400),
            end_time: None,
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "A cannot book B's service",
    );
    add(
        "X-CAT-10",
        CATALOG,
        "ListBookings",
        me.clone(),
        task::ListBookingsRequest {
            page_token: id("b.page.bookings"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::InvalidArgument,
        &[],
        "B's page token is refused: it names its tenant",
    );
    add(
        "X-CAT-10b",
        CATALOG,
        "ListBookings",
        me.clone(),
        task::ListBookingsRequest {
            service_id: id("b.service"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::Ok,
        &[],
        "a filter on B's service lists nothing of B's",
    );
    add(
        "X-CAT-11",
        CATALOG,
        "ConfirmBooking",
        me.clone(),
        task::ConfirmBookingRequest {
            booking_id: id("b.booking"),
            etag: id("b.booking.etag"),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's booking cannot be confirmed by A",
    );
    add(
        "X-CAT-12",
        CATALOG,
        "CancelBooking",
        me.clone(),
        task::CancelBookingRequest {
            booking_id: id("b.booking"),
            etag: id("b.booking.etag"),
        }
        .encode_to_vec(),
        Code::NotFound,
        &[],
        "B's booking cannot be cancelled by A",
    );

    // Audit.
    add(
        "X-AUD-01",
        AUDIT,
        "AppendEvents",
        me.clone(),
        audit::AppendEventsRequest {
            events: vec![audit::AuditEvent {
                id: uuid::Uuid::now_v7().to_string(),
                tenant_id: id("b.tenant"),
                action: "task.deleted".into(),
                resource_type: "task".into(),
                resource_id: id("b.task"),
                occur_time: ts(0),
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "no user can write into B's audit trail",
    );
    add(
        "X-AUD-02",
        AUDIT,
        "QueryEvents",
        me.clone(),
        audit::QueryEventsRequest {
            page_token: id("b.page.events"),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::InvalidArgument,
        &[],
        "B's page token is refused: it names its tenant",
    );
    add(
        "X-AUD-02c",
        AUDIT,
        "QueryEvents",
        me.clone(),
        audit::QueryEventsRequest {
            filter: Some(audit::AuditEventFilter {
                resource_id: id("b.task"),
                actor_user_id: id("b.owner"),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec(),
        Code::Ok,
        &[],
        "a filter on B's task and B's owner finds none of B's events",
    );
    add(
        "X-AUD-02b",
        AUDIT,
        "QueryEvents",
        me.clone(),
        audit::QueryEventsRequest {
            platform: true,
            ..Default::default()
        }
        .encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "the platform trail is for SUPER_ADMINs",
    );
    add(
        "X-AUD-03",
        AUDIT,
        "ExportEvents",
        me.clone(),
        audit::ExportEventsRequest {
            filter: Some(audit::AuditEventFilter {
                resource_id: id("b.task"),
                ..Default::default()
            }),
            platform: false,
        }
        .encode_to_vec(),
        Code::Ok,
        &[],
        "an export filtered on B's task streams none of B's events (it ends by signing A's own checkpoint)",
    );
    add(
        "X-AUD-04",
        AUDIT,
        "VerifyChain",
        me.clone(),
        audit::VerifyChainRequest {
            checkpoint: id("b.checkpoint"),
            platform: false,
        }
        .encode_to_vec(),
        Code::InvalidArgument,
        &[],
        "B's signed checkpoint is not one of A's chain",
    );
    add(
        "X-AUD-05",
        AUDIT,
        "CreateCheckpoint",
        me.clone(),
        audit::CreateCheckpointRequest { platform: true }.encode_to_vec(),
        Code::PermissionDenied,
        &[],
        "A's OWNER cannot sign the platform chain",
    );
    add(
        "X-AUD-06",
        AUDIT,
        "GetCheckpointKeys",
        vec![],
        audit::GetCheckpointKeysRequest {}.encode_to_vec(),
        Code::Ok,
        &[],
        "the checkpoint keys carry nothing of any tenant",
    );
    cases
}

/// Forged, stale and misplaced identities, against one write a valid token
/// would make (renaming A's own task).
fn identity_cases(w: &World) -> Vec<Case> {
    let config = VerifierConfig::default();
    let key: &SigningKey = &w.suite.key;
    let claims = || {
        Claims::access(
            &config.issuer,
            &config.audience,
            &w.a_owner_user,
            Duration::from_secs(900),
        )
    };
    let signed = |c: &Claims| key.sign(c).expect("sign");
    let update = task::UpdateTaskRequest {
        task: Some(task::Task {
            id: w.a_task.id.clone(),
            title: "renamed by a forged token".into(),
            ..Default::default()
        }),
        update_mask: mask(&["title"]),
    }
    .encode_to_vec();
    let method = path(TASK, "UpdateTask");
    let mut cases = Vec::new();
    let mut add = |id: &str, metadata: Vec<(&'static str, String)>, expect: Code, proves: &str| {
        cases.push(Case {
            id: id.to_owned(),
            method: method.clone(),
            metadata,
            body: update.clone(),
            expect,
            may_change: &[],
            must_change: &[],
            proves: proves.to_owned(),
        });
    };

    // The tenant claim changed, the signature kept.
    let real = signed(&claims());
    let parts: Vec<&str> = real.split('.').collect();
    let mut changed_claims = claims();
    changed_claims.tid = Some(w.b.to_string());
    changed_claims.tslug = Some(w.b_slug.clone());
    let changed_payload =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&changed_claims).expect("json"));
    add(
        "ID-01",
        user(&format!("{}.{changed_payload}.{}", parts[0], parts[2])),
        Code::Unauthenticated,
        "a token whose tenant claim was changed to B fails its signature",
    );
    // Re-signed with another key, under the real key's kid.
    let stranger = SigningKey::generate();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid().to_owned());
    let resigned = jsonwebtoken::encode(
        &header,
        &changed_claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&pem_body(&stranger.to_pkcs8_pem())),
    )
    .expect("re-signed");
    add(
        "ID-02",
        user(&resigned),
        Code::Unauthenticated,
        "a token re-signed with another key under Auth's kid is refused",
    );
    let other_kid = stranger.sign(&changed_claims).expect("sign");
    add(
        "ID-02b",
        user(&other_kid),
        Code::Unauthenticated,
        "a token signed by an unknown key is refused",
    );
    // alg: none.
    let none_header = URL_SAFE_NO_PAD
        .encode(serde_json::json!({"alg": "none", "typ": "JWT", "kid": key.kid()}).to_string());
    add(
        "ID-03",
        user(&format!("{none_header}.{changed_payload}.")),
        Code::Unauthenticated,
        "alg: none is refused",
    );
    // HS256 signed with the public key (key confusion).
    let x = key.public_jwk()["x"].as_str().expect("x").to_owned();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(key.kid().to_owned());
    let confused = jsonwebtoken::encode(
        &hs,
        &changed_claims,
        &jsonwebtoken::EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(&x).expect("raw key")),
    )
    .expect("hs256");
    add(
        "ID-04",
        user(&confused),
        Code::Unauthenticated,
        "HS256 with the public key as secret is refused",
    );
    // Expired, not yet valid, another audience.
    let now = unix_now();
    let mut expired = claims();
    (expired.iat, expired.nbf, expired.exp) = (now - 7200, now - 7200, now - 3600);
    add(
        "ID-05",
        user(&signed(&expired)),
        Code::Unauthenticated,
        "an expired token is refused",
    );
    let mut early = claims();
    (early.nbf, early.exp) = (now + 3600, now + 7200);
    add(
        "ID-06",
        user(&signed(&early)),
        Code::Unauthenticated,
        "a token not yet valid is refused",
    );
    let mut foreign = claims();
    foreign.aud = "another-product".into();
    add(
        "ID-07",
        user(&signed(&foreign)),
        Code::Unauthenticated,
        "a token for another audience is refused",
    );
    // Sessions that ended.
    add(
        "ID-08",
        user(&w.logged_out),
        Code::Unauthenticated,
        "a logged-out session's token is refused",
    );
    add(
        "ID-09",
        user(&w.deactivated),
        Code::Unauthenticated,
        "a deactivated tenant's owner's token is refused",
    );
    add(
        "ID-10",
        user(&w.removed_member),
        Code::Unauthenticated,
        "a removed member's still-unexpired token is refused",
    );
    // Oversized.
    let mut big = claims();
    big.tslug = Some("x".repeat(6000));
    add(
        "ID-11",
        user(&signed(&big)),
        Code::Unauthenticated,
        "an oversized (validly signed) token is refused unread",
    );
    // x-tenant-id.
    let mut mismatch = user(&w.a_owner);
    mismatch.push(("x-tenant-id", w.b.to_string()));
    add(
        "ID-12",
        mismatch,
        Code::PermissionDenied,
        "x-tenant-id naming B with A's token is refused",
    );
    let mut twice = user(&w.a_owner);
    twice.push(("x-tenant-id", w.a.to_string()));
    twice.push(("x-tenant-id", w.b.to_string()));
    add(
        "ID-13",
        twice,
        Code::PermissionDenied,
        "x-tenant-id sent twice (A, then B) is ambiguous and refused, not read as A",
    );
    let mut two_tokens = user(&w.a_owner);
    two_tokens.push(("authorization", format!("Bearer {}", w.a_viewer)));
    add(
        "ID-14",
        two_tokens,
        Code::Unauthenticated,
        "two bearer tokens are ambiguous and refused",
    );
    // Service and user tokens in each other's places.
    let service = w.suite.service_token("tenant");
    add(
        "ID-15",
        user(&service),
        Code::Unauthenticated,
        "a service token in the user's slot is no user token",
    );
    add(
        "ID-16",
        vec![("x-service-authorization", format!("Bearer {service}"))],
        Code::PermissionDenied,
        "a service alone cannot act on a tenant's task (a user is required)",
    );
    cases.push(Case {
        id: "ID-17".into(),
        method: path(TASK, "ReleaseAssignments"),
        metadata: vec![("x-service-authorization", format!("Bearer {}", w.a_owner))],
        body: task::ReleaseAssignmentsRequest {
            tenant_id: w.a.to_string(),
            user_id: w.a_owner_user.user_id.to_string(),
            membership_create_time: ts(0),
        }
        .encode_to_vec(),
        expect: Code::Unauthenticated,
        may_change: &[],
        must_change: &[],
        proves: "a user's token in the service slot is no service token".into(),
    });
    cases
}

/// The DER inside a PEM text.
fn pem_body(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM base64")
}

/// A VIEWER of A calling every write RPC (every RPC that creates, changes,
/// removes or signs, by its name in the descriptor set).
fn viewer_cases(w: &World) -> Vec<Case> {
    const WRITES: [&str; 13] = [
        "Create",
        "Update",
        "Delete",
        "Deactivate",
        "Set",
        "Add",
        "Remove",
        "Bulk",
        "Confirm",
        "Cancel",
        "Release",
        "Append",
        "Revoke",
    ];
    all_methods()
        .into_iter()
        .filter(|(_, m)| WRITES.iter().any(|w| m.starts_with(w)))
        .map(|(service, method)| Case {
            id: format!("VIEW-{method}"),
            method: path(&service, &method),
            metadata: user(&w.a_viewer),
            body: Vec::new(),
            expect: Code::PermissionDenied,
            may_change: &[],
            must_change: &[],
            proves: "a VIEWER of A writes nothing".into(),
        })
        .collect()
}

/// `(service, method)` of every RPC in the descriptor set.
fn all_methods() -> Vec<(String, String)> {
    ServiceKind::ALL
        .iter()
        .flat_map(|k| k.grpc_services().iter())
        .flat_map(|service| {
            bulkhead_proto::method_names(service)
                .into_iter()
                .map(move |m| ((*service).to_owned(), m))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// SQL through the runtime roles.

async fn sql(conn: &mut AsyncPgConnection, statement: &str) -> Result<(), String> {
    diesel::sql_query(statement)
        .execute(conn)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

/// `app.tenant_id` as the next user of the pooled connection finds it.
async fn next_user_sees(db: &bulkhead_db::Db) -> Option<String> {
    let mut conn = db.system().await.expect("the pooled connection");
    diesel::sql_query("SELECT nullif(current_setting('app.tenant_id', true), '') AS value")
        .get_result::<Setting>(conn.pg())
        .await
        .expect("setting")
        .value
}

/// Tenant rows the next user of the pooled connection sees with no scope.
async fn next_user_rows(db: &bulkhead_db::Db, table: &str) -> i64 {
    let mut conn = db.system().await.expect("the pooled connection");
    diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
        .get_result::<Count>(conn.pg())
        .await
        .map_or(0, |c| c.n)
}

/// `(table, policy)` of every row-level security policy.
async fn policies(conn: &mut AsyncPgConnection) -> Vec<(String, String)> {
    #[derive(QueryableByName)]
    struct Policy {
        #[diesel(sql_type = Text)]
        tablename: String,
        #[diesel(sql_type = Text)]
        policyname: String,
    }
    diesel::sql_query(
        "SELECT tablename::text, policyname::text FROM pg_policies WHERE schemaname = 'public'",
    )
    .load::<Policy>(conn)
    .await
    .expect("policies")
    .into_iter()
    .map(|p| (p.tablename, p.policyname))
    .collect()
}

#[allow(clippy::too_many_lines, reason = "one SQL attack after another")]
async fn sql_cases(w: &World) -> Vec<(String, &'static str, bool, String)> {
    let mut rows = Vec::new();
    let b = w.b.to_string();
    // SQL-01/02: a session-level setting on a pooled connection (a pool of one:
    // the next user gets that very connection).
    let task_db = &w.suite.databases["task"];
    let db = task_db.app_db(1).await;
    {
        let mut conn = db.system().await.expect("connection");
        sql(conn.pg(), &format!("SET app.tenant_id = '{b}'"))
            .await
            .expect("any role may SET a custom setting");
    }
    let seen = next_user_sees(&db).await;
    let rows_seen = next_user_rows(&db, "tasks").await;
    rows.push((
        "SQL-01".into(),
        "SET app.tenant_id = B outside a transaction never reaches the next user of the pooled connection",
        seen.is_none() && rows_seen == 0,
        format!("next user sees setting {seen:?} and {rows_seen} task rows"),
    ));
    {
        let result = db
            .tenant_tx(w.a, async |tx| {
                diesel::sql_query(format!("SET app.tenant_id = '{b}'"))
                    .execute(&mut tx.pg())
                    .await?;
                Ok::<_, bulkhead_db::DbError>(())
            })
            .await;
        result.expect("a session-level SET inside a scope");
    }
    let seen = next_user_sees(&db).await;
    let in_scope = db
        .tenant_read(w.a, async |tx| {
            Ok::<_, bulkhead_db::DbError>(
                diesel::sql_query("SELECT current_setting('app.tenant_id', true) AS value")
                    .get_result::<Setting>(&mut tx.pg())
                    .await?
                    .value,
            )
        })
        .await
        .expect("scope");
    rows.push((
        "SQL-02".into(),
        "SET (not LOCAL) app.tenant_id = B inside A's scope outlives neither the scope nor reaches the next scope",
        seen.is_none() && in_scope.as_deref() == Some(w.a.to_string().as_str()),
        format!("next unscoped user sees {seen:?}; the next scope of A runs as {in_scope:?}"),
    ));
    {
        let mut conn = db.system().await.expect("connection");
        sql(conn.pg(), &format!("SET app.tenant_id = '{b}'"))
            .await
            .expect("set");
        sql(conn.pg(), "RESET app.tenant_id").await.expect("reset");
        sql(
            conn.pg(),
            &format!("SET app.user_id = '{}'", w.id("b.member")),
        )
        .await
        .expect("set user");
    }
    let user_seen = {
        let mut conn = db.system().await.expect("connection");
        diesel::sql_query("SELECT nullif(current_setting('app.user_id', true), '') AS value")
            .get_result::<Setting>(conn.pg())
            .await
            .expect("setting")
            .value
    };
    rows.push((
        "SQL-03".into(),
        "RESET, then SET app.user_id = B's member: neither reaches the next user of the connection",
        user_seen.is_none() && next_user_sees(&db).await.is_none(),
        format!("next user sees app.user_id {user_seen:?}"),
    ));

    // SQL-04..: every runtime role of every service.
    for kind in ServiceKind::ALL {
        let database = &w.suite.databases[kind.name()];
        let schema = kind.schema();
        let mut urls = vec![
            (schema.app_role(), database.app_url.clone()),
            (schema.platform_role(), database.platform_url.clone()),
        ];
        urls.extend(
            database
                .job_urls
                .iter()
                .map(|(role, url)| (role.clone(), url.clone())),
        );
        let mut admin = database.admin_connection().await;
        let tables = table_names(&mut admin).await;
        for (role, url) in urls {
            let mut conn = bulkhead_db::schema::connect_once(&url)
                .await
                .expect("connect");
            #[derive(QueryableByName)]
            struct Name {
                #[diesel(sql_type = Text)]
                name: String,
            }
            let others: Vec<String> = diesel::sql_query(
                "SELECT rolname::text AS name FROM pg_roles WHERE rolname <> current_user",
            )
            .load::<Name>(&mut conn)
            .await
            .expect("roles")
            .into_iter()
            .map(|n| n.name)
            .collect();
            let became: Vec<&String> = {
                let mut became = Vec::new();
                for other in &others {
                    if sql(&mut conn, &format!("SET ROLE \"{other}\""))
                        .await
                        .is_ok()
                    {
                        became.push(other);
                        let _ = sql(&mut conn, "RESET ROLE").await;
                    }
                }
                became
            };
            rows.push((
                format!("SQL-ROLE-{role}"),
                "SET ROLE to every other role of the cluster fails",
                became.is_empty() && others.len() > 3,
                format!("{} roles tried, became {became:?}", others.len()),
            ));
            let mut disabled = Vec::new();
            let policies = policies(&mut admin).await;
            assert!(
                !policies.is_empty(),
                "{role}: the database has policies to drop"
            );
            let statements = tables
                .iter()
                .flat_map(|table| {
                    [
                        format!("ALTER TABLE \"{table}\" DISABLE ROW LEVEL SECURITY"),
                        format!("ALTER TABLE \"{table}\" NO FORCE ROW LEVEL SECURITY"),
                    ]
                })
                .chain(
                    policies
                        .iter()
                        .map(|(table, policy)| format!("DROP POLICY \"{policy}\" ON \"{table}\"")),
                );
            for statement in statements {
                if sql(&mut conn, &statement).await.is_ok() {
                    disabled.push(statement);
                }
            }
            rows.push((
                format!("SQL-RLS-{role}"),
                "ALTER TABLE … DISABLE / NO FORCE ROW LEVEL SECURITY and DROP POLICY fail on every table and policy",
                disabled.is_empty(),
                format!("{} tables tried, succeeded: {disabled:?}", tables.len()),
            ));
            if kind == ServiceKind::Audit {
                let mut changed = Vec::new();
                for statement in [
                    "UPDATE events SET action = 'forged'",
                    "DELETE FROM events",
                    "TRUNCATE events",
                    "DELETE FROM checkpoints",
                ] {
                    // Inside B's scope too: the rows are visible there.
                    let scoped =
                        format!("BEGIN; SET LOCAL app.tenant_id = '{b}'; {statement}; COMMIT");
                    for attempt in [statement.to_owned(), scoped] {
                        let outcome =
                            diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, &attempt)
                                .await;
                        let _ = sql(&mut conn, "ROLLBACK").await;
                        if outcome.is_ok() {
                            changed.push(attempt);
                        }
                    }
                }
                rows.push((
                    format!("SQL-AUDIT-{role}"),
                    "UPDATE / DELETE / TRUNCATE of audit events and checkpoints are refused, in B's scope too",
                    changed.is_empty(),
                    format!("succeeded: {changed:?}"),
                ));
            }
        }
    }
    rows
}

// ---------------------------------------------------------------------------
// The test.

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Rows outside tenant B that hold one of B's names (`B-SECRET`): an audit
/// event or outbox message of A's that copied B's data, say.
async fn b_names_outside_b(suite: &TestSuite, b: TenantId) -> Vec<String> {
    let mut found = Vec::new();
    for kind in ServiceKind::ALL {
        let mut owner = suite.databases[kind.name()].admin_connection().await;
        let with_tenant = tenant_tables(&mut owner).await;
        for table in table_names(&mut owner).await {
            let outside_b = if with_tenant.contains(&table) {
                format!("r.tenant_id IS DISTINCT FROM '{b}'")
            } else {
                "true".to_owned()
            };
            let n = diesel::sql_query(format!(
                "SELECT count(*) AS n FROM \"{table}\" r WHERE {outside_b} AND r::text LIKE '%{B_SECRET}%'"
            ))
            .get_result::<Count>(&mut owner)
            .await
            .expect("scan")
            .n;
            if n > 0 {
                found.push(format!("{}.{table}: {n} rows", kind.name()));
            }
        }
    }
    found
}

/// A status for B's row and for a row that never existed must be the same,
/// word for word: NOT_FOUND gives no hint that B's exists.
async fn same_answer_as_for_nothing(w: &World) -> Vec<String> {
    let random = uuid::Uuid::now_v7().to_string();
    let mut differ = Vec::new();
    for (method, b_body, nothing) in [
        (
            path(TASK, "GetTask"),
            task::GetTaskRequest {
                task_id: w.id("b.task"),
            }
            .encode_to_vec(),
            task::GetTaskRequest {
                task_id: random.clone(),
            }
            .encode_to_vec(),
        ),
        (
            path(CATALOG, "GetService"),
            task::GetServiceRequest {
                key: Some(task::get_service_request::Key::ServiceId(w.id("b.service"))),
            }
            .encode_to_vec(),
            task::GetServiceRequest {
                key: Some(task::get_service_request::Key::ServiceId(random.clone())),
            }
            .encode_to_vec(),
        ),
        (
            path(TENANT, "RemoveMember"),
            tenant::RemoveMemberRequest {
                user_id: w.id("b.member"),
            }
            .encode_to_vec(),
            tenant::RemoveMemberRequest {
                user_id: random.clone(),
            }
            .encode_to_vec(),
        ),
        (
            path(TENANT, "GetTenant"),
            tenant::GetTenantRequest {
                tenant: Some(tenant::get_tenant_request::Tenant::TenantId(
                    w.id("b.tenant"),
                )),
            }
            .encode_to_vec(),
            tenant::GetTenantRequest {
                tenant: Some(tenant::get_tenant_request::Tenant::TenantId(random.clone())),
            }
            .encode_to_vec(),
        ),
    ] {
        let kind = if method.contains("tenant.v1") {
            ServiceKind::Tenant
        } else {
            ServiceKind::Task
        };
        let answer = async |body: Vec<u8>| {
            call(w.suite.channel(kind), &method, &user(&w.a_owner), body)
                .await
                .map(drop)
                .map_err(|s| (s.code(), s.message().to_owned()))
        };
        let (for_b, for_nothing) = (answer(b_body).await, answer(nothing).await);
        if for_b != for_nothing || for_b.is_ok() {
            differ.push(format!(
                "{method}: B's {for_b:?}, nothing's {for_nothing:?}"
            ));
        }
    }
    differ
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "run, check and print the table")]
async fn attack_catalogue() {
    let w = world().await;
    let markers = w.markers.clone();

    // Every RPC has a cross-tenant case: a new RPC without one fails here.
    let cross = cross_tenant_cases(&w);
    let covered: std::collections::BTreeSet<String> =
        cross.iter().map(|c| c.method.clone()).collect();
    let every: std::collections::BTreeSet<String> = all_methods()
        .into_iter()
        .map(|(s, m)| path(&s, &m))
        .collect();
    assert_eq!(
        every.len(),
        53,
        "the suite's RPCs (update when one is added)"
    );
    let missing: Vec<&String> = every.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "RPCs without a cross-tenant case: {missing:?}"
    );
    let unknown: Vec<&String> = covered.difference(&every).collect();
    assert!(
        unknown.is_empty(),
        "cases for RPCs that do not exist: {unknown:?}"
    );

    // The control: A's owner renames A's task. It must pass and must show as
    // a change, or the checks below could not fail.
    let control = Case {
        id: "CTRL-01".into(),
        method: path(TASK, "UpdateTask"),
        metadata: user(&w.a_owner),
        body: task::UpdateTaskRequest {
            task: Some(task::Task {
                id: w.a_task.id.clone(),
                title: "renamed by its owner".into(),
                ..Default::default()
            }),
            update_mask: mask(&["title"]),
        }
        .encode_to_vec(),
        expect: Code::Ok,
        may_change: &["task.tasks"],
        must_change: &["task.tasks", "task.outbox[audit]", "audit.events"],
        proves: "the target write works with the real token, and the snapshot sees it".into(),
    };
    let cases: Vec<Case> = std::iter::once(control)
        .chain(cross)
        .chain(identity_cases(&w))
        .chain(viewer_cases(&w))
        .collect();

    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut before = settled(&w.suite, w.b).await;
    let kind_of = |method: &str| {
        let service = method
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        ServiceKind::ALL
            .into_iter()
            .find(|k| k.grpc_services().contains(&service.as_str()))
            .expect("a service of the suite")
    };
    for case in &cases {
        let result = call(
            w.suite.channel(kind_of(&case.method)),
            &case.method,
            &case.metadata,
            case.body.clone(),
        )
        .await;
        let got = match &result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        // An answer carries none of B's identifiers; a refusal (its message
        // and details) none of B's names either (A sent B's ids itself).
        let leaked: Vec<&String> = match &result {
            Ok(messages) => markers
                .iter()
                .filter(|m| messages.iter().any(|body| contains(body, m)))
                .collect(),
            Err(status) => markers
                .iter()
                .filter(|m| m.as_str() == B_SECRET)
                .filter(|m| {
                    contains(status.message().as_bytes(), m) || contains(status.details(), m)
                })
                .collect(),
        };
        let after = settled(&w.suite, w.b).await;
        let diff = changed(&before, &after);
        let unexpected: Vec<&String> = diff
            .iter()
            .filter(|t| !TRAIL.iter().chain(case.may_change).any(|p| allowed(p, t)))
            .collect();
        let missing_change: Vec<&&str> = case
            .must_change
            .iter()
            .filter(|t| !diff.iter().any(|d| d == **t))
            .collect();
        let ok = got == case.expect
            && leaked.is_empty()
            && unexpected.is_empty()
            && missing_change.is_empty();
        if !ok {
            failures.push(format!(
                "{} {}: expected {:?}, got {:?} ({}); leaked {leaked:?}; changed {unexpected:?}; unchanged {missing_change:?}",
                case.id,
                case.method,
                case.expect,
                got,
                result.as_ref().err().map(|s| s.message().to_owned()).unwrap_or_default(),
            ));
        }
        table.push(format!(
            "| {} | `{}` | {:?} | {} | {} |",
            case.id,
            case.method.rsplit('/').next().unwrap_or_default(),
            case.expect,
            if ok { "ok" } else { "FAIL" },
            case.proves
        ));
        before = after;
    }

    let sql_rows = sql_cases(&w).await;
    let after_sql = settled(&w.suite, w.b).await;
    let diff: Vec<String> = changed(&before, &after_sql)
        .into_iter()
        .filter(|t| !TRAIL.iter().any(|p| allowed(p, t)))
        .collect();
    for (id, proves, passed, detail) in &sql_rows {
        if !passed {
            failures.push(format!("{id}: {detail}"));
        }
        table.push(format!(
            "| {id} | SQL | refused | {} | {proves} |",
            if *passed { "ok" } else { "FAIL" }
        ));
    }
    if !diff.is_empty() {
        failures.push(format!("the SQL attacks changed {diff:?}"));
    }

    failures.extend(
        same_answer_as_for_nothing(&w)
            .await
            .into_iter()
            .map(|d| format!("NOT_FOUND differs: {d}")),
    );
    failures.extend(
        b_names_outside_b(&w.suite, w.b)
            .await
            .into_iter()
            .map(|d| format!("B's names outside B: {d}")),
    );

    println!("| id | RPC | expected | result | proves |\n|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    println!("{} cases, {} failed", table.len(), failures.len());
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

/// Any tenant's ADMIN may add any user by id (memberships need no consent);
/// the membership added later must not become where the user's logins
/// without a slug land: a tenant whose slug sorts first would otherwise
/// capture another tenant's member, who would then work in the attacker's
/// tenant without knowing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_another_tenants_member_does_not_capture_their_logins() {
    let suite = spawn_suite().await;
    let operator = suite.operator_token();
    let victim = create_user(&suite, &operator, "victim@b.example").await;
    let boss = create_user(&suite, &operator, "boss@b.example").await;
    let attacker = create_user(&suite, &operator, "attacker@a.example").await;
    let mut tenants =
        tenant::tenant_service_client::TenantServiceClient::new(suite.channel(ServiceKind::Tenant));
    for (slug, owner) in [("zz-victims-own", &boss), ("aa-attackers", &attacker)] {
        tenants
            .create_tenant(bearer(
                &operator,
                tenant::CreateTenantRequest {
                    slug: slug.into(),
                    name: slug.into(),
                    domain: String::new(),
                    owner_user_id: owner.clone(),
                },
            ))
            .await
            .expect("tenant");
    }
    // The victim joined their tenant as a MEMBER (no default membership).
    let boss_token = access(&login(&suite, "boss@b.example", "").await);
    tenants
        .add_member(bearer(
            &boss_token,
            tenant::AddMemberRequest {
                user_id: victim.clone(),
                role: tenant::TenantRole::Member.into(),
            },
        ))
        .await
        .expect("the victim joins");
    let before = login(&suite, "victim@b.example", "").await;
    assert_eq!(before.tenant.expect("tenant").slug, "zz-victims-own");
    let attacker_token = access(&login(&suite, "attacker@a.example", "").await);
    tenants
        .add_member(bearer(
            &attacker_token,
            tenant::AddMemberRequest {
                user_id: victim,
                role: tenant::TenantRole::Member.into(),
            },
        ))
        .await
        .expect("allowed: user ids are global");
    let after = login(&suite, "victim@b.example", "").await;
    assert_eq!(
        after.tenant.expect("tenant").slug,
        "zz-victims-own",
        "the victim's login still lands in their own tenant"
    );
}

//! No role the runtime role can reach sees across tenants (ARCHITECTURE §4), for
//! every service of the suite: through the runtime role's connection (and the
//! platform role's), `SET ROLE` to any other role fails, and with no tenant set
//! the runtime role reads nothing of any tenant table, though every one of them
//! holds rows.

use bulkhead::services::ServiceKind;
use bulkhead_auth::Existing;
use bulkhead_context::UserId;
use bulkhead_proto::audit::v1 as audit_pb;
use bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient;
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::catalog_service_client::CatalogServiceClient;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use bulkhead_testkit::bearer;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

use super::support::{TestSuite, spawn_suite};

const PASSWORD: &str = "a long enough password";

/// Rows in every kind of table, written through the services' own RPCs: a
/// tenant with its owner, a login (a session, audit events in Auth's outbox),
/// a settings override (Tenant's outbox too), a task and a compliance record
/// (Task's outbox).
async fn seed(suite: &TestSuite) -> String {
    let auth_db = suite.databases["auth"].app_db(2).await;
    let alice =
        bulkhead_auth::bootstrap_admin(&auth_db, "alice@example.com", PASSWORD, Existing::Verify)
            .await
            .expect("alice")
            .user_id();
    let mut tenants = TenantServiceClient::new(suite.channel(ServiceKind::Tenant));
    let operator = suite.operator_token();
    tenants
        .create_tenant(bearer(
            &operator,
            tenant::CreateTenantRequest {
                slug: "acme".into(),
                name: "Acme".into(),
                domain: String::new(),
                owner_user_id: alice.to_string(),
            },
        ))
        .await
        .expect("tenant");
    let login = AuthServiceClient::new(suite.channel(ServiceKind::Auth))
        .login(auth::LoginRequest {
            email: "alice@example.com".into(),
            password: PASSWORD.into(),
            tenant_slug: String::new(),
        })
        .await
        .expect("login")
        .into_inner();
    let token = login.tokens.expect("tokens").access_token;
    tenants
        .update_settings(bearer(
            &token,
            tenant::UpdateSettingsRequest {
                settings: Some(tenant::OrganizationSettings {
                    locale: "en-GB".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["locale".into()],
                }),
                global_default: false,
            },
        ))
        .await
        .expect("settings");
    let mut tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    let task = tasks
        .create_task(bearer(
            &token,
            task::CreateTaskRequest {
                title: "a task".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("task")
        .into_inner()
        .task
        .expect("task");
    tasks
        .create_compliance_record(bearer(
            &token,
            task::CreateComplianceRecordRequest {
                title: "a record".into(),
                due_time: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                task_id: task.id,
            },
        ))
        .await
        .expect("compliance record");
    // The catalog: a service, a request for it and a booking of it.
    let mut catalog = CatalogServiceClient::new(suite.channel(ServiceKind::Task));
    let service = catalog
        .create_service(bearer(
            &token,
            task::CreateServiceRequest {
                service: Some(task::Service {
                    slug: "consult".into(),
                    name: "Consultation".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("service")
        .into_inner()
        .service
        .expect("service");
    catalog
        .create_service_request(bearer(
            &token,
            task::CreateServiceRequestRequest {
                service_id: service.id.clone(),
                details: String::new(),
            },
        ))
        .await
        .expect("service request");
    catalog
        .create_booking(bearer(
            &token,
            task::CreateBookingRequest {
                service_id: service.id,
                start_time: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() + 30 * 86_400,
                    nanos: 0,
                }),
                end_time: None,
            },
        ))
        .await
        .expect("booking");
    // Someone joins and leaves: Task keeps the removal (through Tenant's outbox).
    let bob = UserId::new_v7().to_string();
    tenants
        .add_member(bearer(
            &token,
            tenant::AddMemberRequest {
                user_id: bob.clone(),
                role: tenant::TenantRole::Viewer.into(),
            },
        ))
        .await
        .expect("bob joins");
    tenants
        .remove_member(bearer(&token, tenant::RemoveMemberRequest { user_id: bob }))
        .await
        .expect("bob leaves");
    token
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn names(conn: &mut AsyncPgConnection, query: &str) -> Vec<String> {
    diesel::sql_query(query)
        .load::<Name>(conn)
        .await
        .expect("names")
        .into_iter()
        .map(|n| n.name)
        .collect()
}

/// Rows of `table` that belong to a tenant.
async fn tenant_rows(conn: &mut AsyncPgConnection, table: &str) -> Result<i64, String> {
    diesel::sql_query(format!(
        "SELECT count(*) AS n FROM {table} WHERE tenant_id IS NOT NULL"
    ))
    .get_result::<Count>(conn)
    .await
    .map(|c| c.n)
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_the_runtime_role_can_reach_sees_across_tenants() {
    let suite = spawn_suite().await;
    let token = seed(&suite).await;
    // Audit's rows arrive through the writers' outbox relays: wait for the
    // owner's tenant to have a chain, and sign its head.
    let mut audit = AuditServiceClient::new(suite.channel(ServiceKind::Audit));
    let started = std::time::Instant::now();
    while audit
        .create_checkpoint(bearer(&token, audit_pb::CreateCheckpointRequest::default()))
        .await
        .expect("checkpoint")
        .into_inner()
        .checkpoint
        .is_none()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no audit event arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut task_admin = suite.databases["task"].admin_connection().await;
    while tenant_rows(&mut task_admin, "member_removals").await != Ok(1) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the removal did not reach Task"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Retention's tables: a period set as the platform role, and a prune
    // record (a real prune would empty the short chains of this test).
    let audit_db = &suite.databases["audit"];
    let some_tenant = bulkhead_context::TenantId::new_v7();
    bulkhead_audit::retention::set_period(&audit_db.app_db(2).await, some_tenant, 30)
        .await
        .expect("period");
    // (Its triggers, which hold a record to a real chain, set aside: only
    // the row matters here.)
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut audit_db.admin_connection().await,
        &format!(
            "SET session_replication_role = replica;
             INSERT INTO prunes (tenant_id, sequence, hash, jws, deleted_count)
             VALUES ('{some_tenant}', 1, '\\x00', 'jws', 1);"
        ),
    )
    .await
    .expect("a prune record");
    let mut tables_checked = 0;
    for kind in ServiceKind::ALL {
        let database = &suite.databases[kind.name()];
        let schema = kind.schema();
        let jobs: Vec<(&String, String)> = database
            .job_urls
            .iter()
            .map(|(role, url)| (url, role.clone()))
            .collect();
        for (url, me) in [
            (&database.app_url, schema.app_role()),
            (&database.platform_url, schema.platform_role()),
        ]
        .into_iter()
        .chain(jobs)
        {
            let mut conn = bulkhead_db::schema::connect_once(url)
                .await
                .expect("connect");
            let others = names(
                &mut conn,
                "SELECT rolname::text AS name FROM pg_roles WHERE rolname <> current_user",
            )
            .await;
            assert!(
                others.contains(&schema.owner_role()),
                "{me}: the owner is among the roles tried"
            );
            for other in others {
                let result = diesel::sql_query(format!("SET ROLE \"{other}\""))
                    .execute(&mut conn)
                    .await;
                assert!(result.is_err(), "{me} must not become {other}");
            }
            let who = names(&mut conn, "SELECT current_user::text AS name").await;
            assert_eq!(who, std::slice::from_ref(&me));
        }

        let mut admin = database.admin_connection().await;
        let tables = names(
            &mut admin,
            "SELECT c.relname::text AS name FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                             AND a.attname = 'tenant_id' AND NOT a.attisdropped)
              ORDER BY 1",
        )
        .await;
        let mut app = database.app_connection().await;
        tables_checked += tables.len();
        for table in &tables {
            let stored = tenant_rows(&mut admin, table)
                .await
                .expect("as the superuser");
            assert!(
                stored > 0,
                "{}.{table} holds rows for this test",
                kind.name()
            );
            match tenant_rows(&mut app, table).await {
                Ok(seen) => assert_eq!(seen, 0, "{}.{table}: no tenant, no rows", kind.name()),
                Err(err) => assert!(
                    err.contains("permission denied"),
                    "{}.{table}: {err}",
                    kind.name()
                ),
            }
        }
    }
    assert!(
        tables_checked >= 19,
        "Auth's sessions and outbox, Tenant's memberships, settings and outbox, Task's tasks, records, removals, services, requests, bookings and outbox, Audit's events, chain heads, checkpoints, retention periods and prunes at least: {tables_checked}"
    );
}

/// The code of `path` called with an empty message and `service`'s token.
async fn internal_call(
    suite: &super::support::TestSuite,
    kind: ServiceKind,
    path: &'static str,
    streaming: bool,
    service: &str,
    on_behalf_of: Option<&str>,
) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(suite.channel(kind));
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(());
    request.metadata_mut().insert(
        "x-service-authorization",
        format!("Bearer {}", suite.service_token(service))
            .parse()
            .expect("ascii"),
    );
    if let Some(user) = on_behalf_of {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {user}").parse().expect("ascii"),
        );
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let result = if streaming {
        grpc.server_streaming(request, path, codec).await.map(drop)
    } else {
        grpc.unary(request, path, codec).await.map(drop)
    };
    result.map_or_else(|status| status.code(), |()| tonic::Code::Ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_internal_rpc_answers_only_the_services_it_names() {
    use tonic::Code;
    let suite = spawn_suite().await;
    // (service, method, streaming, the services it names, what they get for
    // an empty request).
    let table: [(ServiceKind, &'static str, bool, &[&str], Code); 7] = [
        (
            ServiceKind::Auth,
            "/bulkhead.auth.v1.AuthService/RevokeSessions",
            false,
            &["tenant"],
            Code::InvalidArgument,
        ),
        (
            ServiceKind::Auth,
            "/bulkhead.auth.v1.AuthService/WatchRevocations",
            true,
            &["tenant", "task", "audit"],
            Code::Ok,
        ),
        (
            ServiceKind::Tenant,
            "/bulkhead.tenant.v1.TenantService/ListUserMemberships",
            false,
            &["auth"],
            Code::InvalidArgument,
        ),
        (
            ServiceKind::Tenant,
            "/bulkhead.tenant.v1.TenantService/CheckMembership",
            false,
            &["task"],
            Code::InvalidArgument,
        ),
        (
            ServiceKind::Tenant,
            "/bulkhead.tenant.v1.TenantService/ListTenants",
            false,
            &["auth", "task", "audit"],
            Code::Ok,
        ),
        (
            ServiceKind::Task,
            "/bulkhead.task.v1.TaskService/ReleaseAssignments",
            false,
            &["tenant"],
            Code::InvalidArgument,
        ),
        (
            ServiceKind::Audit,
            "/bulkhead.audit.v1.AuditService/AppendEvents",
            false,
            &["auth", "tenant", "task"],
            Code::InvalidArgument,
        ),
    ];
    // The table is every rule that admits services, and none admits any
    // service at all: a method added later cannot escape this test.
    let mut from_policies: Vec<(String, Vec<&'static str>)> = [
        bulkhead_auth::policy(),
        bulkhead_tenant::policy(),
        bulkhead_task::policy(),
        bulkhead_audit::policy(),
    ]
    .iter()
    .flat_map(bulkhead_guard::Policy::service_callers)
    .collect();
    from_policies.sort();
    let mut in_table: Vec<(String, Vec<&'static str>)> = table
        .iter()
        .map(|(_, path, _, named, _)| ((*path).to_owned(), named.to_vec()))
        .collect();
    in_table.sort();
    assert_eq!(
        in_table, from_policies,
        "the matrix lists every service-callable RPC"
    );
    assert!(
        from_policies.iter().all(|(_, named)| !named.is_empty()),
        "no internal RPC is open to any service"
    );
    // CheckMembership answers for the user whose call the service makes.
    let user = suite.operator_token();
    let mut refused = 0;
    for (kind, path, streaming, named, allowed) in table {
        let on_behalf_of = path.ends_with("CheckMembership").then_some(user.as_str());
        for service in ["auth", "tenant", "task", "audit", "billing"] {
            let code = internal_call(&suite, kind, path, streaming, service, on_behalf_of).await;
            let expected = if named.contains(&service) {
                allowed
            } else {
                refused += 1;
                Code::PermissionDenied
            };
            assert_eq!(code, expected, "{path} called by service {service:?}");
        }
    }
    assert!(refused >= 20, "{refused} refusals checked");
}

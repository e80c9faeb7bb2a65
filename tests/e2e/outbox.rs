//! Nothing is lost: with Audit not answering, Tenant, Auth and Task mutations
//! (the catalog's too) still succeed; once Audit serves, every audit event they wrote arrives
//! exactly once, in each writer's commit order per tenant.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_auth::Existing;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::catalog_service_client::CatalogServiceClient;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use bulkhead_testkit::bearer;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::support::spawn_suite_holding;

const PASSWORD: &str = "correct horse battery staple";

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn rows(conn: &mut AsyncPgConnection, sql: &str) -> Vec<(Uuid, Uuid)> {
    diesel::sql_query(sql)
        .load::<Row>(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| (r.tenant_id, r.id))
        .collect()
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_audit_down_mutations_succeed_and_every_event_arrives_once_in_order() {
    let mut suite = spawn_suite_holding(bulkhead_auth::LimitsConfig::default(), &["audit"]).await;
    let mut tenants = TenantServiceClient::new(suite.channel(ServiceKind::Tenant));
    let mut tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    let mut catalog = CatalogServiceClient::new(suite.channel(ServiceKind::Task));
    let mut logins = AuthServiceClient::new(suite.channel(ServiceKind::Auth));

    // Mutations in every writer, in two tenants, while Audit does not answer.
    let auth_db = suite.databases["auth"].app_db(2).await;
    let operator = suite.operator_token();
    for slug in ["acme", "globex"] {
        let email = format!("owner@{slug}.example");
        let owner = bulkhead_auth::bootstrap_admin(&auth_db, &email, PASSWORD, Existing::Verify)
            .await
            .expect("owner")
            .user_id();
        tenants
            .create_tenant(bearer(
                &operator,
                tenant::CreateTenantRequest {
                    slug: slug.into(),
                    name: slug.into(),
                    domain: String::new(),
                    owner_user_id: owner.to_string(),
                },
            ))
            .await
            .expect("tenant created with Audit down");
        let token = logins
            .login(auth::LoginRequest {
                email: email.clone(),
                password: PASSWORD.into(),
                tenant_slug: slug.into(),
            })
            .await
            .expect("login with Audit down")
            .into_inner()
            .tokens
            .expect("tokens")
            .access_token;
        for _ in 0..3 {
            tenants
                .add_member(bearer(
                    &token,
                    tenant::AddMemberRequest {
                        user_id: UserId::new_v7().to_string(),
                        role: tenant::TenantRole::Member.into(),
                    },
                ))
                .await
                .expect("member added with Audit down");
        }
        for n in 0..10 {
            tasks
                .create_task(bearer(
                    &token,
                    task::CreateTaskRequest {
                        title: format!("{slug} task {n}"),
                        ..Default::default()
                    },
                ))
                .await
                .expect("task created with Audit down");
        }
        // The catalog writes through the same outbox, with actions of its own.
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
            .expect("service created with Audit down")
            .into_inner()
            .service
            .expect("service");
        let request = catalog
            .create_service_request(bearer(
                &token,
                task::CreateServiceRequestRequest {
                    service_id: service.id.clone(),
                    details: String::new(),
                },
            ))
            .await
            .expect("service requested")
            .into_inner()
            .service_request
            .expect("request");
        catalog
            .update_service_request(bearer(
                &token,
                task::UpdateServiceRequestRequest {
                    service_request: Some(task::ServiceRequest {
                        id: request.id,
                        status: task::ServiceRequestStatus::Done.into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["status".into()],
                    }),
                },
            ))
            .await
            .expect("request done");
        let booking = catalog
            .create_booking(bearer(
                &token,
                task::CreateBookingRequest {
                    service_id: service.id.clone(),
                    start_time: Some(prost_types::Timestamp {
                        seconds: chrono::Utc::now().timestamp() + 30 * 86_400,
                        nanos: 0,
                    }),
                    end_time: None,
                },
            ))
            .await
            .expect("booked")
            .into_inner()
            .booking
            .expect("booking");
        for confirm in [true, false] {
            let id = booking.id.clone();
            let etag = String::new();
            let done = if confirm {
                catalog
                    .confirm_booking(bearer(
                        &token,
                        task::ConfirmBookingRequest {
                            booking_id: id,
                            etag,
                        },
                    ))
                    .await
                    .map(drop)
            } else {
                catalog
                    .cancel_booking(bearer(
                        &token,
                        task::CancelBookingRequest {
                            booking_id: id,
                            etag,
                        },
                    ))
                    .await
                    .map(drop)
            };
            done.expect("booking confirmed, then cancelled");
        }
        catalog
            .deactivate_service(bearer(
                &token,
                task::DeactivateServiceRequest {
                    service_id: service.id,
                    etag: String::new(),
                },
            ))
            .await
            .expect("service deactivated");
    }

    let writers = ["auth", "tenant", "task"];
    let mut audit_db = suite.databases["audit"].admin_connection().await;
    let mut written: BTreeMap<&str, Vec<(Uuid, Uuid)>> = BTreeMap::new();
    for writer in writers {
        let mut conn = suite.databases[writer].admin_connection().await;
        let messages = rows(
            &mut conn,
            "SELECT tenant_id, id FROM outbox WHERE topic = 'audit' ORDER BY tenant_id, seq",
        )
        .await;
        assert!(!messages.is_empty(), "{writer} wrote audit events");
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM outbox WHERE topic = 'audit' AND delivered_time IS NOT NULL"
            )
            .await,
            0,
            "{writer}: nothing delivered while Audit is down"
        );
        written.insert(writer, messages);
    }
    let total: usize = written.values().map(Vec::len).sum();

    // Audit starts serving on the socket the relays have been calling.
    let _audit = suite.start_held().await;
    let started = Instant::now();
    loop {
        let stored = count(&mut audit_db, "SELECT count(*) AS n FROM events").await;
        if usize::try_from(stored).expect("count") >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{stored} of {total} events arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{total} events arrived {:?} after Audit started",
        started.elapsed()
    );
    // A moment more: a duplicate would show now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = rows(
        &mut audit_db,
        "SELECT tenant_id, id FROM events ORDER BY tenant_id, sequence",
    )
    .await;
    assert_eq!(stored.len(), total, "every event once, none twice");
    let ids: HashSet<Uuid> = stored.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), total);
    for (writer, messages) in &written {
        let mine: HashSet<Uuid> = messages.iter().map(|(_, id)| *id).collect();
        let arrived: Vec<(Uuid, Uuid)> = stored
            .iter()
            .filter(|(_, id)| mine.contains(id))
            .copied()
            .collect();
        assert_eq!(
            &arrived, messages,
            "{writer}'s events in its commit order, per tenant"
        );
    }
}

/// The guard's refusals of known callers reach the caller's own tenant trail:
/// a VIEWER's DeleteTask in Task, another tenant asserted in Tenant, a VIEWER
/// reading the trail in Audit (which appends its own directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_arrive_in_the_callers_tenant_trail() {
    use bulkhead_proto::audit::v1 as audit;
    use bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient;

    let suite = super::support::spawn_suite().await;
    let tenant_id = TenantId::new_v7();
    let user = |role: TenantRole| TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id,
        tenant_slug: "acme".into(),
        tenant_role: role,
        platform_role: PlatformRole::User,
    };
    let (viewer, owner) = (user(TenantRole::Viewer), user(TenantRole::Owner));
    let viewer_token = suite.token(&viewer);
    let denied = TaskServiceClient::new(suite.channel(ServiceKind::Task))
        .delete_task(bearer(
            &viewer_token,
            task::DeleteTaskRequest {
                task_id: Uuid::now_v7().to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a VIEWER may not delete");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let mut mismatched = bearer(&viewer_token, tenant::ListMembersRequest::default());
    mismatched.metadata_mut().insert(
        "x-tenant-id",
        TenantId::new_v7().to_string().parse().expect("ascii"),
    );
    let denied = TenantServiceClient::new(suite.channel(ServiceKind::Tenant))
        .list_members(mismatched)
        .await
        .expect_err("another tenant asserted");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let mut trail = AuditServiceClient::new(suite.channel(ServiceKind::Audit));
    let denied = trail
        .query_events(bearer(&viewer_token, audit::QueryEventsRequest::default()))
        .await
        .expect_err("a VIEWER may not read the trail");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let owner_token = suite.token(&owner);
    let started = Instant::now();
    let events = loop {
        let events = trail
            .query_events(bearer(
                &owner_token,
                audit::QueryEventsRequest {
                    page_size: 10,
                    ..Default::default()
                },
            ))
            .await
            .expect("query")
            .into_inner()
            .events;
        if events.len() >= 3 {
            break events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} security events arrived",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut seen: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e.action.clone(),
                e.source_service.clone(),
                e.resource_id.clone(),
                e.actor_user_id.clone(),
            )
        })
        .collect();
    seen.sort();
    let viewer_id = viewer.user_id.to_string();
    assert_eq!(
        seen,
        vec![
            (
                "security.permission_denied".to_owned(),
                "audit".to_owned(),
                "/bulkhead.audit.v1.AuditService/QueryEvents".to_owned(),
                viewer_id.clone()
            ),
            (
                "security.permission_denied".to_owned(),
                "task".to_owned(),
                "/bulkhead.task.v1.TaskService/DeleteTask".to_owned(),
                viewer_id.clone()
            ),
            (
                "security.tenant_mismatch".to_owned(),
                "tenant".to_owned(),
                "/bulkhead.tenant.v1.TenantService/ListMembers".to_owned(),
                viewer_id
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_grpc_message_reaches_audit_in_pieces() {
    let suite = super::support::spawn_suite().await;
    // 150 events of 40 KB in Task's outbox: 6 MB a batch, over gRPC's 4 MiB.
    let tenant = TenantId::new_v7();
    let mut task_db = suite.databases["task"].admin_connection().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut task_db,
        &format!(
            "INSERT INTO outbox (tenant_id, seq, id, topic, payload)
             SELECT '{tenant}', g, gen_random_uuid(), 'audit', jsonb_build_object(
                      'action', 'task.created', 'tenant_id', '{tenant}', 'resource_type', 'task',
                      'resource_id', g::text, 'occur_time', now(),
                      'new_value', jsonb_build_object('description', repeat('x', 40000)))
               FROM generate_series(1, 150) g;"
        ),
    )
    .await
    .expect("seed");
    let mut audit_db = suite.databases["audit"].admin_connection().await;
    let started = Instant::now();
    loop {
        let arrived = count(
            &mut audit_db,
            &format!("SELECT count(*) AS n FROM events WHERE tenant_id = '{tenant}'"),
        )
        .await;
        if arrived == 150 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{arrived} of 150 large events arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = count(
        &mut task_db,
        "SELECT count(*) AS n FROM outbox WHERE attempts > 0 OR dead_time IS NOT NULL",
    )
    .await;
    assert_eq!(failed, 0, "no delivery failed on the way");

    // The sink itself, handed such a batch: one call that succeeds (sent
    // whole, Audit would refuse it as too large).
    let sink = bulkhead_clients::AuditSink::new(
        suite.channel(ServiceKind::Audit),
        (suite.credentials)("task"),
        "task",
    );
    let messages: Vec<bulkhead_outbox::Message> = (1..=150)
        .map(|seq| bulkhead_outbox::Message {
            tenant_id: tenant,
            seq: 1000 + seq,
            id: Uuid::now_v7(),
            topic: "audit".into(),
            payload: serde_json::json!({
                "action": "task.updated", "resource_type": "task", "resource_id": seq.to_string(),
                "occur_time": "2026-12-03T00:00:00Z",
                "new_value": { "description": "y".repeat(40_000) },
            }),
            create_time: chrono::Utc::now(),
            traceparent: None,
        })
        .collect();
    bulkhead_outbox::Sink::deliver(&sink, &messages)
        .await
        .expect("a 6 MB batch is delivered in pieces");
    assert_eq!(
        count(
            &mut audit_db,
            &format!("SELECT count(*) AS n FROM events WHERE tenant_id = '{tenant}'"),
        )
        .await,
        300
    );
}

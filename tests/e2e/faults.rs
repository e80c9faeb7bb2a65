//! Faults (issue #13, item 4): a hung dependency costs a caller its own
//! deadline, or a bounded wait when it set none, never a hang; and a call
//! that failed so wrote nothing.
//!
//! Task checks an assignee with Tenant on every assignment. Here a Task
//! replica reaches Tenant through a proxy that holds every reply for 30 s.

use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use bulkhead_testkit::bearer;
use tonic::Code;

use super::support::{spawn_suite, start_replicas_wired};

const PASSWORD: &str = "a long enough password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_tenant_costs_a_task_caller_its_deadline_or_a_bounded_wait() {
    let suite = spawn_suite().await;
    let operator = suite.operator_token();
    let mut users = Vec::new();
    for email in ["owner@hung.example", "member@hung.example"] {
        users.push(
            AuthServiceClient::new(suite.channel(ServiceKind::Auth))
                .create_user(bearer(
                    &operator,
                    auth::CreateUserRequest {
                        email: email.into(),
                        password: PASSWORD.into(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("user")
                .into_inner()
                .user
                .expect("user")
                .id,
        );
    }
    let mut tenants = TenantServiceClient::new(suite.channel(ServiceKind::Tenant));
    tenants
        .create_tenant(bearer(
            &operator,
            tenant::CreateTenantRequest {
                slug: "hung".into(),
                name: "Hung".into(),
                domain: String::new(),
                owner_user_id: users[0].clone(),
            },
        ))
        .await
        .expect("tenant");
    let owner = AuthServiceClient::new(suite.channel(ServiceKind::Auth))
        .login(auth::LoginRequest {
            email: "owner@hung.example".into(),
            password: PASSWORD.into(),
            tenant_slug: String::new(),
        })
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token;
    tenants
        .add_member(bearer(
            &owner,
            tenant::AddMemberRequest {
                user_id: users[1].clone(),
                role: tenant::TenantRole::Member.into(),
            },
        ))
        .await
        .expect("member");

    // A Task replica that reaches Tenant through a proxy.
    let proxy = bulkhead_testkit::proxy::TcpProxy::start(suite.addr(ServiceKind::Tenant)).await;
    let through_proxy = format!("http://{}", proxy.addr());
    let replica = start_replicas_wired(
        &suite,
        &[ServiceKind::Task],
        &[],
        suite.channel(ServiceKind::Auth),
        bulkhead_clients::REVOCATION_FEED_BOUND,
        &move |peers| peers.tenant = Some(through_proxy.clone()),
    )
    .await;
    let mut tasks = TaskServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            replica.addr(ServiceKind::Task).expect("replica")
        ))
        .expect("endpoint")
        .connect_lazy(),
    );
    let assign = |title: &str, timeout: Option<Duration>| {
        let mut request = bearer(
            &owner,
            task::CreateTaskRequest {
                title: title.into(),
                assignee_user_id: users[1].clone(),
                ..Default::default()
            },
        );
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    };
    tasks
        .create_task(assign("assigned while Tenant answers", None))
        .await
        .expect("through the proxy, unheld, assigning works");

    proxy.delay_replies(Duration::from_secs(30));
    // The caller's deadline: over when it is, not 30 s later.
    let started = Instant::now();
    let status = tasks
        .create_task(assign("with a deadline", Some(Duration::from_secs(1))))
        .await
        .expect_err("Tenant holds its answer");
    let took = started.elapsed();
    // (tonic's client reports its own deadline as CANCELLED "Timeout expired".)
    assert!(
        matches!(
            status.code(),
            Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
        ),
        "{status:?}"
    );
    assert!(took < Duration::from_millis(1_800), "{took:?}");
    // No deadline: Task bounds its own wait (5 s) and says Tenant is out of reach.
    let started = Instant::now();
    let status = tasks
        .create_task(assign("without a deadline", None))
        .await
        .expect_err("Tenant holds its answer");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        took >= Duration::from_millis(4_500) && took < Duration::from_secs(8),
        "bounded by the cap, not by Tenant: {took:?}"
    );

    // What failed wrote nothing; once Tenant answers again, assigning works.
    proxy.delay_replies(Duration::ZERO);
    let listed = TaskServiceClient::new(suite.channel(ServiceKind::Task))
        .list_tasks(bearer(&owner, task::ListTasksRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .tasks;
    let titles: Vec<&str> = listed.iter().map(|t| t.title.as_str()).collect();
    assert_eq!(titles, ["assigned while Tenant answers"]);
    replica.stop().await;
}

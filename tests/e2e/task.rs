//! Task with the rest of the suite on real sockets: an assignee checked live
//! with Tenant through the caller's own token, and a member who leaves a tenant
//! unassigned from its open tasks through Tenant's outbox.

use bulkhead_testkit::bearer;
use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;

use super::support::spawn_suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_is_unassigned_from_open_tasks_within_two_seconds() {
    member_leaves(&spawn_suite().await).await;
}

/// A member assigned two tasks (checked live with Tenant) leaves; the open one
/// is released through Tenant's outbox, the finished one keeps its assignee.
/// Returns the owner's token.
pub async fn member_leaves(suite: &super::support::TestSuite) -> String {
    let mut tenants = TenantServiceClient::new(suite.channel(ServiceKind::Tenant));
    let mut tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    let as_user = |user: UserId, tenant: &tenant::Tenant, role: TenantRole| TenantUser {
        user_id: user,
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::parse(&tenant.id).expect("id"),
        tenant_slug: tenant.slug.clone(),
        tenant_role: role,
        platform_role: PlatformRole::User,
    };
    let operator = suite.operator_token();
    let (owner, worker) = (UserId::new_v7(), UserId::new_v7());
    let acme = tenants
        .create_tenant(bearer(
            &operator,
            tenant::CreateTenantRequest {
                slug: "acme".into(),
                name: "Acme".into(),
                domain: String::new(),
                owner_user_id: owner.to_string(),
            },
        ))
        .await
        .expect("tenant")
        .into_inner()
        .tenant
        .expect("tenant");
    let owner_token = suite.token(&as_user(owner, &acme, TenantRole::Owner));
    tenants
        .add_member(bearer(
            &owner_token,
            tenant::AddMemberRequest {
                user_id: worker.to_string(),
                role: tenant::TenantRole::Member.into(),
            },
        ))
        .await
        .expect("member");
    let create = |title: &str| {
        bearer(
            &owner_token,
            task::CreateTaskRequest {
                title: title.into(),
                assignee_user_id: worker.to_string(),
                ..Default::default()
            },
        )
    };
    let open = tasks
        .create_task(create("open"))
        .await
        .expect("assigned")
        .into_inner()
        .task
        .expect("task");
    let done = tasks
        .create_task(create("done"))
        .await
        .expect("assigned")
        .into_inner()
        .task
        .expect("task");
    tasks
        .bulk_update_task_status(bearer(
            &owner_token,
            task::BulkUpdateTaskStatusRequest {
                task_ids: vec![done.id.clone()],
                status: task::TaskStatus::Completed.into(),
            },
        ))
        .await
        .expect("completed");

    tenants
        .remove_member(bearer(
            &owner_token,
            tenant::RemoveMemberRequest {
                user_id: worker.to_string(),
            },
        ))
        .await
        .expect("removed");
    let get = |id: &str| bearer(&owner_token, task::GetTaskRequest { task_id: id.into() });
    let started = Instant::now();
    loop {
        let now = tasks
            .get_task(get(&open.id))
            .await
            .expect("get")
            .into_inner()
            .task
            .expect("task");
        if now.assignee_user_id.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the open task is still assigned to a former member"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = tasks
        .get_task(get(&done.id))
        .await
        .expect("get")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(
        done.assignee_user_id,
        worker.to_string(),
        "a finished task keeps who did it"
    );
    // And they can no longer be assigned.
    let refused = tasks
        .create_task(create("again"))
        .await
        .expect_err("not a member");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    owner_token
}

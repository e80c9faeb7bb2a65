//! `spawn_service()`: Task and the Tenant service it checks assignees with, each
//! started as `up` and `serve` start them (their modules, the RLS check, the
//! real guard) on port-0 sockets and fresh databases; tokens minted with a test
//! key.

use std::sync::Arc;

use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::VerifierConfig;
use bulkhead_postgres::testing::{TestDatabase, test_database};
use bulkhead_proto::task::v1 as pb;
use bulkhead_proto::task::v1::catalog_service_client::CatalogServiceClient;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use bulkhead_server::Peers;
use bulkhead_task::TaskModule;
use bulkhead_tenant::TenantModule;
use bulkhead_testkit::{Tokens, start_module};
use diesel_async::RunQueryDsl as _;
use tonic::Request;
use tonic::transport::Channel;

pub use bulkhead_testkit::{Caller, assert_code, mask, violated_fields};

pub struct Harness {
    pub tasks: TaskServiceClient<Channel>,
    pub catalog: CatalogServiceClient<Channel>,
    pub tenants: TenantServiceClient<Channel>,
    pub tokens: Tokens,
    pub database: TestDatabase,
}

/// Task (with the SUPER_ADMIN bypass as given) beside a Tenant service; with
/// `tenant_reachable` false, Task is pointed at an address nothing listens on.
pub async fn spawn_with(bypass: bool, tenant_reachable: bool) -> Harness {
    // Internal calls (ReleaseAssignments) come from Tenant.
    let tokens = Tokens::new("tenant");
    let guard = tokens.guard();
    let tenant_db = test_database(&bulkhead_tenant::SCHEMA).await;
    let task_db = test_database(&bulkhead_task::SCHEMA).await;
    let tenant_url = start_module(&TenantModule, &tenant_db, &guard, Peers::default(), None).await;
    let credentials = Arc::new(bulkhead_clients::LocalServiceTokens::new(
        tokens.key.clone(),
        "task",
        VerifierConfig::default(),
    ));
    let task_url = start_module(
        &TaskModule::new(bypass),
        &task_db,
        &guard,
        Peers {
            tenant: Some(if tenant_reachable {
                tenant_url.clone()
            } else {
                "http://127.0.0.1:9".into()
            }),
            ..Peers::default()
        },
        Some(credentials),
    )
    .await;
    Harness {
        tasks: TaskServiceClient::new(bulkhead_testkit::channel(&task_url)),
        catalog: CatalogServiceClient::new(bulkhead_testkit::channel(&task_url)),
        tenants: TenantServiceClient::new(bulkhead_testkit::channel(&tenant_url)),
        tokens,
        database: task_db,
    }
}

pub async fn spawn_service() -> Harness {
    spawn_with(false, true).await
}

/// A tenant with its owner and a caller per role.
#[derive(Debug, Clone)]
pub struct Org {
    pub tenant: tenant::Tenant,
    pub owner: Caller,
    pub admin: Caller,
    pub member: Caller,
    pub viewer: Caller,
}

pub fn acting(tenant: &tenant::Tenant, user: UserId, role: TenantRole) -> Caller {
    Caller::User(TenantUser {
        user_id: user,
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::parse(&tenant.id).expect("tenant id"),
        tenant_slug: tenant.slug.clone(),
        tenant_role: role,
        platform_role: PlatformRole::User,
    })
}

pub fn super_admin_in(org: &Org) -> Caller {
    let mut user = org.viewer.user().clone();
    user.user_id = UserId::new_v7();
    user.platform_role = PlatformRole::SuperAdmin;
    Caller::User(user)
}

impl Harness {
    pub fn request<T>(&self, caller: &Caller, message: T) -> Request<T> {
        self.tokens.request(caller, message)
    }

    /// A tenant (made by a SUPER_ADMIN through Tenant) with an owner, and an
    /// admin, a member and a viewer added by the owner.
    pub async fn org(&self, slug: &str) -> Org {
        let operator = Caller::User(TenantUser {
            user_id: UserId::new_v7(),
            session_id: SessionId::new_v7(),
            tenant_id: TenantId::new_v7(),
            tenant_slug: "ops".into(),
            tenant_role: TenantRole::Viewer,
            platform_role: PlatformRole::SuperAdmin,
        });
        let owner_id = UserId::new_v7();
        let tenant = self
            .tenants
            .clone()
            .create_tenant(self.request(
                &operator,
                tenant::CreateTenantRequest {
                    slug: slug.into(),
                    name: slug.into(),
                    domain: String::new(),
                    owner_user_id: owner_id.to_string(),
                },
            ))
            .await
            .expect("tenant")
            .into_inner()
            .tenant
            .expect("tenant");
        let owner = acting(&tenant, owner_id, TenantRole::Owner);
        let mut added = Vec::new();
        for role in [TenantRole::Admin, TenantRole::Member, TenantRole::Viewer] {
            let id = UserId::new_v7();
            self.tenants
                .clone()
                .add_member(self.request(
                    &owner,
                    tenant::AddMemberRequest {
                        user_id: id.to_string(),
                        role: tenant::TenantRole::from(role).into(),
                    },
                ))
                .await
                .expect("member");
            added.push(acting(&tenant, id, role));
        }
        let [admin, member, viewer]: [Caller; 3] = added.try_into().expect("three");
        Org {
            tenant,
            owner,
            admin,
            member,
            viewer,
        }
    }

    /// A task created by `caller` with `title`.
    pub async fn task(&self, caller: &Caller, title: &str) -> pb::Task {
        self.tasks
            .clone()
            .create_task(self.request(
                caller,
                pb::CreateTaskRequest {
                    title: title.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("create task")
            .into_inner()
            .task
            .expect("task")
    }

    /// A number read as the superuser (bypassing row-level security).
    pub async fn scalar(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.database.admin_connection().await;
        diesel::sql_query(sql)
            .get_result::<N>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .n
    }

    /// Audit events in the outbox with this action.
    pub async fn events(&self, action: &str) -> i64 {
        self.scalar(&format!(
            "SELECT count(*) AS n FROM outbox WHERE topic = 'audit' AND payload->>'action' = '{action}'"
        ))
        .await
    }

    /// Each query shape, as the app role in `tenant`'s scope (`$T`; `$U` is
    /// `user`), is planned with an index and no sequential scan.
    pub async fn assert_indexed(&self, tenant: uuid::Uuid, user: uuid::Uuid, shapes: &[&str]) {
        use diesel_async::SimpleAsyncConnection as _;
        #[derive(diesel::QueryableByName)]
        struct Plan {
            #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
            line: String,
        }
        let mut app = self.database.app_connection().await;
        for shape in shapes {
            let sql = shape
                .replace("$T", &format!("'{tenant}'"))
                .replace("$U", &format!("'{user}'"));
            app.batch_execute(&format!("BEGIN; SET LOCAL app.tenant_id = '{tenant}'"))
                .await
                .expect("scope");
            let plan: Vec<Plan> = diesel::sql_query(format!("EXPLAIN {sql}"))
                .load(&mut app)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            app.batch_execute("COMMIT").await.expect("commit");
            let plan: String = plan.into_iter().map(|p| p.line + "\n").collect();
            assert!(plan.contains("Index"), "{sql}\n{plan}");
            assert!(!plan.contains("Seq Scan"), "{sql}\n{plan}");
        }
    }
}

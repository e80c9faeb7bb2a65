//! `spawn_service()`: the Tenant service started as `up` and `serve` start it
//! (its module, the RLS check, the real guard) on a port-0 socket and a fresh
//! database; tokens minted with a test key.

use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_postgres::testing::{TestDatabase, test_database};
use bulkhead_proto::tenant::v1 as pb;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use bulkhead_server::Peers;
use bulkhead_tenant::{SCHEMA, TenantModule};
use bulkhead_testkit::{Tokens, start_module};
use tonic::transport::Channel;
use tonic::{Request, Status};

pub use bulkhead_testkit::Caller;

pub struct Harness {
    pub client: TenantServiceClient<Channel>,
    pub tokens: Tokens,
    pub database: TestDatabase,
}

pub async fn spawn_service() -> Harness {
    let database = test_database(&SCHEMA).await;
    // Internal calls come from Task (CheckMembership forwards a user).
    let tokens = Tokens::new("task");
    let url = start_module(
        &TenantModule,
        &database,
        &tokens.guard(),
        Peers::default(),
        None,
    )
    .await;
    Harness {
        client: TenantServiceClient::new(bulkhead_testkit::channel(&url)),
        tokens,
        database,
    }
}

pub fn user_in(tenant: &pb::Tenant, user: UserId, role: TenantRole) -> Caller {
    Caller::User(TenantUser {
        user_id: user,
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::parse(&tenant.id).expect("tenant id"),
        tenant_slug: tenant.slug.clone(),
        tenant_role: role,
        platform_role: PlatformRole::User,
    })
}

pub fn super_admin() -> Caller {
    Caller::User(TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::new_v7(),
        tenant_slug: "platform".into(),
        // A SUPER_ADMIN is a plain VIEWER of the tenant their token is for: the
        // platform role, not a tenant role, is what lets them through.
        tenant_role: TenantRole::Viewer,
        platform_role: PlatformRole::SuperAdmin,
    })
}

impl Harness {
    pub fn request<T>(&self, caller: &Caller, message: T) -> Request<T> {
        self.tokens.request(caller, message)
    }

    /// `message` as Auth's service token sends it (ListUserMemberships is
    /// Auth's alone).
    pub fn as_auth<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "x-service-authorization",
            format!("Bearer {}", self.tokens.service_named("auth"))
                .parse()
                .expect("ascii"),
        );
        request
    }

    /// A new tenant (by a SUPER_ADMIN) owned by a new user; returns it and its owner.
    pub async fn tenant(&self, slug: &str) -> (pb::Tenant, Caller) {
        let owner = UserId::new_v7();
        let response = self
            .client
            .clone()
            .create_tenant(self.request(
                &super_admin(),
                pb::CreateTenantRequest {
                    slug: slug.into(),
                    name: format!("{slug} inc"),
                    domain: String::new(),
                    owner_user_id: owner.to_string(),
                },
            ))
            .await
            .expect("create tenant")
            .into_inner();
        let tenant = response.tenant.expect("tenant");
        let caller = user_in(&tenant, owner, TenantRole::Owner);
        (tenant, caller)
    }

    /// Adds a member with `role` (as `by`) and returns a caller for them.
    pub async fn member(&self, tenant: &pb::Tenant, by: &Caller, role: TenantRole) -> Caller {
        let user = UserId::new_v7();
        self.client
            .clone()
            .add_member(self.request(
                by,
                pb::AddMemberRequest {
                    user_id: user.to_string(),
                    role: proto_role(role).into(),
                },
            ))
            .await
            .expect("add member");
        user_in(tenant, user, role)
    }

    /// Outbox messages of `topic` for `tenant`, read as the database owner: the
    /// handlers' own (the guard's security events arrive on their own time).
    pub async fn outbox(&self, tenant: &str, topic: &str) -> Vec<serde_json::Value> {
        use diesel_async::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Jsonb)]
            payload: serde_json::Value,
        }
        let mut conn = self.database.admin_connection().await;
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT payload FROM outbox WHERE tenant_id = $1::uuid AND topic = $2
               AND coalesce(payload->>'action', '') NOT LIKE 'security.%' ORDER BY seq",
        )
        .bind::<diesel::sql_types::Text, _>(tenant)
        .bind::<diesel::sql_types::Text, _>(topic)
        .load(&mut conn)
        .await
        .expect("outbox");
        rows.into_iter().map(|r| r.payload).collect()
    }
}

pub fn proto_role(role: TenantRole) -> pb::TenantRole {
    role.into()
}

pub use bulkhead_testkit::assert_code;

/// The fields named in the BadRequest details of an INVALID_ARGUMENT, sorted
/// (Tenant's tests name them alphabetically).
pub fn violated_fields<T: std::fmt::Debug>(result: Result<T, Status>) -> Vec<String> {
    let mut fields = bulkhead_testkit::violated_fields(result);
    fields.sort();
    fields
}

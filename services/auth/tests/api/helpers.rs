//! `spawn_service()`: Auth and the Tenant service it reads memberships from,
//! each started as `up` and `serve` start them (their modules, the RLS check,
//! the real guard) on port-0 sockets and fresh databases; tokens minted with a
//! test key, which is also Auth's signing key.

use std::sync::Arc;

use bulkhead_auth::{AuthConfig, AuthModule, Existing, LimitsConfig, ServiceClient};
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::VerifierConfig;
use bulkhead_guard::token::KeyRing;
use bulkhead_postgres::testing::{TestDatabase, test_database};
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use bulkhead_server::Peers;
use bulkhead_tenant::TenantModule;
use bulkhead_testkit::{Tokens, start_module};
use tonic::Request;
use tonic::transport::Channel;

pub const PASSWORD: &str = "a long enough password";
pub const CLIENT_SECRET: &str = "task-secret-for-these-tests";

pub struct Harness {
    pub auth: AuthServiceClient<Channel>,
    pub tenants: TenantServiceClient<Channel>,
    pub tokens: Tokens,
    pub database: TestDatabase,
    pub db: bulkhead_db::Db,
}

pub async fn spawn_service() -> Harness {
    // Internal calls (RevokeSessions, WatchRevocations) come from Tenant.
    let tokens = Tokens::new("tenant");
    let guard = tokens.guard();
    let tenant_db = test_database(&bulkhead_tenant::SCHEMA).await;
    let auth_db = test_database(&bulkhead_auth::SCHEMA).await;
    let tenant_url = start_module(&TenantModule, &tenant_db, &guard, Peers::default(), None).await;
    let auth = AuthModule::new(
        Some(Arc::new(std::sync::RwLock::new(Arc::new(KeyRing::single(
            tokens.key.clone(),
        ))))),
        AuthConfig {
            service_clients: vec![ServiceClient {
                client_id: "task".into(),
                secret: CLIENT_SECRET.into(),
                scopes: Vec::new(),
            }],
            // The matrix logs in many times: the limits have their own tests.
            login_limits: LimitsConfig {
                per_peer_per_minute: 100_000,
                sessions_per_user_per_minute: 100_000,
                live_sessions_per_user: bulkhead_auth::LimitsConfig::default()
                    .live_sessions_per_user,
                throttle: bulkhead_auth::ThrottleConfig {
                    free_failures: 1_000_000,
                    account_failures_per_hour: 1_000_000,
                    network_failures_per_hour: 1_000_000,
                    ..bulkhead_auth::ThrottleConfig::default()
                },
            },
            ..AuthConfig::default()
        },
    );
    let credentials = Arc::new(bulkhead_clients::LocalServiceTokens::new(
        tokens.key.clone(),
        "auth",
        VerifierConfig::default(),
    ));
    let auth_url = start_module(
        &auth,
        &auth_db,
        &guard,
        Peers {
            tenant: Some(tenant_url.clone()),
            ..Peers::default()
        },
        Some(credentials),
    )
    .await;
    Harness {
        auth: AuthServiceClient::new(bulkhead_testkit::channel(&auth_url)),
        tenants: TenantServiceClient::new(bulkhead_testkit::channel(&tenant_url)),
        tokens,
        db: auth_db.app_db(2).await,
        database: auth_db,
    }
}

pub use bulkhead_testkit::{Caller, assert_code, violated_fields};

impl Harness {
    pub fn request<T>(&self, caller: &Caller, message: T) -> Request<T> {
        self.tokens.request(caller, message)
    }

    /// Stores a live session for `caller`'s token (tests mint tokens
    /// without logging in; SwitchTenant reads the session it comes from).
    pub async fn store_session(&self, caller: &Caller) {
        use diesel_async::RunQueryDsl as _;
        let Caller::User(user) = caller else {
            return;
        };
        let mut conn = self.database.admin_connection().await;
        diesel::sql_query(
            "INSERT INTO sessions (id, user_id, tenant_id, refresh_hash, refresh_expires_at,
                                   access_expires_at)
             VALUES ($1, $2, $3, sha256(gen_random_uuid()::text::bytea), now() + interval '1 day',
                     now() + interval '15 minutes')",
        )
        .bind::<diesel::sql_types::Uuid, _>(*user.session_id.as_uuid())
        .bind::<diesel::sql_types::Uuid, _>(*user.user_id.as_uuid())
        .bind::<diesel::sql_types::Uuid, _>(*user.tenant_id.as_uuid())
        .execute(&mut conn)
        .await
        .expect("a session for the caller");
    }

    /// [`Self::root`] with its session stored, and its user.
    pub async fn root_in_a_stored_session(&self) -> (Caller, TenantUser) {
        let root = self.root().await;
        self.store_session(&root).await;
        let Caller::User(user) = &root else {
            unreachable!("root is a user")
        };
        let user = user.clone();
        (root, user)
    }

    /// A user in Auth (made on the platform path, password [`PASSWORD`]).
    pub async fn user(&self, email: &str) -> UserId {
        bulkhead_auth::bootstrap_admin(&self.db, email, PASSWORD, Existing::Verify)
            .await
            .expect("user")
            .user_id()
    }

    /// `root@example.com`, a SUPER_ADMIN (password [`PASSWORD`]) owning tenant
    /// `rootland`, as a caller.
    pub async fn root(&self) -> Caller {
        let root = self.user("root@example.com").await;
        let rootland = self.tenant("rootland", root).await;
        Caller::User(acting(
            root,
            &rootland,
            TenantRole::Owner,
            PlatformRole::SuperAdmin,
        ))
    }

    /// A tenant owned by `owner`, made by a SUPER_ADMIN through Tenant.
    pub async fn tenant(&self, slug: &str, owner: UserId) -> tenant::Tenant {
        let operator = Caller::User(TenantUser {
            user_id: UserId::new_v7(),
            session_id: SessionId::new_v7(),
            tenant_id: TenantId::new_v7(),
            tenant_slug: "ops".into(),
            tenant_role: TenantRole::Viewer,
            platform_role: PlatformRole::SuperAdmin,
        });
        self.tenants
            .clone()
            .create_tenant(self.request(
                &operator,
                tenant::CreateTenantRequest {
                    slug: slug.into(),
                    name: slug.into(),
                    domain: String::new(),
                    owner_user_id: owner.to_string(),
                },
            ))
            .await
            .expect("tenant")
            .into_inner()
            .tenant
            .expect("tenant")
    }

    /// Adds `user` to the tenant of `owner` with `role`.
    pub async fn add_member(&self, owner: &Caller, user: UserId, role: TenantRole) {
        self.tenants
            .clone()
            .add_member(self.request(
                owner,
                tenant::AddMemberRequest {
                    user_id: user.to_string(),
                    role: tenant::TenantRole::from(role).into(),
                },
            ))
            .await
            .expect("member");
    }

    /// Rows of a table in Auth's database, read as the superuser.
    pub async fn count(&self, table: &str) -> i64 {
        use diesel_async::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.database.admin_connection().await;
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(&mut conn)
            .await
            .expect("count")
            .n
    }
}

/// A user acting in `tenant` with `role`.
pub fn acting(
    user: UserId,
    tenant: &tenant::Tenant,
    role: TenantRole,
    platform: PlatformRole,
) -> TenantUser {
    TenantUser {
        user_id: user,
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::parse(&tenant.id).expect("tenant id"),
        tenant_slug: tenant.slug.clone(),
        tenant_role: role,
        platform_role: platform,
    }
}

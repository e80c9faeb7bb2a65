//! Helpers for end-to-end tests and benchmarks: the whole suite, in process, on
//! port-0 sockets, each service on its own fresh database of a private Postgres.

use std::net::SocketAddr;
use std::time::Duration;

use bulkhead::services::ServiceKind;
use bulkhead::suite::{Launch, Suite};
use bulkhead_guard::VerifierConfig;
use bulkhead_guard::token::{Claims, SigningKey};
use bulkhead_postgres::testing::test_database;
use bulkhead_server::{DbUrls, Peers, SharedGuard};

/// The client secret the suite's Auth accepts for service `task`.
pub const TASK_CLIENT_SECRET: &str = "task-secret-for-tests-only";

/// The running suite and the key its tokens are signed with.
pub struct TestSuite {
    /// The four services.
    pub suite: Suite,
    /// Auth's signing key (tests also mint tokens with it).
    pub key: std::sync::Arc<SigningKey>,
    /// Each service's database, by service name.
    pub databases:
        std::collections::BTreeMap<&'static str, bulkhead_postgres::testing::TestDatabase>,
    /// Services bound to their sockets but not serving yet (see [`spawn_suite_holding`]).
    held: Vec<Launch>,
    guard: SharedGuard,
    peers: Peers,
    pub credentials: bulkhead_server::CredentialsFactory,
}

impl std::fmt::Debug for TestSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSuite")
            .field("suite", &self.suite)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl TestSuite {
    /// Where `kind` listens.
    ///
    /// # Panics
    /// Never: every kind is started or held.
    #[must_use]
    pub fn addr(&self, kind: ServiceKind) -> SocketAddr {
        self.suite
            .addrs
            .get(kind.name())
            .copied()
            .unwrap_or_else(|| {
                self.held
                    .iter()
                    .find(|l| l.module.name() == kind.name())
                    .and_then(|l| l.listener.local_addr().ok())
                    .expect("every kind is started or held")
            })
    }

    /// Starts the services held back: they begin serving on the sockets the
    /// others have been calling all along (their calls waited in the backlog).
    ///
    /// # Panics
    /// When one cannot start.
    pub async fn start_held(&mut self) -> Suite {
        Suite::start(
            std::mem::take(&mut self.held),
            &self.guard,
            &self.peers,
            Some(&self.credentials),
        )
        .await
        .expect("the held services start")
    }

    /// `http://addr` of `kind`, for tonic clients.
    #[must_use]
    pub fn endpoint(&self, kind: ServiceKind) -> String {
        format!("http://{}", self.addr(kind))
    }

    /// A lazily connected channel to `kind`.
    #[must_use]
    pub fn channel(&self, kind: ServiceKind) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.endpoint(kind))
            .expect("endpoint")
            .connect_lazy()
    }

    /// An access token of a SUPER_ADMIN (an operator of no tenant of the test).
    #[must_use]
    pub fn operator_token(&self) -> String {
        self.token(&bulkhead_context::TenantUser {
            user_id: bulkhead_context::UserId::new_v7(),
            session_id: bulkhead_context::SessionId::new_v7(),
            tenant_id: bulkhead_context::TenantId::new_v7(),
            tenant_slug: "ops".into(),
            tenant_role: bulkhead_context::TenantRole::Viewer,
            platform_role: bulkhead_context::PlatformRole::SuperAdmin,
        })
    }

    /// A signed access token for `user`.
    ///
    /// # Panics
    /// When signing fails.
    #[must_use]
    pub fn token(&self, user: &bulkhead_context::TenantUser) -> String {
        let config = VerifierConfig::default();
        let claims = Claims::access(
            &config.issuer,
            &config.audience,
            user,
            Duration::from_secs(900),
        );
        self.key.sign(&claims).expect("signing")
    }

    /// A signed service token naming `service` (as Auth mints for a client).
    ///
    /// # Panics
    /// When signing fails.
    #[must_use]
    pub fn service_token(&self, service: &str) -> String {
        let config = VerifierConfig::default();
        let claims = Claims::service(
            &config.issuer,
            &config.audience,
            &bulkhead_context::ServiceIdentity {
                name: service.into(),
                scopes: vec![],
            },
            Duration::from_secs(900),
        );
        self.key.sign(&claims).expect("signing")
    }
}

/// Starts all four services on fresh databases.
///
/// # Panics
/// When Postgres cannot be had or a service cannot start.
pub async fn spawn_suite() -> TestSuite {
    spawn_suite_with(bulkhead_auth::LimitsConfig::default()).await
}

/// Starts all four services, with Auth's login limits as given (benchmarks raise them).
///
/// # Panics
/// When Postgres cannot be had or a service cannot start.
pub async fn spawn_suite_with(login_limits: bulkhead_auth::LimitsConfig) -> TestSuite {
    spawn_suite_holding(login_limits, &[]).await
}

/// Starts the services, except those named in `held`: their sockets are bound
/// (calls to them wait) until [`TestSuite::start_held`].
///
/// # Panics
/// When Postgres cannot be had or a service cannot start.
pub async fn spawn_suite_holding(
    login_limits: bulkhead_auth::LimitsConfig,
    held: &[&str],
) -> TestSuite {
    spawn_suite_connecting(login_limits, held, &|database| {
        DbUrls::new(database.app_url.clone(), database.platform_url.clone())
    })
    .await
}

/// As [`spawn_suite_holding`], each service connecting to its database as
/// `urls` says (e.g. through a pooler).
///
/// # Panics
/// As [`spawn_suite_holding`].
pub async fn spawn_suite_connecting(
    login_limits: bulkhead_auth::LimitsConfig,
    held: &[&str],
    urls: &dyn Fn(&bulkhead_postgres::testing::TestDatabase) -> DbUrls,
) -> TestSuite {
    let key = std::sync::Arc::new(SigningKey::generate());
    let guard = SharedGuard::new(bulkhead::keys::verifier_for(
        &key,
        VerifierConfig::default(),
    ));
    let auth = auth_module(&key, login_limits);
    let mut launches = Vec::new();
    let mut databases = std::collections::BTreeMap::new();
    let settings = bulkhead::services::Settings {
        auth,
        task: bulkhead_task::TaskModule::default(),
        audit: bulkhead_audit::AuditModule::default(),
    };
    for module in bulkhead::services::modules(settings) {
        let database = test_database(module.schema()).await;
        databases.insert(module.name(), database.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a port");
        launches.push(Launch {
            module,
            urls: urls(&database),
            listener,
        });
    }
    let addr = |name: &str| {
        launches
            .iter()
            .find(|l| l.module.name() == name)
            .map(|l| format!("http://{}", l.listener.local_addr().expect("addr")))
    };
    let peers = Peers {
        auth: addr("auth"),
        tenant: addr("tenant"),
        task: addr("task"),
        audit: addr("audit"),
        relay: fast_relay(),
    };
    let credentials = bulkhead::services::local_credentials(key.clone(), VerifierConfig::default());
    let (held, launches): (Vec<Launch>, Vec<Launch>) = launches
        .into_iter()
        .partition(|l| held.contains(&l.module.name()));
    let suite = Suite::start(launches, &guard, &peers, Some(&credentials))
        .await
        .expect("the suite starts");
    TestSuite {
        suite,
        key,
        databases,
        held,
        guard,
        peers,
        credentials,
    }
}

/// Auth signing with `key`, with the suite's service client and `login_limits`.
fn auth_module(
    key: &std::sync::Arc<SigningKey>,
    login_limits: bulkhead_auth::LimitsConfig,
) -> bulkhead_auth::AuthModule {
    bulkhead_auth::AuthModule::new(
        Some(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(bulkhead_guard::token::KeyRing::single(key.clone())),
        ))),
        bulkhead_auth::AuthConfig {
            service_clients: vec![bulkhead_auth::ServiceClient {
                client_id: "task".into(),
                secret: TASK_CLIENT_SECRET.into(),
                scopes: vec!["tenant.read".into()],
            }],
            login_limits,
            ..bulkhead_auth::AuthConfig::default()
        },
    )
}

/// A second replica of the services named in `kinds`, in this process but
/// wired as a separately deployed one is: on the same databases, on ports of
/// their own, with a guard of its own that follows Auth's revocations and
/// Tenant's deactivations (as `serve` does), calling the first replicas'
/// peers.
/// Stops with the returned sender.
///
/// # Panics
/// When a replica cannot start.
#[cfg(feature = "scale-out")]
pub async fn start_replicas(
    first: &TestSuite,
    kinds: &[ServiceKind],
) -> (Suite, SharedGuard, tokio::sync::watch::Sender<bool>) {
    let guard = SharedGuard::new(bulkhead::keys::verifier_for(
        &first.key,
        VerifierConfig::default(),
    ));
    let settings = bulkhead::services::Settings {
        auth: auth_module(&first.key, bulkhead_auth::LimitsConfig::default()),
        task: bulkhead_task::TaskModule::default(),
        audit: bulkhead_audit::AuditModule::default(),
    };
    let mut launches = Vec::new();
    for module in bulkhead::services::modules(settings) {
        if !kinds.iter().any(|k| k.name() == module.name()) {
            continue;
        }
        let database = &first.databases[module.name()];
        launches.push(Launch {
            module,
            urls: DbUrls::new(database.app_url.clone(), database.platform_url.clone()),
            listener: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binding a port"),
        });
    }
    let suite = Suite::start(launches, &guard, &first.peers, Some(&first.credentials))
        .await
        .expect("the replicas start");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(bulkhead_clients::follow_revocations(
        first.channel(ServiceKind::Auth),
        (first.credentials)("task"),
        guard.revoked.clone(),
        stopped.clone(),
    ));
    // As `serve`: a process running Tenant follows its own database instead.
    if !kinds.contains(&ServiceKind::Tenant) {
        tokio::spawn(bulkhead_clients::follow_inactive_tenants(
            first.channel(ServiceKind::Tenant),
            (first.credentials)("task"),
            guard.inactive.clone(),
            Duration::from_secs(1),
            stopped,
        ));
    }
    (suite, guard, stop)
}

/// A relay that retries within a fraction of a second (tests wait seconds, not minutes).
#[must_use]
pub fn fast_relay() -> bulkhead_outbox::RelayConfig {
    bulkhead_outbox::RelayConfig {
        poll_interval: std::time::Duration::from_millis(20),
        min_backoff: std::time::Duration::from_millis(20),
        max_backoff: std::time::Duration::from_millis(200),
        delivery_timeout: std::time::Duration::from_secs(5),
        ..bulkhead_outbox::RelayConfig::default()
    }
}

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
#[derive(Debug)]
pub struct TestSuite {
    /// The four services.
    pub suite: Suite,
    /// Auth's signing key (tests also mint tokens with it).
    pub key: std::sync::Arc<SigningKey>,
    /// Each service's database, by service name.
    pub databases:
        std::collections::BTreeMap<&'static str, bulkhead_postgres::testing::TestDatabase>,
}

impl TestSuite {
    /// Where `kind` listens.
    ///
    /// # Panics
    /// Never: every kind is started.
    #[must_use]
    pub fn addr(&self, kind: ServiceKind) -> SocketAddr {
        self.suite.addrs[kind.name()]
    }

    /// `http://addr` of `kind`, for tonic clients.
    #[must_use]
    pub fn endpoint(&self, kind: ServiceKind) -> String {
        format!("http://{}", self.addr(kind))
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
    let key = std::sync::Arc::new(SigningKey::generate());
    let guard = SharedGuard::new(bulkhead::keys::verifier_for(
        &key,
        VerifierConfig::default(),
    ));
    let auth = bulkhead_auth::AuthModule::new(
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
    );
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
            urls: DbUrls {
                app: database.app_url,
                platform: database.platform_url,
            },
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
    };
    let credentials = bulkhead::services::local_credentials(key.clone(), VerifierConfig::default());
    let suite = Suite::start(launches, &guard, &peers, Some(&credentials))
        .await
        .expect("the suite starts");
    TestSuite {
        suite,
        key,
        databases,
    }
}

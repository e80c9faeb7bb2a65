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
    /// A second replica of every service, when the suite runs replicated
    /// (the `scale_out_replicas` tests): [`TestSuite::channel`] balances
    /// over both.
    pub replicas: Option<Replicas>,
    /// Auth's login limits (its replicas get the same).
    login_limits: bulkhead_auth::LimitsConfig,
    /// What the services' certificates are checked against, when they serve
    /// TLS ([`spawn_suite_tls`]).
    pub tls: Option<bulkhead_server::tls::PeerTls>,
}

/// A second replica of some services, wired as a separately deployed process
/// is: on the first replicas' databases, on ports of their own, with a guard
/// of its own.
pub struct Replicas {
    /// The replicas started (the held ones, once started, in a second suite).
    suites: Vec<Suite>,
    /// Their guard.
    pub guard: SharedGuard,
    /// Who they call: each other, and the first replicas of the kinds not here.
    peers: Peers,
    /// Replicas bound but not serving yet (as the first suite's held ones).
    held: Vec<Launch>,
    /// Stops their followers.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Replicas {
    /// Where the replica of `kind` listens, started or held.
    #[must_use]
    pub fn addr(&self, kind: ServiceKind) -> Option<SocketAddr> {
        let started = self
            .suites
            .iter()
            .find_map(|s| s.addrs.get(kind.name()).copied());
        started.or_else(|| {
            self.held
                .iter()
                .find(|l| l.module.name() == kind.name())
                .and_then(|l| l.listener.local_addr().ok())
        })
    }

    /// Stops the replicas and their followers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for suite in self.suites {
            suite.stop().await;
        }
    }
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
        if let Some(replicas) = self.replicas.as_mut() {
            let started = Suite::start(
                std::mem::take(&mut replicas.held),
                &replicas.guard,
                &replicas.peers,
                Some(&self.credentials),
            )
            .await
            .expect("the held replicas start");
            replicas.suites.push(started);
        }
        Suite::start(
            std::mem::take(&mut self.held),
            &self.guard,
            &self.peers,
            Some(&self.credentials),
        )
        .await
        .expect("the held services start")
    }

    /// `http://addr` of `kind` (`https://localhost:port` when it serves
    /// TLS), for tonic clients.
    #[must_use]
    pub fn endpoint(&self, kind: ServiceKind) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr(kind).port()),
            None => format!("http://{}", self.addr(kind)),
        }
    }

    /// `http://addr` of every replica of `kind` (one unless replicated).
    #[must_use]
    pub fn endpoints(&self, kind: ServiceKind) -> Vec<String> {
        let second = self.replicas.as_ref().and_then(|r| r.addr(kind));
        std::iter::once(self.endpoint(kind))
            .chain(second.map(|addr| format!("http://{addr}")))
            .collect()
    }

    /// A lazily connected channel to `kind`: when the suite runs replicated,
    /// one client-side balanced channel over both replicas.
    #[must_use]
    pub fn channel(&self, kind: ServiceKind) -> tonic::transport::Channel {
        let endpoint = |url: String| {
            let endpoint = tonic::transport::Endpoint::from_shared(url).expect("endpoint");
            match &self.tls {
                Some(tls) => endpoint
                    .tls_config(tls.client_config("localhost"))
                    .expect("TLS client"),
                None => endpoint,
            }
        };
        let mut endpoints = self.endpoints(kind);
        if endpoints.len() == 1 {
            endpoint(endpoints.remove(0)).connect_lazy()
        } else {
            tonic::transport::Channel::balance_list(endpoints.into_iter().map(endpoint))
        }
    }

    /// The guard the suite's services verify with (another service started
    /// beside them, e.g. a bench's floor, shares it).
    #[must_use]
    #[allow(dead_code, reason = "for benchmarks only")]
    pub fn guard(&self) -> &SharedGuard {
        &self.guard
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

/// As [`spawn_suite_with`], with the outbox relays paced as deployed
/// (`RelayConfig::default()`: a poll every 250 ms when idle), not as the
/// tests pace them (every 20 ms): benchmarks measure the suite as it runs.
///
/// # Panics
/// As [`spawn_suite_with`].
#[allow(dead_code, reason = "for the benchmarks, which include this file")]
pub async fn spawn_suite_as_deployed(login_limits: bulkhead_auth::LimitsConfig) -> TestSuite {
    spawn(
        login_limits,
        &[],
        &|database| DbUrls::new(database.app_url.clone(), database.platform_url.clone()),
        None,
        bulkhead_outbox::RelayConfig::default(),
        ("", bulkhead_guard::FairnessOverrides::default()),
    )
    .await
}

/// All four services, Task holding each tenant to `fairness` (the limits
/// `bulkhead serve` flags set).
///
/// # Panics
/// As [`spawn_suite_with`].
#[allow(dead_code, reason = "for some test files and benchmarks only")]
pub async fn spawn_suite_with_task_fairness(
    fairness: bulkhead_guard::FairnessOverrides,
) -> TestSuite {
    spawn_suite_with_fairness("task", fairness).await
}

/// All four services, `service` with the limits `fairness` sets (as
/// `bulkhead serve <service> --max-in-flight …` does).
///
/// # Panics
/// As [`spawn_suite_with`].
#[allow(dead_code, reason = "for some test files and benchmarks only")]
pub async fn spawn_suite_with_fairness(
    service: &'static str,
    fairness: bulkhead_guard::FairnessOverrides,
) -> TestSuite {
    spawn(
        bulkhead_auth::LimitsConfig::default(),
        &[],
        &|database| DbUrls::new(database.app_url.clone(), database.platform_url.clone()),
        None,
        fast_relay(),
        (service, fairness),
    )
    .await
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
    spawn(
        login_limits,
        held,
        urls,
        None,
        fast_relay(),
        ("", bulkhead_guard::FairnessOverrides::default()),
    )
    .await
}

/// Starts all four services on fresh databases, each serving TLS with
/// `server` and calling the others over TLS, checked against `ca`.
///
/// # Panics
/// As [`spawn_suite`].
pub async fn spawn_suite_tls(
    server: std::sync::Arc<bulkhead_server::tls::ServerTls>,
    ca: bulkhead_server::tls::PeerTls,
) -> TestSuite {
    spawn(
        bulkhead_auth::LimitsConfig::default(),
        &[],
        &|database| DbUrls::new(database.app_url.clone(), database.platform_url.clone()),
        Some((server, ca)),
        fast_relay(),
        ("", bulkhead_guard::FairnessOverrides::default()),
    )
    .await
}

/// The cluster's socket folder and port, from a test database's URL
/// (`postgresql://role@%2Fpath%2Fsocket:PORT/db`).
#[allow(dead_code, reason = "for some test files only")]
pub fn socket_of(url: &str) -> (std::path::PathBuf, u16) {
    let host_port = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(host_port, _)| host_port)
        .expect("host:port");
    let (host, port) = host_port.rsplit_once(':').expect("port");
    (
        std::path::PathBuf::from(host.replace("%2F", "/")),
        port.parse().expect("port number"),
    )
}

async fn spawn(
    login_limits: bulkhead_auth::LimitsConfig,
    held: &[&str],
    urls: &dyn Fn(&bulkhead_postgres::testing::TestDatabase) -> DbUrls,
    tls: Option<(
        std::sync::Arc<bulkhead_server::tls::ServerTls>,
        bulkhead_server::tls::PeerTls,
    )>,
    relay: bulkhead_outbox::RelayConfig,
    (tuned, fairness): (&str, bulkhead_guard::FairnessOverrides),
) -> TestSuite {
    bulkhead_testkit::log_when_asked();
    let key = std::sync::Arc::new(SigningKey::generate());
    let guard = SharedGuard::new(bulkhead::keys::verifier_for(
        &key,
        VerifierConfig::default(),
    ));
    let auth = auth_module(&key, login_limits.clone());
    let mut launches = Vec::new();
    let mut databases = std::collections::BTreeMap::new();
    let settings = bulkhead::services::Settings {
        auth,
        task: bulkhead_task::TaskModule::default(),
        audit: bulkhead_audit::AuditModule::default(),
    };
    for module in bulkhead::services::modules(settings) {
        // As `bulkhead serve --tenant-rate-per-second …` does.
        let module: std::sync::Arc<dyn bulkhead_server::ServiceModule> =
            if module.name() == tuned && !fairness.is_empty() {
                std::sync::Arc::new(bulkhead_server::TunedModule::new(module, fairness))
            } else {
                module
            };
        let database = test_database(module.schema()).await;
        databases.insert(module.name(), database.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a port");
        launches.push(Launch {
            module,
            urls: urls(&database),
            listener,
            tls: tls.as_ref().map(|(server, _)| server.clone()),
        });
    }
    let addr = |name: &str| {
        launches.iter().find(|l| l.module.name() == name).map(|l| {
            let addr = l.listener.local_addr().expect("addr");
            match tls {
                Some(_) => format!("https://localhost:{}", addr.port()),
                None => format!("http://{addr}"),
            }
        })
    };
    let peer_tls = tls.as_ref().map(|(_, ca)| ca.clone());
    let peers = Peers {
        auth: addr("auth"),
        tenant: addr("tenant"),
        task: addr("task"),
        audit: addr("audit"),
        relay,
        tls: peer_tls.clone(),
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
        login_limits,
        replicas: None,
        tls: peer_tls,
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
/// Tenant's deactivations (as `serve` does), calling each other and the first
/// replicas of the other kinds. Those named in `held` are bound but wait for
/// [`TestSuite::start_held`] (with `first`'s held ones).
///
/// # Panics
/// When a replica cannot start.
#[cfg(feature = "scale-out")]
pub async fn start_replicas(first: &TestSuite, kinds: &[ServiceKind], held: &[&str]) -> Replicas {
    start_replicas_following(
        first,
        kinds,
        held,
        first.channel(ServiceKind::Auth),
        bulkhead_clients::REVOCATION_FEED_BOUND,
    )
    .await
}

/// [`start_replicas`], their guard following Auth's revocations over `auth`
/// and failing closed when it has not heard them for `bound`. Returns once
/// that guard has caught up.
///
/// # Panics
/// When a replica cannot start, or its guard does not catch up in 20 s.
pub async fn start_replicas_following(
    first: &TestSuite,
    kinds: &[ServiceKind],
    held: &[&str],
    auth: tonic::transport::Channel,
    bound: Duration,
) -> Replicas {
    start_replicas_wired(first, kinds, held, auth, bound, &|_| {}).await
}

/// [`start_replicas_following`], the replicas calling their peers where
/// `rewire` says (e.g. through a proxy).
///
/// # Panics
/// As [`start_replicas_following`].
pub async fn start_replicas_wired(
    first: &TestSuite,
    kinds: &[ServiceKind],
    held: &[&str],
    auth: tonic::transport::Channel,
    bound: Duration,
    rewire: &dyn Fn(&mut Peers),
) -> Replicas {
    let guard = SharedGuard::new(bulkhead::keys::verifier_for(
        &first.key,
        VerifierConfig::default(),
    ));
    let settings = bulkhead::services::Settings {
        auth: auth_module(&first.key, first.login_limits.clone()),
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
            tls: None,
        });
    }
    let own = |kind: ServiceKind, first_url: &Option<String>| {
        launches
            .iter()
            .find(|l| l.module.name() == kind.name())
            .map(|l| format!("http://{}", l.listener.local_addr().expect("addr")))
            .or_else(|| first_url.clone())
    };
    let mut peers = Peers {
        auth: own(ServiceKind::Auth, &first.peers.auth),
        tenant: own(ServiceKind::Tenant, &first.peers.tenant),
        task: own(ServiceKind::Task, &first.peers.task),
        audit: own(ServiceKind::Audit, &first.peers.audit),
        relay: first.peers.relay.clone(),
        tls: first.peers.tls.clone(),
    };
    rewire(&mut peers);
    let (held, launches): (Vec<Launch>, Vec<Launch>) = launches
        .into_iter()
        .partition(|l| held.contains(&l.module.name()));
    let suite = Suite::start(launches, &guard, &peers, Some(&first.credentials))
        .await
        .expect("the replicas start");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(bulkhead_clients::follow_revocations(
        auth,
        (first.credentials)("task"),
        guard.revoked.clone(),
        bound,
        stopped.clone(),
    ));
    let started = std::time::Instant::now();
    while !guard.revoked.is_current() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replicas' guard never heard Auth's revocation feed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    Replicas {
        suites: vec![suite],
        guard,
        peers,
        held,
        stop,
    }
}

/// The suite with two replicas of every service (see [`start_replicas`]),
/// under the names the end-to-end tests use: `scale_out_replicas` runs every
/// one of them again this way.
#[cfg(feature = "scale-out")]
pub mod replicated {
    pub use super::{
        TASK_CLIENT_SECRET, TestSuite, start_replicas_following, start_replicas_wired,
    };
    use bulkhead::services::ServiceKind;

    /// [`super::spawn_suite`], replicated.
    pub async fn spawn_suite() -> TestSuite {
        spawn_suite_with(bulkhead_auth::LimitsConfig::default()).await
    }

    /// [`super::spawn_suite_with`], replicated.
    pub async fn spawn_suite_with(login_limits: bulkhead_auth::LimitsConfig) -> TestSuite {
        spawn_suite_holding(login_limits, &[]).await
    }

    /// [`super::spawn_suite_holding`], replicated: both replicas of the
    /// services in `held` wait.
    pub async fn spawn_suite_holding(
        login_limits: bulkhead_auth::LimitsConfig,
        held: &[&str],
    ) -> TestSuite {
        let mut suite = super::spawn_suite_holding(login_limits, held).await;
        suite.replicas = Some(super::start_replicas(&suite, &ServiceKind::ALL, held).await);
        suite
    }
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

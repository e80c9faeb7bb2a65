//! The command line: one module per subcommand, each with its arguments and
//! what it runs.

mod audit;
mod bootstrap;
mod keys;
mod migrate;
mod outbox;
mod serve;
mod token;
mod up;
mod validate;

use clap::{Parser, Subcommand};

/// `bulkhead`: zero-trust multi-tenant gRPC services.
#[derive(Debug, Parser)]
#[command(
    name = "bulkhead",
    version,
    about = "Zero-trust multi-tenant gRPC services"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up")]
enum Command {
    /// All four services in one process on a private Postgres (for a laptop).
    Up(up::Args),
    /// One service, for deployment.
    Serve(serve::Args),
    /// Create a service's roles and database (with --admin-url) and run its migrations.
    Migrate(migrate::Args),
    /// Make sure the first SUPER_ADMIN exists and owns the `default` tenant
    /// (idempotent), in the private cluster of `up`'s data folder.
    Bootstrap(bootstrap::Args),
    /// Add a new signing key to `up`'s key folder: published at once, signing after
    /// a grace period; older keys keep verifying their tokens.
    RotateKey(keys::RotateArgs),
    /// Print the public keys of `up`'s key folder as an RFC 7517 JWK set (what
    /// `serve --jwks-file` reads, and what Auth's GetJwks answers).
    Jwks(keys::JwksArgs),
    /// Mint an access token with the local signing key (break-glass, for a
    /// running `up`): an hour at most, recorded in the audit trail first.
    Token(token::Args),
    /// A service's outbox: list the messages set aside as dead letters, resend them.
    Outbox(outbox::Args),
    /// The audit trail from outside: verify an export offline; retention.
    Audit(audit::Args),
    /// Check every service database against the isolation rules (RLS forced
    /// with tenant policies, tenant keys, no orphans, runtime roles that
    /// cannot escape, append-only audit rows; --citus); exits non-zero on any
    /// failure.
    Validate(validate::Args),
}

impl Cli {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// Whatever stopped it, for `main` to print.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Up(args) => up::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Bootstrap(args) => bootstrap::run(args).await,
            Command::RotateKey(args) => keys::rotate(&args),
            Command::Jwks(args) => keys::jwks(&args),
            Command::Token(args) => token::run(args).await,
            Command::Outbox(args) => outbox::run(args).await,
            Command::Audit(args) => audit::run(&args).await,
            Command::Validate(args) => validate::run(args).await,
        }
    }
}

/// One connection as `role` (a service's platform role, or one of its job
/// roles) for cross-tenant transactions: `url`, or the cluster of a running
/// `bulkhead up` in `data_dir`.
async fn cross_tenant_db(
    url: Option<&str>,
    data_dir: &std::path::Path,
    schema: &bulkhead_db::schema::ServiceSchema,
    role: &str,
) -> anyhow::Result<bulkhead_db::Db> {
    let url = match url {
        Some(url) => url.to_owned(),
        None => bulkhead::up::cluster_url(data_dir, role, &schema.database())?,
    };
    let config = bulkhead_db::PoolConfig {
        max_size: 1,
        ..schema.pool_config()
    };
    Ok(bulkhead_db::Db::connect(&url, &config)
        .await?
        .with_platform(&url, &config)
        .await?)
}

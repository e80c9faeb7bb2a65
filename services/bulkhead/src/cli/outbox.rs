//! `bulkhead outbox`: the dead letters of a service's outbox, and `serve`'s
//! relay settings.

use std::time::Duration;

use bulkhead::services::ServiceKind;
use bulkhead_db::Db;
use bulkhead_outbox::RelayConfig;
use bulkhead_outbox::dead::{self, Redrive};
use uuid::Uuid;

/// How `serve`'s outbox relay paces itself.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Longest pause between retries of a delivery (seconds).
    #[arg(long, env = "BULKHEAD_OUTBOX_MAX_BACKOFF_SECS", default_value_t = 60)]
    outbox_max_backoff_secs: u64,
    /// Longest wait for one delivery call (seconds); past it, retried later.
    #[arg(
        long,
        env = "BULKHEAD_OUTBOX_DELIVERY_TIMEOUT_SECS",
        default_value_t = 10
    )]
    outbox_delivery_timeout_secs: u64,
    /// Refusals after which an audit event or a release is set aside as a dead
    /// letter (revocations never are).
    #[arg(long, env = "BULKHEAD_OUTBOX_DEAD_LETTER_AFTER", default_value_t = 5,
          value_parser = clap::value_parser!(i32).range(1..))]
    outbox_dead_letter_after: i32,
    /// Age after which delivered messages are deleted (hours).
    #[arg(long, env = "BULKHEAD_OUTBOX_PRUNE_AFTER_HOURS", default_value_t = 168)]
    outbox_prune_after_hours: u64,
    /// Relay rounds in flight at once: more when the receiver is far (each
    /// round waits for its answer), fewer on a small machine (claims take
    /// turns, and their scans compete for its cores).
    #[arg(long, env = "BULKHEAD_OUTBOX_CONCURRENCY", default_value_t = u16::try_from(RelayConfig::default().concurrency).unwrap_or(2),
          value_parser = clap::value_parser!(u16).range(1..=64))]
    outbox_concurrency: u16,
    /// Most messages one round claims and delivers.
    #[arg(long, env = "BULKHEAD_OUTBOX_BATCH_SIZE", default_value_t = RelayConfig::default().batch_size,
          value_parser = clap::value_parser!(i64).range(1..=10_000))]
    outbox_batch_size: i64,
}

impl RelayArgs {
    /// The relay's configuration.
    pub fn config(&self) -> RelayConfig {
        RelayConfig {
            max_backoff: Duration::from_secs(self.outbox_max_backoff_secs.max(1)),
            delivery_timeout: Duration::from_secs(self.outbox_delivery_timeout_secs.max(1)),
            dead_letter_after: self.outbox_dead_letter_after,
            prune_after: Duration::from_secs(self.outbox_prune_after_hours * 3600),
            concurrency: usize::from(self.outbox_concurrency),
            batch_size: self.outbox_batch_size,
            ..RelayConfig::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the messages set aside (one JSON object per line).
    ListDead {
        #[command(flatten)]
        target: Target,
        /// Most messages printed.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Put dead letters back in line: one (--id) or every one (--all).
    Redrive {
        #[command(flatten)]
        target: Target,
        /// The message id.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<Uuid>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// Whose outbox.
#[derive(Debug, clap::Args)]
struct Target {
    /// Which service.
    service: ServiceKind,
    /// Postgres URL as the service's platform role `<svc>_platform`; default:
    /// the cluster of a running `bulkhead up` (see --data-dir).
    #[arg(long, env = "BULKHEAD_PLATFORM_DATABASE_URL", hide_env_values = true)]
    platform_database_url: Option<String>,
    /// The `up` data folder, when no URL is given.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    data_dir: std::path::PathBuf,
}

impl Target {
    async fn db(&self) -> anyhow::Result<Db> {
        if self.service == ServiceKind::Audit {
            anyhow::bail!("audit has no outbox: it is where the other services' events go");
        }
        let schema = self.service.schema();
        // The platform pool is the one the relay uses.
        super::cross_tenant_db(
            self.platform_database_url.as_deref(),
            &self.data_dir,
            schema,
            &schema.platform_role(),
        )
        .await
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::ListDead { target, limit } => {
            let db = target.db().await?;
            for letter in dead::list_dead(&db, limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        Command::Redrive { target, id, all } => {
            let db = target.db().await?;
            let which = match (id, all) {
                (Some(id), _) => Redrive::One(id),
                (None, _) => Redrive::All,
            };
            let n = dead::redrive(&db, &which).await?;
            println!("{}: {n} message(s) put back in line", target.service.name());
        }
    }
    Ok(())
}

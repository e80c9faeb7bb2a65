//! `bulkhead audit`: the audit trail, checked from outside.

use std::path::PathBuf;
use std::sync::Arc;

use bulkhead::services::ServiceKind;
use bulkhead_audit::Notary;
use bulkhead_audit::offline::verify_export;
use bulkhead_audit::retention;
use bulkhead_context::TenantId;
use bulkhead_db::Db;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check an ExportEvents file with no database and no running service:
    /// every hash from event 1, and (with --keys) the signed checkpoint the
    /// export ends with, so nothing was altered or cut off before it.
    Verify {
        /// The export, as grpcurl printed it (`… AuditService/ExportEvents > export.json`).
        export: PathBuf,
        /// Audit's checkpoint keys (`… AuditService/GetCheckpointKeys > keys.json`).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// Delete the events older than each tenant's retention period from the
    /// start of its chain, after signing a checkpoint of the last one deleted
    /// (VerifyChain and exports then start from it). Runs as the retention
    /// job's own role, the only one the trail lets delete.
    Prune {
        #[command(flatten)]
        job: Job,
        /// Signs the prunes' checkpoints: Audit's checkpoint key (must exist).
        /// Default with --data-dir: the key of `bulkhead up`.
        #[arg(long, env = "BULKHEAD_CHECKPOINT_KEY_FILE")]
        checkpoint_key_file: Option<PathBuf>,
        /// The keys the current one replaced (a JWK set; default: beside the
        /// key file, `<key>.retired.json`): the prune a new one builds on may
        /// be signed with one of them.
        #[arg(long, env = "BULKHEAD_CHECKPOINT_RETIRED_KEYS_FILE")]
        checkpoint_retired_keys_file: Option<PathBuf>,
        /// Days events are kept for tenants with no period of their own.
        #[arg(long, env = "BULKHEAD_AUDIT_RETENTION_DAYS", default_value_t = 365,
              value_parser = clap::value_parser!(u32).range(1..))]
        default_days: u32,
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prune as of this time (RFC 3339) instead of now: with --dry-run,
        /// what a later run will delete.
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Set a tenant's retention period (the nil UUID: the platform chain), as
    /// the platform role, recorded in that tenant's trail.
    SetRetention {
        /// Postgres URL as Audit's platform role `audit_platform`; default:
        /// the cluster of a running `bulkhead up` (see --data-dir).
        #[arg(long, env = "BULKHEAD_PLATFORM_DATABASE_URL", hide_env_values = true)]
        platform_database_url: Option<String>,
        /// The `up` data folder, when no URL is given.
        #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
        data_dir: PathBuf,
        /// The tenant (UUID).
        tenant: String,
        /// Days its events are kept.
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        days: i32,
    },
    /// Replace Audit's checkpoint key: the current one's public half joins the
    /// retired set beside it (its checkpoints stay checkable and published),
    /// a new key takes its place. Audit signs with it once restarted.
    RotateCheckpointKey {
        /// The key file (default with --data-dir: the key of `bulkhead up`).
        #[arg(long, env = "BULKHEAD_CHECKPOINT_KEY_FILE")]
        checkpoint_key_file: Option<PathBuf>,
        /// The retired keys (a JWK set; default: beside the key file, as
        /// `<key>.retired.json`, where `up` reads it).
        #[arg(long, env = "BULKHEAD_CHECKPOINT_RETIRED_KEYS_FILE")]
        checkpoint_retired_keys_file: Option<PathBuf>,
        /// The `up` data folder, when no key file is given.
        #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
        data_dir: PathBuf,
    },
    /// Print the retention periods set (one JSON object per line).
    ListRetention {
        #[command(flatten)]
        job: Job,
    },
}

/// How the retention job reaches the trail.
#[derive(Debug, clap::Args)]
struct Job {
    /// Postgres URL as the retention role `audit_retention`; default: the
    /// cluster of a running `bulkhead up` (see --data-dir).
    #[arg(long, env = "BULKHEAD_RETENTION_DATABASE_URL", hide_env_values = true)]
    retention_database_url: Option<String>,
    /// The `up` data folder, when no URL is given.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    data_dir: PathBuf,
}

impl Job {
    async fn db(&self) -> anyhow::Result<Db> {
        let schema = ServiceKind::Audit.schema();
        super::cross_tenant_db(
            self.retention_database_url.as_deref(),
            &self.data_dir,
            schema,
            &schema.job_role("retention"),
        )
        .await
    }
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Prune {
            job,
            checkpoint_key_file,
            checkpoint_retired_keys_file,
            default_days,
            dry_run,
            as_of,
        } => {
            let key_file = checkpoint_key_file
                .clone()
                .unwrap_or_else(|| job.data_dir.join("keys/audit-checkpoint.pem"));
            let key = bulkhead::keys::load(&key_file)?;
            let retired = bulkhead::keys::load_public_keys(
                &checkpoint_retired_keys_file
                    .clone()
                    .unwrap_or_else(|| bulkhead::keys::retired_checkpoint_keys_path(&key_file)),
            )?;
            let notary = Notary::with_retired(Arc::new(key), &retired)?;
            let db = job.db().await?;
            let report = retention::prune(
                &db,
                &notary,
                *default_days,
                as_of.unwrap_or_else(chrono::Utc::now),
                *dry_run,
            )
            .await?;
            for pruned in &report {
                println!(
                    "{}",
                    serde_json::json!({
                        "tenant_id": pruned.tenant_id,
                        "pruned_through": pruned.through,
                        if *dry_run { "would_delete" } else { "deleted" }: pruned.deleted,
                    })
                );
            }
            if report.is_empty() {
                eprintln!("nothing older than its retention period");
            }
            Ok(())
        }
        Command::SetRetention {
            platform_database_url,
            data_dir,
            tenant,
            days,
        } => {
            // The nil UUID (no tenant) names the platform chain.
            let tenant = uuid::Uuid::parse_str(tenant)
                .map(TenantId::from_uuid)
                .map_err(|_| anyhow::anyhow!("{tenant:?} is not a tenant id (UUID)"))?;
            let schema = ServiceKind::Audit.schema();
            let db = super::cross_tenant_db(
                platform_database_url.as_deref(),
                data_dir,
                schema,
                &schema.platform_role(),
            )
            .await?;
            retention::set_period(&db, tenant, *days).await?;
            println!("tenant {tenant}: events kept {days} days");
            Ok(())
        }
        Command::RotateCheckpointKey {
            checkpoint_key_file,
            checkpoint_retired_keys_file,
            data_dir,
        } => {
            let key_file = checkpoint_key_file
                .clone()
                .unwrap_or_else(|| data_dir.join("keys/audit-checkpoint.pem"));
            let retired = checkpoint_retired_keys_file
                .clone()
                .unwrap_or_else(|| bulkhead::keys::retired_checkpoint_keys_path(&key_file));
            let (old, new) = bulkhead::keys::rotate_checkpoint_key(&key_file, &retired)?;
            println!(
                "checkpoint key {new} replaces {old} ({} keeps the old public key): restart Audit to sign with it; checkpoints of {old} stay checkable",
                retired.display()
            );
            Ok(())
        }
        Command::ListRetention { job } => {
            for period in retention::periods(&job.db().await?).await? {
                println!(
                    "{}",
                    serde_json::json!({
                        "tenant_id": period.tenant_id,
                        "retain_days": period.retain_days,
                        "update_time": period.update_time,
                    })
                );
            }
            Ok(())
        }
        Command::Verify { export, keys } => {
            let text = std::fs::read_to_string(export)?;
            let keys = keys.as_ref().map(std::fs::read_to_string).transpose()?;
            let report = verify_export(&text, keys.as_deref())?;
            match report.checkpoint {
                Some((sequence, kid)) => println!(
                    "verified events {} to {} of tenant {}{}; Audit's checkpoint of event {sequence} (key {kid}) holds",
                    report.pruned_through + 1,
                    report.events,
                    report.tenant_id,
                    if report.pruned_through > 0 {
                        format!(
                            " (events 1 to {} were pruned; Audit signed the last of them)",
                            report.pruned_through
                        )
                    } else {
                        String::new()
                    }
                ),
                None => println!(
                    "verified events {} to {} of tenant {} (the end{} not proven: give --keys)",
                    report.pruned_through + 1,
                    report.events,
                    report.tenant_id,
                    if report.pruned_through > 0 {
                        " and the pruned start are"
                    } else {
                        " is"
                    }
                ),
            }
            Ok(())
        }
    }
}

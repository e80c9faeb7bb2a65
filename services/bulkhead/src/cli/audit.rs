//! `bulkhead audit`: the audit trail, checked from outside.

use std::path::PathBuf;

use bulkhead_audit::offline::verify_export;

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
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        Command::Verify { export, keys } => {
            let text = std::fs::read_to_string(export)?;
            let keys = keys.as_ref().map(std::fs::read_to_string).transpose()?;
            let report = verify_export(&text, keys.as_deref())?;
            match report.checkpoint {
                Some((sequence, kid)) => println!(
                    "verified events 1 to {} of tenant {}; Audit's checkpoint of event {sequence} (key {kid}) holds",
                    report.events, report.tenant_id
                ),
                None => println!(
                    "verified events 1 to {} of tenant {} (the end is not proven: give --keys)",
                    report.events, report.tenant_id
                ),
            }
            Ok(())
        }
    }
}

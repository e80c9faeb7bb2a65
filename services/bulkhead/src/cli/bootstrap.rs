//! `bulkhead bootstrap`.

use std::path::PathBuf;

use bulkhead::up::{self, UpConfig};
use bulkhead_telemetry::LogFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `up` data folder.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    data_dir: PathBuf,
    /// The SUPER_ADMIN's email.
    #[arg(long, env = "BULKHEAD_ADMIN_EMAIL")]
    email: String,
    /// Their password (at least 12 characters); refused when the admin exists
    /// with another.
    #[arg(long, env = "BULKHEAD_ADMIN_PASSWORD", hide_env_values = true)]
    password: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = bulkhead_telemetry::init("bulkhead", LogFormat::Pretty)?;
    up::bootstrap_only(UpConfig {
        data_dir: args.data_dir,
        admin_email: Some(args.email),
        admin_password: Some(args.password),
        ..UpConfig::default()
    })
    .await
}

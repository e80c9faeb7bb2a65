//! `bulkhead up`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use bulkhead::up::{self, UpConfig};
use bulkhead_telemetry::LogFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Holds Auth's signing keys, the generated admin password and the Postgres
    /// cluster (as root, the cluster moves under /var/lib/bulkhead/clusters when
    /// the `postgres` OS user cannot reach this folder).
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
    /// Their password, applied when the admin is created (default: generated
    /// once, kept in the data folder). Refused when the admin exists with another.
    #[arg(long, env = "BULKHEAD_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Let SUPER_ADMINs get and list tasks across tenants (each call audited).
    #[arg(long, env = "BULKHEAD_TASK_SUPER_ADMIN_BYPASS")]
    task_super_admin_bypass: bool,
    /// Serve on a non-loopback --host although `up` serves plaintext (tokens
    /// and passwords cross the network in clear).
    #[arg(long, env = "BULKHEAD_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // `up` is for this machine: it serves plaintext. Off it, `serve` takes
    // certificates.
    if !args.host.is_loopback() && !args.insecure_plaintext {
        anyhow::bail!(
            "bulkhead up serves plaintext, and --host {} is not a loopback address: tokens and passwords would cross the network in clear; pass --insecure-plaintext (BULKHEAD_INSECURE_PLAINTEXT=true) to allow it, or run `bulkhead serve` with --tls-cert/--tls-key",
            args.host
        );
    }
    let _telemetry = bulkhead_telemetry::init("bulkhead", LogFormat::Pretty)?;
    bulkhead_telemetry::serve_metrics(args.metrics_listen)?;
    up::run(UpConfig {
        data_dir: args.data_dir,
        host: args.host,
        metrics: Some(args.metrics_listen),
        admin_email: args.admin_email,
        admin_password: args.admin_password,
        task_super_admin_bypass: args.task_super_admin_bypass,
    })
    .await
}

//! `bulkhead migrate`.

use bulkhead::provision;
use bulkhead::services::ServiceKind;
use bulkhead_telemetry::LogFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which service.
    service: ServiceKind,
    /// Postgres URL as the owner role `<svc>_owner`, to the service's database.
    #[arg(long, env = "BULKHEAD_OWNER_DATABASE_URL", hide_env_values = true)]
    owner_url: String,
    /// Superuser URL to the cluster's `postgres` database: also create the roles
    /// (`<svc>_owner`, `<svc>_app`, `<svc>_platform`) and the database.
    #[arg(long, env = "BULKHEAD_ADMIN_DATABASE_URL", hide_env_values = true)]
    admin_url: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let _telemetry = bulkhead_telemetry::init("bulkhead", LogFormat::Pretty)?;
    let schema = args.service.schema();
    match args.admin_url {
        Some(admin) => provision::provision(schema, &admin, &args.owner_url).await?,
        None => schema.migrate(&args.owner_url).await?,
    }
    println!("{}: migrated", args.service.name());
    Ok(())
}

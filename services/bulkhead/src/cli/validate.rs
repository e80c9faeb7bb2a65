//! `bulkhead validate`: every service database against the isolation rules
//! (see `bulkhead-validate`), as a table or JSON; a non-zero exit on any failure.

use std::collections::BTreeMap;

use bulkhead::services::ServiceKind;
use bulkhead_validate::{Finding, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A service database to check, as `SERVICE=URL` (repeatable), connecting
    /// as a superuser or a BYPASSRLS role (the owner sees no rows past FORCEd
    /// RLS, so it cannot look for orphans). Default: every service of the
    /// cluster of a running `bulkhead up` (see --data-dir), as its superuser.
    #[arg(long = "database-url", value_name = "SERVICE=URL", value_parser = service_url)]
    database_urls: Vec<(ServiceKind, String)>,
    /// The `up` data folder, when no URL is given.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    data_dir: std::path::PathBuf,
    /// Also check the Citus distribution rules.
    #[arg(long)]
    citus: bool,
    /// Print JSON (one array of findings) instead of a table.
    #[arg(long)]
    json: bool,
}

fn service_url(text: &str) -> Result<(ServiceKind, String), String> {
    let (service, url) = text
        .split_once('=')
        .ok_or("expected SERVICE=URL, e.g. task=postgres://admin@db/bulkhead_task")?;
    let kind = ServiceKind::ALL
        .into_iter()
        .find(|k| k.name() == service)
        .ok_or_else(|| format!("no service {service:?} (auth, tenant, task or audit)"))?;
    Ok((kind, url.to_owned()))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let urls: BTreeMap<&'static str, (ServiceKind, String)> = if args.database_urls.is_empty() {
        ServiceKind::ALL
            .into_iter()
            .map(|kind| {
                let url = bulkhead::up::cluster_url(
                    &args.data_dir,
                    bulkhead_postgres::SUPERUSER,
                    &kind.schema().database(),
                )?;
                Ok((kind.name(), (kind, url)))
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        args.database_urls
            .into_iter()
            .map(|(kind, url)| (kind.name(), (kind, url)))
            .collect()
    };
    // Tenant's list of tenants, for the orphan check of every database.
    let known = match urls.get("tenant") {
        Some((_, url)) => {
            let mut conn = bulkhead_db::schema::connect_once(url).await?;
            Some(bulkhead_validate::known_tenants(&mut conn).await?)
        }
        None => None,
    };
    let options = Options {
        citus: args.citus,
        ..Options::default()
    };
    let mut findings: Vec<Finding> = Vec::new();
    for (kind, url) in urls.values() {
        let mut conn = bulkhead_db::schema::connect_once(url)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", kind.name()))?;
        findings.extend(
            bulkhead_validate::validate(&mut conn, kind.schema(), known.as_deref(), options)
                .await?,
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        print!("{}", bulkhead_validate::table(&findings));
    }
    let failures = findings.iter().filter(|f| !f.ok).count();
    if failures > 0 {
        anyhow::bail!("{failures} isolation check(s) failed");
    }
    Ok(())
}

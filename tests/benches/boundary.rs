//! The cost of the tenant boundary on a point select, against the same select
//! unscoped, on pools of the same size and the same database, in one run:
//!
//! * sequential latency (median, p99) and the ratio of medians;
//! * throughput at saturation (many concurrent clients) and its ratio, with
//!   the CPU each call costs the client (this process) and the server (the
//!   cluster's backends), and the syncs (round trips) each call makes;
//! * the same statements driven by `pgbench` on the same database, for what the
//!   server itself allows: one sync per statement, our three syncs, and all
//!   four statements behind one sync (pipeline mode).
//!
//! Run: `cargo bench -p bulkhead-e2e --bench boundary` (part of `--bench report`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulkhead_context::TenantId;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_db::{Db, DbError};
use bulkhead_postgres::testing::test_database;
use diesel::prelude::*;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use uuid::Uuid;

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../shared/db/tests/sample_migrations");
static SAMPLE: ServiceSchema = ServiceSchema::new("sample", &MIGRATIONS);

diesel::table! {
    projects (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        name -> Text,
    }
}

diesel::table! {
    plain_projects (org_id, id) {
        org_id -> Uuid,
        id -> Uuid,
        name -> Text,
    }
}

const TENANTS: usize = 20;
const ROWS_PER_TENANT: usize = 500;
const SEQUENTIAL: usize = 4_000;
const CLIENTS: usize = 16;
const POOL: u32 = 8;
const SATURATION: Duration = Duration::from_secs(4);

/// A project's tenant and name: what a one-flight read checks.
#[derive(Queryable)]
struct Named {
    tenant_id: Uuid,
    name: String,
}

impl bulkhead_db::TenantRow for Named {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unscoped,
    ScopedRead,
    ScopedTx,
    Naive,
    OneFlight,
}

impl Mode {
    const fn label(self) -> &'static str {
        match self {
            Self::Unscoped => "unscoped select (no RLS table)",
            Self::ScopedRead => "tenant_read (pipelined, COMMIT off-path)",
            Self::ScopedTx => "tenant_tx (pipelined, COMMIT awaited)",
            Self::Naive => "naive BEGIN; SET LOCAL; SELECT; COMMIT",
            Self::OneFlight => "tenant_read_rows (one flight)",
        }
    }

    /// Round trips the server answers with a `ReadyForQuery` (each a flush,
    /// a wake-up on both sides): tokio-postgres ends every statement with a
    /// `Sync`, and a simple-query batch is one.
    const fn syncs(self) -> u32 {
        match self {
            Self::Unscoped => 1,
            Self::ScopedRead | Self::ScopedTx | Self::OneFlight => 3,
            Self::Naive => 4,
        }
    }
}

/// The scoped pool, and a plain pool of the same size and settings for the
/// unscoped modes: `Db::system` resets the session's settings on every
/// checkout (a round trip the baseline should not pay).
#[derive(Clone)]
struct Pools {
    db: Db,
    plain: Pool<AsyncPgConnection>,
}

async fn plain_pool(url: &str) -> Pool<AsyncPgConnection> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Pool::builder()
        .max_size(POOL)
        .build(manager)
        .await
        .expect("plain pool")
}

async fn one(pools: &Pools, mode: Mode, tenant: TenantId, id: Uuid) -> Result<String, DbError> {
    let t = *tenant.as_uuid();
    let db = &pools.db;
    match mode {
        Mode::Unscoped => {
            let mut conn = pools.plain.get().await?;
            Ok(plain_projects::table
                .filter(plain_projects::org_id.eq(t).and(plain_projects::id.eq(id)))
                .select(plain_projects::name)
                .first(&mut conn)
                .await?)
        }
        Mode::ScopedRead => {
            db.tenant_read(tenant, async |tx| {
                Ok(projects::table
                    .filter(projects::tenant_id.eq(t).and(projects::id.eq(id)))
                    .select(projects::name)
                    .first(&mut tx.pg())
                    .await?)
            })
            .await
        }
        Mode::ScopedTx => {
            db.tenant_tx(tenant, async |tx| {
                Ok(projects::table
                    .filter(projects::tenant_id.eq(t).and(projects::id.eq(id)))
                    .select(projects::name)
                    .first(&mut tx.pg())
                    .await?)
            })
            .await
        }
        Mode::OneFlight => db
            .tenant_read_rows(tenant, async |tx| {
                Ok::<_, DbError>(
                    projects::table
                        .filter(projects::tenant_id.eq(t).and(projects::id.eq(id)))
                        .select((projects::tenant_id, projects::name))
                        .first::<Named>(&mut tx.pg())
                        .await
                        .optional()?,
                )
            })
            .await?
            .map(|row| row.name)
            .ok_or(DbError::Unavailable("no row".into())),
        Mode::Naive => {
            let mut conn = pools.plain.get().await?;
            let set = format!("SET LOCAL app.tenant_id = '{}'", t.hyphenated());
            Ok(conn
                .transaction::<_, diesel::result::Error, _>(async |c| {
                    c.batch_execute(&set).await?;
                    projects::table
                        .filter(projects::tenant_id.eq(t).and(projects::id.eq(id)))
                        .select(projects::name)
                        .first(c)
                        .await
                })
                .await?)
        }
    }
}

fn pick(rows: &[(TenantId, Uuid)], i: usize) -> (TenantId, Uuid) {
    rows[(i * 7919) % rows.len()]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// CPU seconds so far of this process and of every `postgres` process (the
/// test cluster's backends; the bench runs alone on its machine).
fn cpu_seconds() -> (f64, f64) {
    fn used(stat: &str) -> Option<(String, f64)> {
        let (head, tail) = stat.rsplit_once(") ")?;
        let comm = head.split_once(" (")?.1.to_owned();
        let fields: Vec<&str> = tail.split_whitespace().collect();
        // utime and stime, in clock ticks (100 per second on Linux).
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some((comm, ticks / 100.0))
    }
    let client = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| used(&s))
        .map_or(0.0, |(_, t)| t);
    let server = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| used(&stat))
        .filter(|(comm, _)| comm == "postgres")
        .map(|(_, t)| t)
        .sum();
    (client, server)
}

/// Median and p99 (µs) of each mode, calls interleaved (one of each mode in
/// turn) so that every mode sees the same machine: on 2 shared cores, running
/// the modes one after another measures the neighbours as much as the code.
async fn sequential(db: &Pools, modes: &[Mode], rows: &[(TenantId, Uuid)]) -> Vec<(f64, f64)> {
    for i in 0..300 {
        let (t, id) = pick(rows, i);
        for mode in modes {
            one(db, *mode, t, id).await.expect("warm-up");
        }
    }
    let mut micros = vec![Vec::with_capacity(SEQUENTIAL); modes.len()];
    for i in 0..SEQUENTIAL {
        let (t, id) = pick(rows, i);
        for (m, mode) in modes.iter().enumerate() {
            let started = Instant::now();
            let name = one(db, *mode, t, id).await.expect("select");
            micros[m].push(started.elapsed().as_secs_f64() * 1e6);
            assert!(name.starts_with('p'));
        }
    }
    micros
        .into_iter()
        .map(|mut m| {
            m.sort_by(f64::total_cmp);
            (percentile(&m, 0.5), percentile(&m, 0.99))
        })
        .collect()
}

/// Calls per second at saturation, and the CPU each call cost the client
/// and the server (µs).
async fn saturation(db: &Pools, mode: Mode, rows: &[(TenantId, Uuid)]) -> (f64, f64, f64) {
    let before = cpu_seconds();
    let deadline = Instant::now() + SATURATION;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let db = db.clone();
        let rows = rows.to_vec();
        clients.push(tokio::spawn(async move {
            let mut done = 0_u64;
            let mut i = c * 1000;
            while Instant::now() < deadline {
                let (t, id) = pick(&rows, i);
                one(&db, mode, t, id).await.expect("select");
                done += 1;
                i += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for client in clients {
        total += client.await.expect("client");
    }
    let after = cpu_seconds();
    let calls = total as f64;
    (
        calls / SATURATION.as_secs_f64(),
        (after.0 - before.0) / calls * 1e6,
        (after.1 - before.1) / calls * 1e6,
    )
}

fn pgbench_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("pgbench"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin/pgbench"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

/// TPS of one pgbench script (prepared statements, `CLIENTS` clients).
fn pgbench(bin: &PathBuf, url: &str, script: &str, tenant: TenantId, id: Uuid) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("script.sql");
    std::fs::write(&path, script).ok()?;
    let output = std::process::Command::new(bin)
        .args(["-n", "-M", "prepared", "-T", "4", "-j", "2", "-c"])
        .arg(CLIENTS.to_string())
        .arg("-D")
        .arg(format!("t={tenant}"))
        .arg("-D")
        .arg(format!("id={id}"))
        .arg("-f")
        .arg(&path)
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
}

#[tokio::main]
#[allow(dead_code, reason = "the report runs `run`")]
async fn main() {
    run().await;
}

/// Runs the bench, prints it, and returns its headline figures (measure,
/// value) for the report.
pub async fn run() -> Vec<(String, String)> {
    let mut figures = Vec::new();
    let database = test_database(&SAMPLE).await;
    let db = database.app_db(POOL).await;
    let pools = Pools {
        db: db.clone(),
        plain: plain_pool(&database.app_url).await,
    };

    // The same rows in the RLS table (through each tenant's scope) and in the
    // plain table (as the owner: the app role may only read it).
    let mut owner = database.owner_connection().await;
    let mut rows = Vec::new();
    for tenant_index in 0..TENANTS {
        let tenant = TenantId::new_v7();
        let batch: Vec<(Uuid, String)> = (0..ROWS_PER_TENANT)
            .map(|i| (Uuid::now_v7(), format!("project {tenant_index}-{i}")))
            .collect();
        let t = *tenant.as_uuid();
        let values: Vec<_> = batch
            .iter()
            .map(|(id, name)| {
                (
                    projects::tenant_id.eq(t),
                    projects::id.eq(*id),
                    projects::name.eq(name),
                )
            })
            .collect();
        db.tenant_tx(tenant, async |tx| {
            diesel::insert_into(projects::table)
                .values(&values)
                .execute(&mut tx.pg())
                .await
                .map_err(DbError::from)
        })
        .await
        .expect("insert");
        let plain: Vec<_> = batch
            .iter()
            .map(|(id, name)| {
                (
                    plain_projects::org_id.eq(t),
                    plain_projects::id.eq(*id),
                    plain_projects::name.eq(name),
                )
            })
            .collect();
        diesel::insert_into(plain_projects::table)
            .values(&plain)
            .execute(&mut owner)
            .await
            .expect("insert plain");
        rows.extend(batch.into_iter().map(|(id, _)| (tenant, id)));
    }
    owner.batch_execute("ANALYZE").await.expect("analyze");

    println!(
        "point select by (tenant_id, id), {} rows, pool {POOL}, {} cores, PostgreSQL over a Unix socket",
        TENANTS * ROWS_PER_TENANT,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("\nsequential, {SEQUENTIAL} calls each (µs):");
    let modes = [
        Mode::Unscoped,
        Mode::ScopedRead,
        Mode::ScopedTx,
        Mode::Naive,
        Mode::OneFlight,
    ];
    let latencies = sequential(&pools, &modes, &rows).await;
    let base = latencies[0].0;
    for (mode, (median, p99)) in modes.iter().zip(latencies) {
        println!(
            "  {:<44} median {median:>7.1}  p99 {p99:>7.1}  ratio {:.2}x",
            mode.label(),
            median / base
        );
        match mode {
            Mode::ScopedRead => figures.push((
                "boundary, sequential: tenant_read / unscoped latency".into(),
                format!("{:.2}x", median / base),
            )),
            Mode::OneFlight => figures.push((
                "boundary, sequential: tenant_read_rows / unscoped latency".into(),
                format!("{:.2}x", median / base),
            )),
            _ => {}
        }
    }

    println!(
        "\nsaturation, {CLIENTS} concurrent clients, {}s each (calls/s; CPU per call, µs):",
        SATURATION.as_secs()
    );
    let mut base = 0.0;
    for mode in modes {
        let (tps, client, server) = saturation(&pools, mode, &rows).await;
        if mode == Mode::Unscoped {
            base = tps;
        }
        println!(
            "  {:<44} {tps:>9.0}  ratio {:.2}x  syncs {}  client {client:>4.0}  server {server:>4.0}",
            mode.label(),
            tps / base,
            mode.syncs(),
        );
        match mode {
            Mode::ScopedRead => figures.push((
                "boundary, saturation: tenant_read / unscoped".into(),
                format!("{:.2}x", tps / base),
            )),
            Mode::OneFlight => figures.push((
                "boundary, saturation: tenant_read_rows (one flight) / unscoped".into(),
                format!("{:.2}x", tps / base),
            )),
            _ => {}
        }
    }

    match pgbench_bin() {
        None => println!("\npgbench not found: server-side comparison skipped"),
        Some(bin) => {
            let (t, id) = rows[0];
            // Prepared statements take no parameters in SET: pgbench sets the
            // tenant with the transaction-local set_config instead.
            let select = "SELECT name FROM projects WHERE tenant_id = :t AND id = :id;\n";
            let plain = "SELECT name FROM plain_projects WHERE org_id = :t AND id = :id;\n";
            let set = "SELECT set_config('app.tenant_id', :t, true);\n";
            let scoped = format!("BEGIN;\n{set}{select}COMMIT;\n");
            // Our pattern: BEGIN and the setting behind one sync, then the
            // select, then COMMIT.
            let three = format!("\\startpipeline\nBEGIN;\n{set}\\endpipeline\n{select}COMMIT;\n");
            let pipelined =
                format!("\\startpipeline\nBEGIN;\n{set}{select}COMMIT;\n\\endpipeline\n");
            println!("\npgbench on the same database, {CLIENTS} clients, prepared (tps):");
            let mut base = None;
            for (label, syncs, script) in [
                ("plain select (no RLS table)", 1, plain.to_owned()),
                ("BEGIN; set_config; SELECT; COMMIT", 4, scoped),
                ("BEGIN + set_config in a pipeline; SELECT; COMMIT", 3, three),
                ("the same four in one pipeline", 1, pipelined),
            ] {
                match pgbench(&bin, &database.app_url, &script, t, id) {
                    Some(tps) => {
                        let b = *base.get_or_insert(tps);
                        println!(
                            "  {label:<48} {tps:>9.0}  ratio {:.2}x  syncs {syncs}",
                            tps / b
                        );
                        if syncs != 1 || base != Some(tps) {
                            figures.push((
                                format!("boundary, pgbench: {label} / plain"),
                                format!("{:.2}x", tps / b),
                            ));
                        }
                    }
                    None => println!("  {label:<48} failed"),
                }
            }
        }
    }
    figures
}

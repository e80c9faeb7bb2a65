//! The benchmark report, in one run: the machine, then each bench's own
//! output, then a table of the headline figures beside those the earlier
//! issues reported and the goals. `docs/benchmarks.md` is this bench's
//! output, as it printed it:
//!
//! `cargo bench -p bulkhead-e2e --bench report > docs/benchmarks.md`
//!
//! Each section runs on a runtime of its own, dropped before the next starts
//! (a suite's relays and followers end with it, not in the next section's
//! figures). About 15 minutes on the 2-core machine; run it alone there.

#![allow(
    clippy::duplicate_mod,
    reason = "each bench includes the shared files as modules of its own"
)]

#[path = "audit_load.rs"]
mod audit_load;
#[path = "auth_load.rs"]
mod auth_load;
#[path = "boundary.rs"]
mod boundary;
#[path = "task_load.rs"]
mod task_load;

use std::time::{Duration, Instant};

/// The figures earlier issues reported, by the measure's name in this
/// report: (measure, earlier figure and where it was reported, goal).
const EARLIER: &[(&str, &str, &str)] = &[
    (
        "boundary, sequential: tenant_read / unscoped latency",
        "—",
        "",
    ),
    (
        "boundary, sequential: tenant_read_rows / unscoped latency",
        "— (new)",
        "",
    ),
    (
        "boundary, saturation: tenant_read / unscoped",
        "0.46x (#13's text)",
        "",
    ),
    (
        "boundary, saturation: tenant_read_rows (one flight) / unscoped",
        "0.59x (stop 22, EPYC VM); 0.58x (stop 23, Intel VM)",
        "close the gap to pgbench's pipeline as far as the stack allows",
    ),
    (
        "boundary, pgbench: the same four in one pipeline / plain",
        "0.79x (#13's text); 0.63x (stop 23)",
        "",
    ),
    (
        "GetTask / combined floor (gRPC + pgbench plain)",
        "0.41 (stop 16, #9)",
        "",
    ),
    (
        "GetTask / combined floor (gRPC + pgbench scoped)",
        "0.83 (stop 16, #9); 0.73 (stop 22); 0.55 (stop 23, Intel VM)",
        ">= 0.6",
    ),
    (
        "ListTasks / combined floor (gRPC + pgbench plain)",
        "— (new)",
        "",
    ),
    (
        "ListTasks / combined floor (gRPC + pgbench scoped)",
        "0.52 (stop 21, #13); 0.58 (stop 22, #13); 0.50 (stop 23)",
        ">= 0.6",
    ),
    (
        "ListTasks / combined floor (same-answer gRPC + pgbench scoped)",
        "0.58 (stop 23)",
        ">= 0.6",
    ),
    (
        "ListTasks page 50 / page 1 (10^4 rows; 10^6 rows)",
        "0.90; 0.91 (stop 16, #9)",
        "about 1",
    ),
    ("GetTask p50 / p99 (ms)", "p50 1.78 (stop 16, #9)", ""),
    ("ListTasks p50 / p99 (ms)", "— (new)", ""),
    (
        "CreateTask (with its outbox write) p50 / p99 (ms)",
        "p50 6.0 (stop 16, #9)",
        "",
    ),
    (
        "Audit append through the relay (events/s, median of 3)",
        "12,165 (stop 17, #10)",
        ">= 10,000",
    ),
    ("Audit chain links broken", "0 (stop 17, #10)", "0"),
    (
        "Logins (logins/s; / the Argon2id ceiling)",
        "44/s; 0.98x (stop 20, #8)",
        ">= 0.9x",
    ),
    (
        "WhoAmI p99 during a login flood / alone",
        "2.2x (stop 20, #8)",
        "<= 3x",
    ),
];

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn proc_line(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn postgres_version() -> String {
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/postgres"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().map_or_else(
        || "unknown".to_owned(),
        |bin| command_line(&bin.to_string_lossy(), &["--version"]),
    )
}

fn machine() {
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !command_line("git", &["status", "--porcelain", "--untracked-files=no"])
        .trim()
        .is_empty();
    println!("# Benchmarks\n");
    println!(
        "This file is the output of one run of `cargo bench -p bulkhead-e2e --bench report > docs/benchmarks.md`"
    );
    println!(
        "(release build; each section is also a bench of its own, named in its heading). Numbers from"
    );
    println!(
        "one run on one shared machine swing between runs (±30% on the 2-core VM): the ratios are taken"
    );
    println!("within one run, interleaved where the bench says so.\n");
    println!("| | |\n|---|---|");
    println!(
        "| when | {} |",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "| commit | {commit}{} |",
        if dirty { " (with local changes)" } else { "" }
    );
    println!(
        "| CPU | {} × {} |",
        std::thread::available_parallelism().map_or(0, usize::from),
        proc_line("/proc/cpuinfo", "model name")
    );
    println!("| memory | {} |", proc_line("/proc/meminfo", "MemTotal"));
    println!(
        "| kernel | {} |",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
    );
    println!(
        "| PostgreSQL | {} (a private cluster over a Unix socket, in this process's tests harness) |",
        postgres_version()
    );
    println!("| rustc | {} |", command_line("rustc", &["--version"]));
    println!(
        "| load clients | h2load: {}; pgbench: {} |",
        command_line("h2load", &["--version"]),
        command_line("pgbench", &["--version"])
    );
    println!();
}

/// Runs one bench on a runtime of its own, its output in a code block.
fn section<F>(title: &str, bench: &str, run: F) -> Vec<(String, String)>
where
    F: std::future::Future<Output = Vec<(String, String)>>,
{
    println!("## {title}\n\n`cargo bench -p bulkhead-e2e --bench {bench}`\n\n```text");
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let figures = runtime.block_on(run);
    runtime.shutdown_timeout(Duration::from_secs(10));
    println!("```\n\n({:.0} s)\n", started.elapsed().as_secs_f64());
    figures
}

fn main() {
    machine();
    let mut figures = Vec::new();
    figures.extend(section(
        "The tenant boundary: a point select, scoped and unscoped",
        "boundary",
        boundary::run(),
    ));
    figures.extend(section(
        "Task: GetTask, ListTasks and CreateTask end to end",
        "task_load",
        task_load::run(),
    ));
    figures.extend(section(
        "Audit: appends through the outbox relay",
        "audit_load (AUDIT_LOAD_APPEND_ONLY=1)",
        audit_load::run(true),
    ));
    figures.extend(section(
        "Auth: logins against the Argon2id ceiling",
        "auth_load",
        auth_load::run(),
    ));

    println!("## Headline figures\n");
    println!("| measure | this run | earlier | goal |\n|---|---|---|---|");
    for (measure, now) in &figures {
        let (earlier, goal) = EARLIER
            .iter()
            .find(|(m, _, _)| m == measure)
            .map_or(("—", ""), |(_, e, g)| (*e, *g));
        println!("| {measure} | {now} | {earlier} | {goal} |");
    }
    let missing: Vec<&str> = EARLIER
        .iter()
        .map(|(m, _, _)| *m)
        .filter(|m| !figures.iter().any(|(f, _)| f == m))
        .collect();
    assert!(
        missing.is_empty(),
        "measures of the comparison table no bench reported: {missing:?}"
    );
}

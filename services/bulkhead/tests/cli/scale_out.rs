//! A real Prometheus (Debian's; `apt-get install prometheus`) scrapes a running
//! `bulkhead up` with the alert rules loaded: the target is up, the series
//! the alerts watch are there, and every rule is evaluated without error.
//! Feature `scale-out`: `cargo test -p bulkhead -p bulkhead-e2e --features
//! scale-out -- scale_out`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::up::start_up_with;

fn tool(name: &str) -> std::path::PathBuf {
    ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: `apt-get install prometheus` (the scale-out tests need it)")
        })
}

async fn get_json(addr: &str, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // HTTP/1.0: the answer comes whole, not in chunks.
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return serde_json::Value::Null; // not listening yet
    };
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_out_prometheus_scrapes_up_and_evaluates_every_alert_rule() {
    let prometheus = tool("prometheus");
    let promtool = tool("promtool");
    let work = tempfile::Builder::new()
        .prefix("bulkhead-prometheus")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let host = format!("127.0.3.{}", 2 + std::process::id() % 250);
    let up = start_up_with(work.path(), &host, &[], &[])
        .await
        .expect("up starts");

    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus");
    std::fs::copy(deploy.join("alerts.yml"), work.path().join("alerts.yml")).expect("rules");
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
             scrape_configs:\n  - job_name: bulkhead\n    static_configs:\n      - targets: [\"{host}:9464\"]\n"
        ),
    )
    .expect("config");
    let checked = Command::new(&promtool)
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("promtool runs");
    assert!(checked.status.success(), "{checked:?}");

    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let server = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let server = KillOnDrop(server);
    let web = web.to_string();
    let query = |q: &str| format!("/api/v1/query?query={q}");

    let started = Instant::now();
    let outcome = loop {
        let target = get_json(&web, &query("up")).await;
        let mismatches = get_json(&web, &query("tenant_mismatch_total")).await;
        let rules = get_json(&web, "/api/v1/rules").await;
        let scraped = target["data"]["result"][0]["value"][1] == "1";
        let series = mismatches["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        let evaluated: Vec<(String, String)> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["health"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if scraped && series && evaluated.len() >= 6 && evaluated.iter().all(|(_, h)| h == "ok") {
            break Ok(evaluated);
        }
        if started.elapsed() > Duration::from_secs(30) {
            break Err(format!(
                "target up: {scraped}, tenant_mismatch_total: {series}, rules: {evaluated:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    drop(server);
    up.stop();
    let evaluated = outcome.expect("Prometheus scrapes up and evaluates the rules");
    assert!(
        evaluated.iter().any(|(name, _)| name == "TenantMismatch"),
        "{evaluated:?}"
    );
}

/// Stops a child process however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

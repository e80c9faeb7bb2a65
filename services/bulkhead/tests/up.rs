//! `bulkhead up` as a person runs it: the real binary, its own private Postgres
//! in a fresh data folder, the four fixed ports, then a clean stop on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread")]
async fn up_serves_all_four_services_and_stops_cleanly() {
    let data = tempfile::Builder::new()
        .prefix("bulkhead-up-test")
        .tempdir_in("/tmp")
        .expect("temp dir");
    // A loopback address of its own, so a developer's running `up` on 127.0.0.1
    // does not collide with the fixed ports.
    let host = format!("127.0.0.{}", 2 + std::process::id() % 250);
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["up", "--data-dir"])
        .arg(data.path())
        .args(["--host", &host])
        .args(["--metrics-listen", &format!("{host}:9464")])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data.path().join("stderr.log")).expect("stderr file"))
        .spawn()
        .expect("bulkhead up starts");

    let stdout = child.stdout.take().expect("stdout");
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.expect("utf-8 output");
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        // Keep reading (the logs) so the pipe stays open until up exits.
        std::thread::spawn(move || lines.for_each(drop));
        seen
    });
    let banner = tokio::time::timeout(Duration::from_secs(120), banner)
        .await
        .expect("up prints its banner within two minutes")
        .expect("reader");
    assert!(banner.contains("Bulkhead is up."), "{banner}");
    assert!(banner.contains("grpcurl -plaintext"), "{banner}");

    for (port, service) in [
        (50051, "bulkhead.auth.v1.AuthService"),
        (50052, "bulkhead.tenant.v1.TenantService"),
        (50053, "bulkhead.task.v1.TaskService"),
        (50054, "bulkhead.audit.v1.AuditService"),
    ] {
        assert!(banner.contains(&format!("{host}:{port}")), "{banner}");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    let metrics = http_get(&format!("{host}:9464"), "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("outbox_pending"),
        "the relay publishes its backlog: {metrics}"
    );

    let pid_file = data.path().join("postgres/data/postmaster.pid");
    assert!(
        pid_file.exists(),
        "the private cluster runs under the data folder"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "up did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stderr = std::fs::read_to_string(data.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "up exits cleanly: {status:?}\n{stderr}");
    assert!(!pid_file.exists(), "postgres was stopped with it");
}

/// A bare HTTP/1.1 GET (the metrics endpoint needs nothing more).
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

//! `bulkhead up` as a person runs it: the real binary, its own private Postgres
//! in a fresh data folder, the four fixed ports, then a clean stop on SIGTERM;
//! and run from a private (0700) folder with nothing but defaults, as root would
//! from a checkout in its home folder.

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
    let _stop_on_panic = StopOnPanic(child.id());

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
    // A forged x-tenant-id and a call without a token move the counters.
    let password =
        std::fs::read_to_string(data.path().join("admin-password")).expect("admin password");
    let channel = |port: u16| {
        tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
            .expect("endpoint")
            .connect_lazy()
    };
    let login = admin_login(&host, &password).await;
    let token = login.tokens.expect("tokens").access_token;
    let tenant_id = login.tenant.expect("tenant").id;
    let mut tenants =
        bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient::new(channel(50052));
    let mut forged = bulkhead_testkit::bearer(
        &token,
        bulkhead_proto::tenant::v1::ListTenantsRequest::default(),
    );
    forged.metadata_mut().insert(
        "x-tenant-id",
        "01a23b2c-0000-7000-8000-000000000000"
            .parse()
            .expect("ascii"),
    );
    let refused = tenants.list_tenants(forged).await.expect_err("forged");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let anonymous = tenants
        .list_tenants(bulkhead_proto::tenant::v1::ListTenantsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    // A path nobody serves, sent without a token: counted, but under no
    // label the caller chose.
    let mut grpc = tonic::client::Grpc::new(channel(50053));
    grpc.ready().await.expect("ready");
    let invented: Result<tonic::Response<()>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(()),
            "/invented.Service/Method_a1b2c3".parse().expect("path"),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    assert_eq!(
        invented.expect_err("unknown").code(),
        tonic::Code::Unauthenticated
    );

    let metrics = http_get(&format!("{host}:9464"), "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(!metrics.contains("a1b2c3"), "{metrics}");
    assert!(!metrics.contains("invented"), "{metrics}");
    let value = |name: &str, labels: &[&str]| -> Option<f64> {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .next()
    };
    assert!(
        metrics.contains("outbox_pending"),
        "the relay publishes its backlog: {metrics}"
    );
    assert_eq!(value("tenant_mismatch_total ", &[]), Some(1.0), "{metrics}");
    assert_eq!(
        value("tenant_context_error_total{", &["kind=\"tenant_mismatch\""]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value("tenant_context_error_total{", &["kind=\"missing_token\""]),
        Some(2.0),
        "ListTenants and the invented path, without a token: {metrics}"
    );
    let list_tenants = [
        "grpc_service=\"bulkhead.tenant.v1.TenantService\"",
        "grpc_method=\"ListTenants\"",
    ];
    for code in ["PermissionDenied", "Unauthenticated"] {
        let labels = [
            list_tenants[0],
            list_tenants[1],
            &format!("grpc_code=\"{code}\""),
        ];
        assert_eq!(
            value("grpc_server_handled_total{", &labels),
            Some(1.0),
            "{code}: {metrics}"
        );
    }
    assert!(
        value(
            "grpc_server_handled_total{",
            &["grpc_method=\"Login\"", "grpc_code=\"OK\""]
        )
        .is_some(),
        "{metrics}"
    );
    assert!(
        value("grpc_server_handling_seconds_bucket{", &list_tenants).is_some(),
        "durations are histograms: {metrics}"
    );
    // The forged call is counted in the token's own tenant; the anonymous
    // one in none.
    assert_eq!(
        value(
            "tenant_requests_total{",
            &[
                &format!("tenant=\"{tenant_id}\""),
                "grpc_code=\"PermissionDenied\""
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        value("active_tenants ", &[]).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            "grpc_server_handled_total{",
            &[
                "grpc_service=\"unknown\"",
                "grpc_method=\"unknown\"",
                "grpc_code=\"Unauthenticated\""
            ]
        ),
        Some(1.0),
        "{metrics}"
    );

    // A break-glass token: an hour at most, and recorded before it is given.
    let mint = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .arg("token")
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .output()
            .expect("bulkhead token runs")
    };
    let too_long = mint(&["--ttl-minutes", "61", "--reason", "test"]);
    assert!(!too_long.status.success());
    assert!(too_long.stdout.is_empty());
    let no_reason = mint(&["--role", "OWNER"]);
    assert!(!no_reason.status.success());
    assert!(no_reason.stdout.is_empty());
    let minted = mint(&[
        "--role",
        "OWNER",
        "--tenant-id",
        &tenant_id,
        "--reason",
        "INC-42: restore a deleted member",
    ]);
    assert!(minted.status.success(), "{minted:?}");
    let break_glass = String::from_utf8(minted.stdout).expect("utf-8");
    let said = String::from_utf8_lossy(&minted.stderr).into_owned();
    let session = said
        .split("--revoke ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the session to revoke is named: {said}"))
        .to_owned();
    tenants
        .list_members(bulkhead_testkit::bearer(
            break_glass.trim(),
            bulkhead_proto::tenant::v1::ListMembersRequest::default(),
        ))
        .await
        .expect("the break-glass token works");
    let mut audit =
        bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient::new(channel(50054));
    // Printed only once Audit accepted the records: both trails have them
    // already, at the first look.
    for platform in [true, false] {
        let found = audit
            .query_events(bulkhead_testkit::bearer(
                &token,
                bulkhead_proto::audit::v1::QueryEventsRequest {
                    filter: Some(bulkhead_proto::audit::v1::AuditEventFilter {
                        action: "auth.break_glass_token".into(),
                        ..Default::default()
                    }),
                    platform,
                    ..Default::default()
                },
            ))
            .await
            .expect("query")
            .into_inner()
            .events;
        assert_eq!(
            found.len(),
            1,
            "confirmed before printing (platform: {platform})"
        );
    }
    // Its session ends everywhere with `--revoke`, recorded in the platform chain.
    let revoke = |reason: &str| mint(&["--revoke", &session, "--reason", reason]);
    let revoked = revoke("INC-42 closed");
    assert!(revoked.status.success(), "{revoked:?}");
    let started = Instant::now();
    loop {
        let status = tenants
            .list_members(bulkhead_testkit::bearer(
                break_glass.trim(),
                bulkhead_proto::tenant::v1::ListMembersRequest::default(),
            ))
            .await;
        match status {
            Err(status) if status.code() == tonic::Code::Unauthenticated => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(2),
                "the revoked break-glass token still answers {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "a revoked break-glass token was refused {:?} after `--revoke`",
        started.elapsed()
    );
    let again = revoke("twice");
    assert!(!again.status.success(), "{again:?}");
    for (platform, action) in [
        (true, "auth.break_glass_token"),
        (false, "auth.break_glass_token"),
        (true, "auth.break_glass_revoked"),
    ] {
        let query = bulkhead_proto::audit::v1::QueryEventsRequest {
            filter: Some(bulkhead_proto::audit::v1::AuditEventFilter {
                action: action.into(),
                ..Default::default()
            }),
            platform,
            ..Default::default()
        };
        let started = Instant::now();
        loop {
            let found = audit
                .query_events(bulkhead_testkit::bearer(&token, query.clone()))
                .await
                .expect("query")
                .into_inner()
                .events;
            if let [event] = found.as_slice() {
                let details = format!("{:?}", event.new_value);
                assert!(
                    details.contains("INC-42"),
                    "the reason is recorded: {action} {details}"
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{action} is in the {} trail",
                if platform { "platform" } else { "tenant's" }
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The keys without a cluster to record the mint in: no token. A folder
    // without keys: no token, and no new key left behind.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(elsewhere.path().join("keys")).expect("keys dir");
    for entry in std::fs::read_dir(data.path().join("keys")).expect("keys") {
        let path = entry.expect("entry").path();
        std::fs::copy(
            &path,
            elsewhere
                .path()
                .join("keys")
                .join(path.file_name().expect("name")),
        )
        .expect("copy");
    }
    let empty = tempfile::tempdir().expect("temp dir");
    for folder in [elsewhere.path(), empty.path()] {
        let unrecorded = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .arg("token")
            .arg("--data-dir")
            .arg(folder)
            .args(["--reason", "test"])
            .output()
            .expect("bulkhead token runs");
        assert!(!unrecorded.status.success());
        assert!(unrecorded.stdout.is_empty(), "{unrecorded:?}");
    }
    assert!(!empty.path().join("keys").exists(), "no key was made");

    // Every metric the alert rules name is in the scrape (a renamed metric
    // would leave an alert that can never fire).
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/alerts.yml"
    ))
    .expect("alert rules");
    let named = metrics_named(&rules);
    assert!(named.len() >= 6, "{named:?}");
    // And every metric the Grafana dashboard plots.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/grafana/dashboards/bulkhead.json"
        ))
        .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut plotted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            scan(expr, &mut plotted, &PROMQL_WORDS);
        }
    }
    assert!(plotted.len() >= 12, "{plotted:?}");
    // Scraped again: by now the relay has delivered (the break-glass events).
    let metrics = http_get(&format!("{host}:9464"), "/metrics").await;
    for (source, names) in [("alert rules", &named), ("dashboard", &plotted)] {
        for name in names {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(&format!("{name} "))
                        || l.starts_with(&format!("{name}{{"))),
                "the {source} name {name}, which up does not export:\n{metrics}"
            );
        }
    }

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

/// The metric names in the `expr:` lines of Prometheus rules: identifiers
/// that are not label names (followed by `=`, `!` or `~`, or inside `by (…)`),
/// functions (followed by `(`) or PromQL words.
/// PromQL words that are not metric names.
const PROMQL_WORDS: [&str; 12] = [
    "by", "without", "on", "ignoring", "and", "or", "unless", "sum", "min", "max", "avg", "count",
];

fn metrics_named(rules: &str) -> std::collections::BTreeSet<String> {
    const WORDS: [&str; 12] = PROMQL_WORDS;
    let mut names = std::collections::BTreeSet::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            in_expr = true;
            scan(rest, &mut names, &WORDS);
        } else if in_expr && line.starts_with("          ") && !trimmed.contains(':') {
            scan(trimmed, &mut names, &WORDS);
        } else {
            in_expr = false;
        }
    }
    names
}

fn scan(expr: &str, names: &mut std::collections::BTreeSet<String>, words: &[&str]) {
    // Drop quoted strings and range selectors (`[5m]`); `by (…)` below.
    let mut cleaned = String::new();
    let (mut in_quotes, mut in_range) = (false, false);
    for c in expr.chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            '[' if !in_quotes => in_range = true,
            ']' if !in_quotes => in_range = false,
            _ if !in_quotes && !in_range => cleaned.push(c),
            _ => {}
        }
    }
    let bytes = cleaned.as_bytes();
    let mut i = 0;
    let mut skip_group = false;
    while i < bytes.len() {
        if bytes[i].is_ascii_lowercase() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &cleaned[start..i];
            let next = cleaned[i..].trim_start().chars().next();
            if words.contains(&word) {
                skip_group = matches!(word, "by" | "without");
            } else if skip_group || matches!(next, Some('(' | '=' | '!' | '~')) {
                // A function, a label, or a grouping label list.
            } else {
                names.insert(word.to_owned());
            }
        } else {
            if bytes[i] == b')' {
                skip_group = false;
            }
            i += 1;
        }
    }
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

/// Sends SIGTERM to a `bulkhead up` if the test panics before stopping it
/// (it then stops its own cluster): a failed assertion leaves nothing running.
struct StopOnPanic(u32);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(pid) = i32::try_from(self.0)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// The bootstrapped SUPER_ADMIN logs in to the `up` on `host` with the
/// password `up` kept (surrounding whitespace ignored).
pub(crate) async fn admin_login(
    host: &str,
    password: &str,
) -> bulkhead_proto::auth::v1::LoginResponse {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}:50051"))
        .expect("endpoint")
        .connect_lazy();
    bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient::new(channel)
        .login(bulkhead_proto::auth::v1::LoginRequest {
            email: "admin@bulkhead.local".into(),
            password: password.trim().into(),
            tenant_slug: String::new(),
        })
        .await
        .expect("the admin logs in")
        .into_inner()
}

/// A running `bulkhead up`, its banner read.
pub(crate) struct Up {
    child: std::process::Child,
    pub(crate) banner: String,
    /// What it printed after its banner (its log lines), so far.
    pub(crate) output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _stop_on_panic: StopOnPanic,
}

/// Starts `bulkhead up` in `dir` with `args` and reads its banner (or, if it
/// exits first, returns what it said).
async fn start_up(dir: &std::path::Path, host: &str, args: &[&str]) -> Result<Up, String> {
    start_up_with(dir, host, args, &[]).await
}

/// As [`start_up`], with `env` set for it.
pub(crate) async fn start_up_with(
    dir: &std::path::Path,
    host: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Up, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("up")
        .args(["--host", host])
        .args(["--metrics-listen", &format!("{host}:9464")])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bulkhead up starts");
    // Stopped if the test fails from here on (the banner's wait included).
    let stop_on_panic = StopOnPanic(child.id());
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    // Keep draining stderr (the logs) so up never blocks on a full pipe.
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&output);
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.expect("utf-8 output");
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("Ctrl-C") {
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        kept.lock().expect("output").push(line);
                    }
                });
                return Some(seen);
            }
        }
        None
    });
    let banner = tokio::time::timeout(Duration::from_secs(120), banner)
        .await
        .expect("up prints its banner or stops within two minutes")
        .expect("reader");
    match banner {
        Some(banner) => Ok(Up {
            _stop_on_panic: stop_on_panic,
            child,
            banner,
            output,
        }),
        None => {
            let status = child.wait().expect("wait");
            let logs = logs.join().unwrap_or_default();
            Err(format!("{status:?}\n{logs}"))
        }
    }
}

impl Up {
    /// SIGTERM, then a clean exit.
    pub(crate) fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "up did not stop"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "up exits cleanly: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_from_a_private_folder_and_prints_the_admin_password_once() {
    use std::os::unix::fs::PermissionsExt as _;
    // A folder only its owner may enter: as root, the postgres OS user cannot.
    let work = tempfile::Builder::new()
        .prefix("bulkhead-private")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in("/tmp")
        .expect("temp dir");
    let host = format!("127.0.1.{}", 2 + std::process::id() % 250);

    let first = start_up(work.path(), &host, &[]).await.expect("up starts");
    let password = std::fs::read_to_string(work.path().join(".bulkhead/admin-password"))
        .expect("the generated password is kept in the data folder");
    assert!(
        first
            .banner
            .contains(&format!("SUPER_ADMIN admin@bulkhead.local / {password} ")),
        "{}",
        first.banner
    );
    let shared_cluster = first
        .banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster in "))
        .and_then(|l| l.split_whitespace().next())
        .map(std::path::PathBuf::from);
    if nix::unistd::geteuid().is_root() {
        let cluster = shared_cluster
            .as_ref()
            .expect("the banner says where the cluster went");
        assert!(
            cluster.starts_with("/var/lib/bulkhead/clusters"),
            "{cluster:?}"
        );
        assert!(cluster.join("data/PG_VERSION").exists());
    } else {
        assert_eq!(shared_cluster, None, "{}", first.banner);
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}:50051"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let login = bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient::new(channel)
        .login(bulkhead_proto::auth::v1::LoginRequest {
            email: "admin@bulkhead.local".into(),
            password: password.clone(),
            tenant_slug: String::new(),
        })
        .await
        .expect("the printed password logs in")
        .into_inner();
    assert_eq!(login.tenant.expect("tenant").slug, "default");
    first.stop();

    // Again: the same cluster and admin, and the password is not printed again.
    let second = start_up(work.path(), &host, &[])
        .await
        .expect("up starts again");
    assert!(!second.banner.contains(&password), "{}", second.banner);
    assert!(
        second.banner.contains("password as set before"),
        "{}",
        second.banner
    );
    second.stop();

    // A password that cannot be applied is refused, not silently ignored.
    let refused = start_up(
        work.path(),
        &host,
        &["--admin-password", "another long password"],
    )
    .await
    .err()
    .expect("up refuses to start");
    assert!(refused.contains("cannot be applied"), "{refused}");

    if let Some(cluster) = shared_cluster {
        std::fs::remove_dir_all(cluster).expect("remove the shared cluster");
    }
}

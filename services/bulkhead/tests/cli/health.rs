//! Health that tells the truth, on a private cluster this test stops and
//! starts: a service reports NOT_SERVING while its database is gone and
//! SERVING again by itself once it is back; told to stop, it reports
//! NOT_SERVING before it closes, and stops within the drain bound.

use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_postgres::{Cluster, ClusterOptions};
use bulkhead_server::{DbUrls, Peers};
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub(crate) async fn start_cluster(root: std::path::PathBuf) -> Cluster {
    tokio::task::spawn_blocking(move || Cluster::start(&root, &ClusterOptions::default()))
        .await
        .expect("join")
        .expect("postgres starts")
}

async fn status(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    health
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

async fn wait_for(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    want: ServingStatus,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if status(health, service).await == want as i32 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{service} not {want:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Tenant service alone, on a private cluster of the test's own (which
/// the test may stop, kill and start again at `root`), behind a guard that
/// trusts `tokens`.
pub(crate) struct PrivateTenant {
    /// The folder of the cluster (removed when dropped).
    pub(crate) dir: tempfile::TempDir,
    /// The cluster's data folder, to start it again.
    pub(crate) root: std::path::PathBuf,
    pub(crate) cluster: Cluster,
    /// `http://` of the service.
    pub(crate) url: String,
    pub(crate) tokens: bulkhead_testkit::Tokens,
    /// Flipped to stop the service.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    pub(crate) started: bulkhead_server::Started,
}

/// Starts a private cluster in a temporary folder named `prefix…`, makes
/// Tenant's database on it and starts Tenant.
pub(crate) async fn private_tenant(prefix: &str) -> PrivateTenant {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("temp dir");
    let root = dir.path().join("pg");
    let cluster = start_cluster(root.clone()).await;
    let kind = ServiceKind::Tenant;
    let schema = kind.schema();
    bulkhead::provision::provision(
        schema,
        &cluster.admin_url("postgres"),
        &cluster.url(&schema.owner_role(), &schema.database()),
    )
    .await
    .expect("provision");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let tokens = bulkhead_testkit::Tokens::new("tenant");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = bulkhead_server::start(
        kind.module().as_ref(),
        &DbUrls::new(
            cluster.url(&schema.app_role(), &schema.database()),
            cluster.url(&schema.platform_role(), &schema.database()),
        ),
        listener.into(),
        tokens.guard(),
        Peers::default(),
        None,
        stopped,
    )
    .await
    .expect("tenant starts");
    PrivateTenant {
        dir,
        root,
        cluster,
        url,
        tokens,
        stop,
        started,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_database_and_a_stop_says_not_serving_first() {
    let PrivateTenant {
        dir: _dir,
        root,
        cluster,
        url,
        stop,
        started,
        ..
    } = private_tenant("bulkhead-health").await;
    let kind = ServiceKind::Tenant;
    let service = kind.grpc_name();
    let mut health = HealthClient::new(bulkhead_testkit::channel(&url));
    assert_eq!(
        status(&mut health, service).await,
        ServingStatus::Serving as i32
    );

    // The database goes away: NOT_SERVING (the port still answers).
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("join")
        .expect("postgres stops");
    let down = wait_for(
        &mut health,
        service,
        ServingStatus::NotServing,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        status(&mut health, "").await,
        ServingStatus::NotServing as i32
    );
    // Liveness (what a Kubernetes liveness probe asks) does not follow the
    // database: restarting the process would not bring it back.
    assert_eq!(
        status(&mut health, bulkhead_server::LIVENESS).await,
        ServingStatus::Serving as i32
    );
    // It comes back: SERVING again, with nothing restarted.
    let _cluster = start_cluster(root).await;
    let up = wait_for(
        &mut health,
        service,
        ServingStatus::Serving,
        Duration::from_secs(20),
    )
    .await;
    println!("NOT_SERVING {down:?} after postgres stopped; SERVING {up:?} after it started");

    // Told to stop, it says NOT_SERVING to a watcher before it closes.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("ok").status;
    assert_eq!(first, ServingStatus::Serving as i32);
    let stopping = Instant::now();
    stop.send(true).expect("stop");
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a status before the stop")
        .expect("a status")
        .expect("ok")
        .status;
    assert_eq!(next, ServingStatus::NotServing as i32);
    // The watch stream itself is a call in flight: the drain bound ends it.
    tokio::time::timeout(
        bulkhead_server::health::DRAIN_TIMEOUT + Duration::from_secs(5),
        started.wait(),
    )
    .await
    .expect("stopped within the drain bound")
    .expect("stopped cleanly");
    println!("stopped {:?} after the signal", stopping.elapsed());
}

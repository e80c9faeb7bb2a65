//! The suite over TLS: every service serves its certificate and calls the
//! others over `https://`, checked against the test's CA; plaintext and
//! strangers' CAs are refused; a rotated certificate is served to new
//! connections without a restart.

use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_proto::audit::v1 as audit;
use bulkhead_server::tls::{PeerTls, ServerTls};
use bulkhead_testkit::bearer;
use bulkhead_testkit::certs::TestCa;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::support::spawn_suite_tls;

/// A health check of `port` over TLS trusting `ca` (the error, if any).
async fn check(port: u16, ca: Option<&PeerTls>) -> Result<(), String> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://localhost:{port}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5));
    if let Some(ca) = ca {
        endpoint = endpoint
            .tls_config(ca.client_config("localhost"))
            .expect("TLS client");
    }
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(drop)
        .map_err(|s| format!("{s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_runs_over_tls_and_a_rotated_certificate_is_served_without_a_restart() {
    let ca = TestCa::new("Bulkhead test CA");
    let files = ca.server("server");
    let server = ServerTls::load(&files.cert, &files.key).expect("certificate");
    let trust = PeerTls::load(&ca.ca_file()).expect("CA");
    let suite = spawn_suite_tls(server.clone(), trust.clone()).await;

    // Calls between services over TLS: Task checks the assignee with Tenant,
    // Tenant's outbox releases the leaver's task in Task, and the writers'
    // relays deliver to Audit.
    let owner = super::task::member_leaves(&suite).await;
    let mut trail =
        audit::audit_service_client::AuditServiceClient::new(suite.channel(ServiceKind::Audit));
    let started = Instant::now();
    loop {
        let events = trail
            .query_events(bearer(
                &owner,
                audit::QueryEventsRequest {
                    filter: Some(audit::AuditEventFilter {
                        action: "task.created".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await
            .expect("query over TLS")
            .into_inner()
            .events;
        if events.len() == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} of 2 task.created events reached Audit over TLS",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every port: TLS with the CA answers; plaintext and another CA do not.
    let stranger = TestCa::new("Someone else's CA");
    let stranger_trust = PeerTls::load(&stranger.ca_file()).expect("CA");
    for kind in ServiceKind::ALL {
        let port = suite.addr(kind).port();
        check(port, Some(&trust))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        let plaintext = check(port, None).await;
        assert!(plaintext.is_err(), "{} answered plaintext", kind.name());
        let strange = check(port, Some(&stranger_trust)).await;
        assert!(
            strange.is_err(),
            "{} passed another CA's check",
            kind.name()
        );
    }

    // Rotation: a certificate from another CA written over the files is
    // served to new connections once read again (serve checks every 10 s).
    let rotated = stranger.server_in(
        files.cert.parent().expect("folder"),
        files
            .cert
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name"),
    );
    assert_eq!(rotated.cert, files.cert);
    assert!(server.reload_if_changed(), "the changed files were read");
    assert!(!server.reload_if_changed(), "and only once");
    let port = suite.addr(ServiceKind::Tenant).port();
    check(port, Some(&stranger_trust))
        .await
        .expect("the rotated certificate is served");
    assert!(
        check(port, Some(&trust)).await.is_err(),
        "the old one is not"
    );
    // A certificate renewed without its key keeps the pair in use.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let unmatched = ca.server_in(elsewhere.path(), "unmatched");
    std::fs::copy(&unmatched.cert, &files.cert).expect("copy the certificate alone");
    assert!(!server.reload_if_changed(), "a certificate without its key");
    check(port, Some(&stranger_trust))
        .await
        .expect("still the last good pair");
    // A half-written rotation keeps the certificate in use.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ntruncated").expect("write");
    assert!(!server.reload_if_changed());
    check(port, Some(&stranger_trust))
        .await
        .expect("still the last good certificate");
}

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

/// A member leaves (Task checks the assignee with Tenant, Tenant's outbox
/// releases the leaver's task in Task) and both `task.created` events reach
/// Audit through the relays within 10 s: service calls of every kind work.
/// Returns the owner's access token.
async fn calls_between_services_reach_audit(suite: &super::support::TestSuite) -> String {
    let owner = super::task::member_leaves(suite).await;
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
    owner
}

/// The call failed in the transport (a refused handshake, a connection the
/// other side closed: worded by timing), not with an answer of the server.
fn assert_failed_in_transport(status: &tonic::Status) {
    assert!(
        std::error::Error::source(status)
            .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some()),
        "the connection was refused, not answered: {status:?}"
    );
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
    calls_between_services_reach_audit(&suite).await;

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

/// Mutual TLS: with a client CA, every service binds service tokens to the
/// caller's certificate. The suite's services present one naming them and
/// call each other as before; a stolen `auth` service token is refused
/// without a certificate, with another service's, and (at the handshake)
/// with one from another CA or one not issued for clients; with auth's own
/// it is served. The client CA, and a service's own certificate, are read
/// again when their files change. Minting one is
/// bound the same way. A user needs no certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_a_service_token_needs_its_services_certificate() {
    use bulkhead_proto::tenant::v1 as tenant;
    let ca = TestCa::new("Bulkhead test CA");
    let files = ca.server("server");
    let server = ServerTls::load_with_client_ca(&files.cert, &files.key, &ca.ca_file())
        .expect("certificate");
    assert!(server.binds_service_certificates());
    let all = ca.client("suite", &["auth", "tenant", "task", "audit"]);
    let trust = PeerTls::load(&ca.ca_file()).expect("CA");
    let suite = spawn_suite_tls(
        server.clone(),
        trust
            .clone()
            .with_identity(&all.cert, &all.key)
            .expect("the suite's identity"),
    )
    .await;
    let owner = calls_between_services_reach_audit(&suite).await;

    let port = suite.addr(ServiceKind::Tenant).port();
    // ListUserMemberships is Auth's to call.
    let token = suite.service_token("auth");
    let ask = |tls: PeerTls| {
        let token = token.clone();
        async move {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
                    .expect("endpoint")
                    .tls_config(tls.client_config("localhost"))
                    .expect("TLS client")
                    .connect_lazy();
            let mut request = tonic::Request::new(tenant::ListUserMembershipsRequest {
                user_id: uuid::Uuid::now_v7().to_string(),
            });
            request.metadata_mut().insert(
                "x-service-authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
            tenant::tenant_service_client::TenantServiceClient::new(channel)
                .list_user_memberships(request)
                .await
                .map(drop)
        }
    };
    let status = ask(trust.clone()).await.expect_err("no certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "service token without its service's client certificate"
    );
    let audits = ca.client("audit-only", &["audit"]);
    let status = ask(trust
        .clone()
        .with_identity(&audits.cert, &audits.key)
        .expect("identity"))
    .await
    .expect_err("another service's certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let stranger = TestCa::new("Someone else's CA");
    let forged = stranger.client("auth", &["auth"]);
    let status = ask(trust
        .clone()
        .with_identity(&forged.cert, &forged.key)
        .expect("identity"))
    .await
    .expect_err("another CA's certificate fails the handshake");
    // TLS 1.3: the server's alert (unknown CA), or the connection it closed,
    // reaches the client as a failure of the transport (worded by timing),
    // never as an answer.
    assert_failed_in_transport(&status);
    // A certificate from the right CA, naming auth, but not issued for
    // clients (no extended key usage: a server's, say): refused too.
    let unmarked = ca.unmarked("auth-any-use", &["auth"]);
    let status = ask(trust
        .clone()
        .with_identity(&unmarked.cert, &unmarked.key)
        .expect("identity"))
    .await
    .expect_err("a certificate not issued for clients");
    assert_failed_in_transport(&status);
    let auths = ca.client("auth", &["auth"]);
    ask(trust
        .clone()
        .with_identity(&auths.cert, &auths.key)
        .expect("identity"))
    .await
    .expect("auth's token with auth's certificate");

    // Minting a service token is bound too: task's secret with no
    // certificate, or with auth's, mints nothing; with task's it does.
    let auth_port = suite.addr(ServiceKind::Auth).port();
    let mint = |tls: PeerTls| async move {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("https://localhost:{auth_port}"))
                .expect("endpoint")
                .tls_config(tls.client_config("localhost"))
                .expect("TLS client")
                .connect_lazy();
        bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient::new(channel)
            .issue_service_token(bulkhead_proto::auth::v1::IssueServiceTokenRequest {
                client_id: "task".into(),
                client_secret: super::support::TASK_CLIENT_SECRET.into(),
            })
            .await
            .map(drop)
    };
    let status = mint(trust.clone()).await.expect_err("no certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let status = mint(
        trust
            .clone()
            .with_identity(&auths.cert, &auths.key)
            .expect("identity"),
    )
    .await
    .expect_err("auth's certificate for task's secret");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let tasks = ca.client("task", &["task"]);
    mint(
        trust
            .clone()
            .with_identity(&tasks.cert, &tasks.key)
            .expect("identity"),
    )
    .await
    .expect("task's secret with task's certificate");

    // A user over TLS without a certificate.
    let channel = tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
        .expect("endpoint")
        .tls_config(trust.client_config("localhost"))
        .expect("TLS client")
        .connect_lazy();
    tenant::tenant_service_client::TenantServiceClient::new(channel)
        .list_members(bearer(&owner, tenant::ListMembersRequest::default()))
        .await
        .expect("a user without a certificate is served");

    // The client CA rotates without a restart: first the old and the new
    // CA together (both accepted), then the new one alone (the old CA's
    // certificates refused at the handshake).
    let next = TestCa::new("Next client CA");
    let next_auth = next.client("auth", &["auth"]);
    let old_identity = trust
        .clone()
        .with_identity(&auths.cert, &auths.key)
        .expect("identity");
    let new_identity = trust
        .clone()
        .with_identity(&next_auth.cert, &next_auth.key)
        .expect("identity");
    std::fs::write(ca.ca_file(), format!("{}{}", ca.ca_pem(), next.ca_pem())).expect("bundle");
    assert!(server.reload_if_changed(), "the changed CA file was read");
    ask(old_identity.clone())
        .await
        .expect("the old CA, still in the bundle");
    ask(new_identity.clone()).await.expect("the new CA");
    std::fs::write(ca.ca_file(), next.ca_pem()).expect("the new CA alone");
    assert!(server.reload_if_changed());
    let status = ask(old_identity).await.expect_err("the old CA is gone");
    assert_failed_in_transport(&status);
    ask(new_identity).await.expect("the new CA alone");

    // A service's own certificate is read again when its files change: a
    // channel made after the files were rewritten (with a certificate now
    // naming audit) presents the new one, without a restart.
    let renewed = next.client("renewed", &["auth"]);
    let peers = bulkhead_server::Peers {
        relay: super::support::fast_relay(),
        tls: Some(
            trust
                .clone()
                .with_identity(&renewed.cert, &renewed.key)
                .expect("identity"),
        ),
        ..bulkhead_server::Peers::default()
    };
    let url = format!("https://localhost:{port}");
    let ask_through = |channel: tonic::transport::Channel| {
        let token = token.clone();
        async move {
            let mut request = tonic::Request::new(tenant::ListUserMembershipsRequest {
                user_id: uuid::Uuid::now_v7().to_string(),
            });
            request.metadata_mut().insert(
                "x-service-authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
            tenant::tenant_service_client::TenantServiceClient::new(channel)
                .list_user_memberships(request)
                .await
                .map(drop)
        }
    };
    ask_through(peers.channel(&url).expect("channel"))
        .await
        .expect("the service's certificate, as read at first");
    let rewritten = next.client("renewed", &["audit"]);
    assert_eq!(rewritten.cert, renewed.cert, "the same files, rewritten");
    let status = ask_through(peers.channel(&url).expect("channel"))
        .await
        .expect_err("the rewritten certificate names audit");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "service token without its service's client certificate"
    );
}

/// A TLS server behind a certificate we trust that does not choose HTTP/2
/// (another service sharing the certificate, say) is not a peer: the
/// connection fails after the handshake, and it hears no request, so no
/// service token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_negotiate_http2_hears_no_request() {
    use tokio::io::AsyncReadExt as _;
    use tokio_stream::StreamExt as _;
    let ca = TestCa::new("Bulkhead test CA");
    let files = ca.server("not-grpc");
    let server = ServerTls::load(&files.cert, &files.key).expect("certificate");
    let mut config = (*server.server_config().expect("config")).clone();
    config.alpn_protocols.clear();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let port = listener.local_addr().expect("addr").port();
    let heard = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut incoming = bulkhead_server::tls::incoming(listener, std::sync::Arc::new(config));
    let (counted, shook) = (heard.clone(), handshakes.clone());
    tokio::spawn(async move {
        while let Some(Ok(mut stream)) = incoming.next().await {
            shook.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    counted.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let peers = bulkhead_server::Peers {
        relay: super::support::fast_relay(),
        tls: Some(PeerTls::load(&ca.ca_file()).expect("CA")),
        ..bulkhead_server::Peers::default()
    };
    let channel = peers
        .channel(&format!("https://localhost:{port}"))
        .expect("channel");
    let mut health = HealthClient::new(channel);
    let call = health.check(HealthCheckRequest {
        service: String::new(),
    });
    let status = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("refused at once, not sent to a server that will never answer")
        .expect_err("no HTTP/2, no answer");
    assert_failed_in_transport(&status);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        handshakes.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the TLS handshake itself succeeded"
    );
    assert_eq!(
        heard.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the server heard bytes of a request"
    );
}

//! The whole suite on real sockets and a real Postgres, checked from outside the
//! way an operator's grpcurl or a load balancer's probe would.

use super::support::spawn_suite;
use bulkhead::services::ServiceKind;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_prost::ProstCodec;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

/// The methods that need no token (credentials are in the request itself, or
/// they publish public keys).
const PUBLIC: [&str; 5] = [
    "/bulkhead.auth.v1.AuthService/Login",
    "/bulkhead.auth.v1.AuthService/Refresh",
    "/bulkhead.auth.v1.AuthService/GetJwks",
    "/bulkhead.auth.v1.AuthService/IssueServiceToken",
    "/bulkhead.audit.v1.AuditService/GetCheckpointKeys",
];

fn methods_of(service: &str) -> Vec<String> {
    bulkhead_proto::method_names(service)
        .into_iter()
        .map(|m| format!("/{service}/{m}"))
        .collect()
}

/// Sends an empty request to `path` (any proto message decodes from zero bytes).
async fn call_empty(
    endpoint: &str,
    path: &str,
    metadata: &[(&'static str, String)],
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel(endpoint).await);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(());
    for (key, value) in metadata {
        request
            .metadata_mut()
            .insert(*key, value.parse().expect("ascii"));
    }
    let codec: ProstCodec<(), ()> = ProstCodec::default();
    grpc.unary(request, path.parse().expect("path"), codec)
        .await
        .map(drop)
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

fn owner() -> TenantUser {
    TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::new_v7(),
        tenant_slug: "acme".into(),
        tenant_role: TenantRole::Owner,
        platform_role: PlatformRole::User,
    }
}

async fn listed_services(endpoint: &str) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel(endpoint).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection answers without a token")
        .into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

#[tokio::test]
async fn every_port_lists_its_service_health_and_reflection() {
    let suite = spawn_suite().await;
    for kind in ServiceKind::ALL {
        let mut expected: Vec<String> = kind
            .grpc_services()
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        expected.extend([
            "grpc.health.v1.Health".to_owned(),
            "grpc.reflection.v1.ServerReflection".to_owned(),
            "grpc.reflection.v1alpha.ServerReflection".to_owned(),
        ]);
        expected.sort();
        for endpoint in suite.endpoints(kind) {
            assert_eq!(
                listed_services(&endpoint).await,
                expected,
                "{} at {endpoint}",
                kind.name()
            );
        }
    }
    suite.suite.stop().await;
}

#[tokio::test]
async fn every_service_reports_serving_after_its_rls_check() {
    let suite = spawn_suite().await;
    for (kind, endpoint) in ServiceKind::ALL
        .into_iter()
        .flat_map(|kind| suite.endpoints(kind).into_iter().map(move |e| (kind, e)))
    {
        let mut health = HealthClient::new(channel(&endpoint).await);
        for service in std::iter::once("").chain(kind.grpc_services().iter().copied()) {
            let status = health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .expect("health answers without a token")
                .into_inner()
                .status;
            assert_eq!(
                status,
                ServingStatus::Serving as i32,
                "{} {service:?}",
                kind.name()
            );
        }
    }
    suite.suite.stop().await;
}

#[tokio::test]
async fn every_rpc_of_every_service_refuses_calls_without_a_token() {
    let suite = spawn_suite().await;
    for kind in ServiceKind::ALL {
        let methods: Vec<String> = kind
            .grpc_services()
            .iter()
            .flat_map(|s| methods_of(s))
            .collect();
        assert!(!methods.is_empty());
        for (path, endpoint) in methods
            .iter()
            .flat_map(|path| suite.endpoints(kind).into_iter().map(move |e| (path, e)))
        {
            let result = call_empty(&endpoint, path, &[]).await;
            if PUBLIC.contains(&path.as_str()) {
                // Public: the guard lets them through; what they answer is theirs.
                if let Err(status) = result {
                    assert_ne!(status.message(), "missing bearer token", "{path}");
                }
                continue;
            }
            let status = result.expect_err("no token, no answer");
            assert_eq!(status.code(), Code::Unauthenticated, "{path}: {status:?}");
            assert_eq!(status.message(), "missing bearer token", "{path}");
        }
    }
    suite.suite.stop().await;
}

#[tokio::test]
async fn a_valid_token_passes_the_guard_and_a_foreign_tenant_header_does_not() {
    let suite = spawn_suite().await;
    let user = owner();
    let token = suite.token(&user);
    let endpoint = suite.endpoint(ServiceKind::Tenant);
    let path = "/bulkhead.tenant.v1.TenantService/ListMembers";

    let status = call_empty(
        &endpoint,
        path,
        &[("authorization", format!("Bearer {token}"))],
    )
    .await
    .expect_err("unknown tenant");
    // The guard let the owner through; the Tenant service knows no such tenant.
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let status = call_empty(
        &endpoint,
        path,
        &[
            ("authorization", format!("Bearer {token}")),
            ("x-tenant-id", TenantId::new_v7().to_string()),
        ],
    )
    .await
    .expect_err("mismatch");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Internal RPCs are for services: an OWNER's token is not enough.
    let status = call_empty(
        &endpoint,
        "/bulkhead.tenant.v1.TenantService/ListUserMemberships",
        &[("authorization", format!("Bearer {token}"))],
    )
    .await
    .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    suite.suite.stop().await;
}

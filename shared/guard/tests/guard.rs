//! The guard through a real tonic server on a socket: every way a token can be
//! wrong is refused, and a valid one reaches the handler with exactly its identity.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bulkhead_context::{
    PlatformRole, ServiceIdentity, SessionId, TenantId, TenantRole, TenantUser, UserId,
};
use bulkhead_guard::token::{Claims, SigningKey, unix_now};
use bulkhead_guard::{
    DEFAULT_PER_MINUTE, GuardLayer, Policy, RequestContext, RequestIdLayer, RevokedSessions, Rule,
    SecurityEvent, SecurityEvents, SecurityKind, TokenVerifier, VerifierConfig,
};
use bulkhead_proto::auth::v1 as pb;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use bulkhead_proto::auth::v1::{
    CreateUserRequest, GetJwksRequest, GetJwksResponse, LogoutRequest, RevokeSessionsRequest,
    WhoAmIRequest, WhoAmIResponse,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

const AUTH: &str = "bulkhead.auth.v1.AuthService";
const ISSUER: &str = "bulkhead-auth";
const AUDIENCE: &str = "bulkhead";

/// Echoes the context the guard built.
struct EchoAuth;

#[tonic::async_trait]
impl AuthService for EchoAuth {
    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        Ok(Response::new(WhoAmIResponse {
            user_id: user.user_id.to_string(),
            tenant_id: user.tenant_id.to_string(),
            tenant_slug: user.tenant_slug.clone(),
            session_id: user.session_id.to_string(),
            email: ctx.request_id().to_string(),
            ..Default::default()
        }))
    }

    async fn get_jwks(
        &self,
        request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        // Public: the guard attaches no context.
        assert!(RequestContext::from_request(&request).is_err());
        Ok(Response::new(GetJwksResponse::default()))
    }

    // The rest is not part of this test server: the guard's refusals come first,
    // and a call it lets through lands here.
    async fn login(&self, _: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        absent()
    }
    async fn refresh(&self, _: Request<pb::RefreshRequest>) -> Reply<pb::RefreshResponse> {
        absent()
    }
    async fn switch_tenant(
        &self,
        _: Request<pb::SwitchTenantRequest>,
    ) -> Reply<pb::SwitchTenantResponse> {
        absent()
    }
    async fn logout(&self, _: Request<LogoutRequest>) -> Reply<pb::LogoutResponse> {
        absent()
    }
    async fn create_user(&self, _: Request<CreateUserRequest>) -> Reply<pb::CreateUserResponse> {
        absent()
    }
    async fn change_password(
        &self,
        _: Request<pb::ChangePasswordRequest>,
    ) -> Reply<pb::ChangePasswordResponse> {
        absent()
    }
    async fn issue_service_token(
        &self,
        _: Request<pb::IssueServiceTokenRequest>,
    ) -> Reply<pb::IssueServiceTokenResponse> {
        absent()
    }
    async fn revoke_sessions(
        &self,
        _: Request<RevokeSessionsRequest>,
    ) -> Reply<pb::RevokeSessionsResponse> {
        absent()
    }
    type WatchRevocationsStream = tokio_stream::Empty<Result<pb::WatchRevocationsResponse, Status>>;
    async fn watch_revocations(
        &self,
        _: Request<pb::WatchRevocationsRequest>,
    ) -> Reply<Self::WatchRevocationsStream> {
        absent()
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn absent<T>() -> Reply<T> {
    Err(Status::unimplemented("not part of this test server"))
}

fn policy() -> Policy {
    // Logout is deliberately missing: a method not in the table is denied.
    Policy::new()
        .allow(AUTH, "WhoAmI", Rule::tenant_role(TenantRole::Viewer))
        .allow(
            AUTH,
            "CreateUser",
            Rule::tenant_role(TenantRole::Admin).or_super_admin(),
        )
        .allow(AUTH, "Login", Rule::public())
        .allow(AUTH, "GetJwks", Rule::public().or_any_service())
        .allow(AUTH, "RevokeSessions", Rule::service())
}

struct Harness {
    key: SigningKey,
    revoked: RevokedSessions,
    inactive: bulkhead_guard::InactiveTenants,
    client: AuthServiceClient<Channel>,
    channel: Channel,
    security: tokio::sync::mpsc::Receiver<SecurityEvent>,
}

async fn harness() -> Harness {
    harness_with(None).await
}

async fn harness_with(fairness: Option<bulkhead_guard::Fairness>) -> Harness {
    harness_verifying(fairness, VerifierConfig::default()).await
}

async fn harness_verifying(
    fairness: Option<bulkhead_guard::Fairness>,
    config: VerifierConfig,
) -> Harness {
    let key = SigningKey::generate();
    let verifier = Arc::new(TokenVerifier::new(config, &key.jwk_set()));
    let revoked = RevokedSessions::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let (events, security) = SecurityEvents::channel(DEFAULT_PER_MINUTE);
    let inactive = bulkhead_guard::InactiveTenants::default();
    let mut guard = GuardLayer::new(verifier, policy(), revoked.clone())
        .with_security_events(events)
        .with_inactive_tenants(inactive.clone());
    if let Some(fairness) = fairness {
        guard = guard.with_fairness(fairness);
    }
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(RequestIdLayer)
            .layer(guard)
            .add_service(health)
            .add_service(AuthServiceServer::new(EchoAuth))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("server");
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    Harness {
        key,
        revoked,
        inactive,
        client: AuthServiceClient::new(channel.clone()),
        channel,
        security,
    }
}

fn alice(role: TenantRole) -> TenantUser {
    TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::new_v7(),
        tenant_slug: "acme".into(),
        tenant_role: role,
        platform_role: PlatformRole::User,
    }
}

fn claims(user: &TenantUser) -> Claims {
    Claims::access(ISSUER, AUDIENCE, user, Duration::from_secs(900))
}

fn with_header<T>(message: T, key: &'static str, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(key, value.parse().expect("ascii metadata"));
    request
}

fn bearer(token: &str) -> Request<WhoAmIRequest> {
    with_header(
        WhoAmIRequest {},
        "authorization",
        &format!("Bearer {token}"),
    )
}

/// Every refusal's message comes from this fixed set: no keys, claims or stacks.
fn assert_refused(result: Result<Response<WhoAmIResponse>, Status>, code: Code) {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    let safe = [
        "missing bearer token",
        "invalid token",
        "token too large",
        "token expired or not yet valid",
        "session revoked",
        "wrong kind of token",
        "tenant mismatch",
        "method not allowed",
        "permission denied",
        "tenant inactive",
    ];
    assert!(
        safe.contains(&status.message()),
        "unsafe message: {:?}",
        status.message()
    );
}

fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("recorder")
    })
}

fn mismatch_count() -> u64 {
    prometheus()
        .render()
        .lines()
        .find(|l| l.starts_with("tenant_mismatch_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn valid_token_reaches_the_handler_with_exactly_its_identity() {
    let mut h = harness().await;
    let user = alice(TenantRole::Viewer);
    let token = h.key.sign(&claims(&user)).expect("sign");
    let mut request = bearer(&token);
    request
        .metadata_mut()
        .insert("x-request-id", "req-123".parse().expect("ascii"));
    let response = h.client.who_am_i(request).await.expect("allowed");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().expect("ascii")),
        Some("req-123"),
        "the request id is echoed"
    );
    let body = response.into_inner();
    assert_eq!(body.user_id, user.user_id.to_string());
    assert_eq!(body.tenant_id, user.tenant_id.to_string());
    assert_eq!(body.session_id, user.session_id.to_string());
    assert_eq!(body.tenant_slug, "acme");
    assert_eq!(
        body.email, "req-123",
        "the handler sees the same request id"
    );

    // Cached on the second call: still exactly the same identity.
    let again = h.client.who_am_i(bearer(&token)).await.expect("allowed");
    assert_eq!(again.get_ref().user_id, user.user_id.to_string());
    let generated = again.metadata().get("x-request-id").expect("generated id");
    assert_eq!(generated.len(), 36, "a generated UUID when none was sent");
}

#[tokio::test]
async fn invalid_request_ids_are_replaced() {
    let mut h = harness().await;
    let token = h
        .key
        .sign(&claims(&alice(TenantRole::Viewer)))
        .expect("sign");
    let mut request = bearer(&token);
    request
        .metadata_mut()
        .insert("x-request-id", "bad id with spaces".parse().expect("ascii"));
    let response = h.client.who_am_i(request).await.expect("allowed");
    let echoed = response
        .metadata()
        .get("x-request-id")
        .expect("id")
        .to_str()
        .expect("ascii");
    assert_ne!(echoed, "bad id with spaces");
    assert_eq!(echoed, response.get_ref().email);
}

#[tokio::test]
async fn missing_and_malformed_tokens_are_unauthenticated() {
    let mut h = harness().await;
    assert_refused(
        h.client.who_am_i(WhoAmIRequest {}).await,
        Code::Unauthenticated,
    );
    assert_refused(
        h.client.who_am_i(bearer("garbage")).await,
        Code::Unauthenticated,
    );
    assert_refused(
        h.client.who_am_i(bearer("a.b.c")).await,
        Code::Unauthenticated,
    );
    let token = h
        .key
        .sign(&claims(&alice(TenantRole::Viewer)))
        .expect("sign");
    let not_bearer = with_header(WhoAmIRequest {}, "authorization", &format!("Basic {token}"));
    assert_refused(h.client.who_am_i(not_bearer).await, Code::Unauthenticated);
}

#[tokio::test]
async fn a_token_with_one_byte_changed_is_refused() {
    let mut h = harness().await;
    let token = h
        .key
        .sign(&claims(&alice(TenantRole::Viewer)))
        .expect("sign");
    let parts: Vec<&str> = token.split('.').collect();
    // Change one byte of the payload (a different tenant slug, say) and of the signature.
    let mut payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("payload");
    let at = payload.len() / 2;
    payload[at] ^= 0x01;
    let forged_payload = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(&payload),
        parts[2]
    );
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    signature[0] ^= 0x01;
    let forged_signature = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(&signature)
    );
    for forged in [forged_payload, forged_signature] {
        assert_refused(
            h.client.who_am_i(bearer(&forged)).await,
            Code::Unauthenticated,
        );
    }
}

#[tokio::test]
async fn alg_none_and_hs256_key_confusion_are_refused() {
    let mut h = harness().await;
    let user = alice(TenantRole::Owner);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&user)).expect("json"));
    let none_header = URL_SAFE_NO_PAD
        .encode(serde_json::json!({"alg": "none", "typ": "JWT", "kid": h.key.kid()}).to_string());
    for unsigned in [
        format!("{none_header}.{body}."),
        format!("{none_header}.{body}"),
    ] {
        assert_refused(
            h.client.who_am_i(bearer(&unsigned)).await,
            Code::Unauthenticated,
        );
    }

    // HS256 "signed" with the public key, as raw bytes and as its JWK text.
    let jwk = h.key.public_jwk();
    let x = jwk["x"].as_str().expect("x").to_owned();
    let raw = URL_SAFE_NO_PAD.decode(&x).expect("raw public key");
    for secret in [raw, x.into_bytes()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(h.key.kid().to_owned());
        let confused = jsonwebtoken::encode(
            &header,
            &claims(&user),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("hs256");
        assert_refused(
            h.client.who_am_i(bearer(&confused)).await,
            Code::Unauthenticated,
        );
    }
}

#[tokio::test]
async fn expired_not_yet_valid_and_foreign_tokens_are_refused() {
    let mut h = harness().await;
    let user = alice(TenantRole::Viewer);
    let now = unix_now();

    let mut expired = claims(&user);
    expired.iat = now - 7200;
    expired.nbf = now - 7200;
    expired.exp = now - 3600;
    let mut early = claims(&user);
    early.nbf = now + 3600;
    early.exp = now + 7200;
    let mut wrong_iss = claims(&user);
    wrong_iss.iss = "someone-else".into();
    let mut wrong_aud = claims(&user);
    wrong_aud.aud = "another-product".into();
    for bad in [expired, early, wrong_iss, wrong_aud] {
        let token = h.key.sign(&bad).expect("sign");
        assert_refused(
            h.client.who_am_i(bearer(&token)).await,
            Code::Unauthenticated,
        );
    }

    // Signed by a key the verifier does not know (unknown kid).
    let stranger = SigningKey::generate();
    let token = stranger.sign(&claims(&user)).expect("sign");
    assert_refused(
        h.client.who_am_i(bearer(&token)).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn a_token_minted_to_live_over_an_hour_is_refused_whatever_its_signature() {
    let mut h = harness().await;
    let user = alice(TenantRole::Viewer);
    let now = unix_now();
    let mut long = claims(&user);
    long.iat = now;
    long.nbf = now;
    long.exp = now + 3600 + 60;
    let token = h.key.sign(&long).expect("sign");
    let status = h
        .client
        .who_am_i(bearer(&token))
        .await
        .expect_err("over the lifetime cap");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "invalid token");
    // A chosen `iat` does not stretch it: far in the future, or at `exp`.
    let mut late_iat = claims(&user);
    late_iat.iat = now + 365 * 86_400;
    late_iat.nbf = now;
    late_iat.exp = now + 365 * 86_400 + 1800;
    let mut iat_at_exp = claims(&user);
    iat_at_exp.iat = now + 365 * 86_400;
    iat_at_exp.exp = now + 365 * 86_400;
    let mut max_iat = claims(&user);
    max_iat.iat = u64::MAX;
    max_iat.exp = u64::MAX;
    for forged in [late_iat, iat_at_exp, max_iat] {
        let token = h.key.sign(&forged).expect("sign");
        assert_refused(
            h.client.who_am_i(bearer(&token)).await,
            Code::Unauthenticated,
        );
    }
    // Just under the cap: accepted.
    let mut hour = claims(&user);
    hour.iat = now;
    hour.nbf = now;
    hour.exp = now + 3600;
    let token = h.key.sign(&hour).expect("sign");
    h.client
        .who_am_i(bearer(&token))
        .await
        .expect("an hour is the cap");
}

#[tokio::test]
async fn oversize_tokens_are_refused_before_parsing() {
    let mut h = harness().await;
    let mut user = alice(TenantRole::Viewer);
    user.tenant_slug = "x".repeat(6000);
    let token = h.key.sign(&claims(&user)).expect("sign");
    assert!(token.len() > 4096);
    assert_refused(
        h.client.who_am_i(bearer(&token)).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn tenant_header_mismatch_is_denied_and_counted() {
    let mut h = harness().await;
    let user = alice(TenantRole::Owner);
    let token = h.key.sign(&claims(&user)).expect("sign");

    let mut matching = bearer(&token);
    matching.metadata_mut().insert(
        "x-tenant-id",
        user.tenant_id.to_string().parse().expect("ascii"),
    );
    h.client
        .who_am_i(matching)
        .await
        .expect("the token's own tenant is fine");

    let before = mismatch_count();
    for asserted in [TenantId::new_v7().to_string(), "not-a-uuid".to_owned()] {
        let mut request = bearer(&token);
        request
            .metadata_mut()
            .insert("x-tenant-id", asserted.parse().expect("ascii"));
        assert_refused(h.client.who_am_i(request).await, Code::PermissionDenied);
    }
    assert!(
        mismatch_count() >= before + 2,
        "tenant_mismatch_total must count both attempts"
    );

    // Sent twice, the tenant header asserts nothing certain: refused and
    // counted, whether the second names another tenant or the same one.
    let before = mismatch_count();
    for second in [TenantId::new_v7().to_string(), user.tenant_id.to_string()] {
        let mut request = bearer(&token);
        request.metadata_mut().insert(
            "x-tenant-id",
            user.tenant_id.to_string().parse().expect("ascii"),
        );
        request
            .metadata_mut()
            .append("x-tenant-id", second.parse().expect("ascii"));
        assert_refused(h.client.who_am_i(request).await, Code::PermissionDenied);
    }
    assert!(
        mismatch_count() >= before + 2,
        "tenant_mismatch_total must count both"
    );
}

/// Two bearer tokens of one kind: which counts would be up to the reader.
/// Refused, whichever comes first.
#[tokio::test]
async fn identity_metadata_sent_twice_is_refused() {
    let mut h = harness().await;
    let alice_token = h
        .key
        .sign(&claims(&alice(TenantRole::Viewer)))
        .expect("sign");
    let other = h
        .key
        .sign(&claims(&alice(TenantRole::Owner)))
        .expect("sign");
    for header in ["authorization", "x-service-authorization"] {
        let mut request = bearer(&alice_token);
        request.metadata_mut().remove("authorization");
        request.metadata_mut().insert(
            header,
            format!("Bearer {alice_token}").parse().expect("ascii"),
        );
        request
            .metadata_mut()
            .append(header, format!("Bearer {other}").parse().expect("ascii"));
        let status = h.client.who_am_i(request).await.expect_err("ambiguous");
        assert_eq!(status.code(), Code::Unauthenticated, "{header}: {status:?}");
        assert_eq!(status.message(), "identity metadata sent more than once");
    }
}

#[tokio::test]
async fn methods_missing_from_the_policy_and_low_roles_are_denied() {
    let mut h = harness().await;
    let viewer = h
        .key
        .sign(&claims(&alice(TenantRole::Viewer)))
        .expect("sign");
    let status = h
        .client
        .logout(with_header(
            LogoutRequest::default(),
            "authorization",
            &format!("Bearer {viewer}"),
        ))
        .await
        .expect_err("Logout is not in the table");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "method not allowed");

    let status = h
        .client
        .create_user(with_header(
            CreateUserRequest::default(),
            "authorization",
            &format!("Bearer {viewer}"),
        ))
        .await
        .expect_err("a VIEWER cannot create users");
    assert_eq!(status.code(), Code::PermissionDenied);

    // An ADMIN passes the guard and reaches the (unimplemented) handler.
    let admin = h
        .key
        .sign(&claims(&alice(TenantRole::Admin)))
        .expect("sign");
    let status = h
        .client
        .create_user(with_header(
            CreateUserRequest::default(),
            "authorization",
            &format!("Bearer {admin}"),
        ))
        .await
        .expect_err("stub");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn service_tokens_only_where_the_table_allows_services() {
    let mut h = harness().await;
    let service = ServiceIdentity {
        name: "tenant".into(),
        scopes: vec!["auth.revoke".into()],
    };
    let service_token = h
        .key
        .sign(&Claims::service(
            ISSUER,
            AUDIENCE,
            &service,
            Duration::from_secs(300),
        ))
        .expect("sign");
    let user_token = h
        .key
        .sign(&claims(&alice(TenantRole::Owner)))
        .expect("sign");

    let status = h
        .client
        .revoke_sessions(with_header(
            RevokeSessionsRequest::default(),
            "x-service-authorization",
            &format!("Bearer {service_token}"),
        ))
        .await
        .expect_err("stub");
    assert_eq!(
        status.code(),
        Code::Unimplemented,
        "the service passed the guard"
    );

    let status = h
        .client
        .revoke_sessions(with_header(
            RevokeSessionsRequest::default(),
            "authorization",
            &format!("Bearer {user_token}"),
        ))
        .await
        .expect_err("users may not call internal RPCs");
    assert_eq!(status.code(), Code::PermissionDenied);

    // A token of the wrong kind in either header is refused.
    assert_refused(
        h.client.who_am_i(bearer(&service_token)).await,
        Code::Unauthenticated,
    );
    let swapped = with_header(
        RevokeSessionsRequest::default(),
        "x-service-authorization",
        &format!("Bearer {user_token}"),
    );
    let status = h
        .client
        .revoke_sessions(swapped)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn revoked_sessions_are_refused_even_when_cached() {
    let mut h = harness().await;
    let user = alice(TenantRole::Member);
    let token = h.key.sign(&claims(&user)).expect("sign");
    h.client
        .who_am_i(bearer(&token))
        .await
        .expect("valid first");
    h.revoked.revoke(
        user.session_id,
        std::time::SystemTime::now() + Duration::from_secs(900),
    );
    assert_refused(
        h.client.who_am_i(bearer(&token)).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn public_methods_need_no_token_and_get_no_context() {
    let mut h = harness().await;
    h.client
        .get_jwks(GetJwksRequest {})
        .await
        .expect("public method");
}

/// Every event the guard reported so far.
fn reported(h: &mut Harness) -> Vec<SecurityEvent> {
    std::iter::from_fn(|| h.security.try_recv().ok()).collect()
}

/// Refusals of callers whose token was good (a role too low, a method not in
/// the table, another tenant asserted) are handed to the service as security
/// events, a few per principal per minute; a caller without a valid token
/// leaves none.
#[tokio::test]
async fn refusals_of_known_callers_become_security_events_limited_per_principal() {
    let mut h = harness().await;
    let viewer = alice(TenantRole::Viewer);
    let token = h.key.sign(&claims(&viewer)).expect("sign");
    let auth = format!("Bearer {token}");
    let as_viewer = |m: CreateUserRequest| with_header(m, "authorization", &auth);

    assert_refused(
        h.client.who_am_i(Request::new(WhoAmIRequest {})).await,
        Code::Unauthenticated,
    );
    assert_refused(
        h.client.who_am_i(bearer("forged")).await,
        Code::Unauthenticated,
    );
    h.client
        .who_am_i(bearer(&token))
        .await
        .expect("allowed: no event");
    let denied = h
        .client
        .create_user(as_viewer(CreateUserRequest::default()))
        .await;
    assert_eq!(denied.expect_err("viewer").code(), Code::PermissionDenied);
    let missing = h
        .client
        .logout(with_header(
            LogoutRequest::default(),
            "authorization",
            &auth,
        ))
        .await;
    assert_eq!(
        missing.expect_err("not in the table").code(),
        Code::PermissionDenied
    );
    let other = TenantId::new_v7().to_string();
    let mut mismatched = bearer(&token);
    mismatched
        .metadata_mut()
        .insert("x-tenant-id", other.parse().expect("ascii"));
    assert_refused(h.client.who_am_i(mismatched).await, Code::PermissionDenied);

    let events = reported(&mut h);
    let seen: Vec<(SecurityKind, &str, Option<&str>)> = events
        .iter()
        .map(|e| (e.kind, e.method.as_str(), e.asserted_tenant.as_deref()))
        .collect();
    // A method not in the table is recorded by a digest of its path: what the
    // caller sent is never copied into the trail.
    assert_eq!(
        seen,
        vec![
            (
                SecurityKind::PermissionDenied,
                "/bulkhead.auth.v1.AuthService/CreateUser",
                None
            ),
            (
                SecurityKind::PermissionDenied,
                "unknown method, sha256 db043be3de6f4969",
                None
            ),
            (
                SecurityKind::TenantMismatch,
                "/bulkhead.auth.v1.AuthService/WhoAmI",
                Some(other.as_str())
            ),
        ]
    );
    for event in &events {
        assert_eq!(
            event.principal.user().map(|u| u.user_id),
            Some(viewer.user_id)
        );
        assert!(!event.request_id.is_empty(), "the request id is carried");
    }

    // A flood from one principal: only the rest of its allowance is reported.
    for _ in 0..30 {
        let denied = h
            .client
            .create_user(as_viewer(CreateUserRequest::default()))
            .await;
        assert_eq!(denied.expect_err("viewer").code(), Code::PermissionDenied);
    }
    let flood = reported(&mut h);
    assert_eq!(flood.len(), DEFAULT_PER_MINUTE as usize - 3);
    // The next one let through (a minute's tenth later) says how many were left out.
    tokio::time::sleep(Duration::from_millis(6_100)).await;
    let denied = h
        .client
        .create_user(as_viewer(CreateUserRequest::default()))
        .await;
    assert_eq!(denied.expect_err("viewer").code(), Code::PermissionDenied);
    let after = reported(&mut h);
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].suppressed_before,
        30 - (DEFAULT_PER_MINUTE as u64 - 3)
    );
    // Another principal is not held back by it.
    let other_viewer = h
        .key
        .sign(&claims(&alice(TenantRole::Viewer)))
        .expect("sign");
    let denied = h
        .client
        .create_user(with_header(
            CreateUserRequest::default(),
            "authorization",
            &format!("Bearer {other_viewer}"),
        ))
        .await;
    assert_eq!(denied.expect_err("viewer").code(), Code::PermissionDenied);
    assert_eq!(reported(&mut h).len(), 1);
}

/// A server at its limit sheds public RPCs (Login, GetJwks) like any call,
/// with a wait to retry after, but its health service still answers: a
/// probe must see a loaded server, not a dead one.
#[tokio::test]
async fn a_loaded_server_sheds_public_rpcs_but_answers_its_health_checks() {
    let fairness = bulkhead_guard::Fairness::new(bulkhead_guard::FairnessConfig {
        max_in_flight: 1,
        service_reserve: 0,
        ..bulkhead_guard::FairnessConfig::for_pool(16)
    });
    let mut h = harness_with(Some(fairness.clone())).await;
    let held = fairness
        .admit(bulkhead_guard::Who::Service)
        .await
        .expect("the only place");
    let status = h
        .client
        .get_jwks(GetJwksRequest::default())
        .await
        .expect_err("shed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert!(details.retry_info().is_some(), "with a wait: {status:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(h.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers under load");
    drop(held);
    h.client
        .get_jwks(GetJwksRequest::default())
        .await
        .expect("room again");
}

/// A service keeping up its key set (GetJwks) with its valid service token
/// is not shed with an anonymous flood of public calls: its call counts as
/// the service's. Without a token, or with a user's token or a forged one in
/// its place, the same call is public, and shed while the public share is
/// full.
#[tokio::test]
async fn a_services_call_to_a_public_method_is_not_shed_with_an_anonymous_flood() {
    let fairness = bulkhead_guard::Fairness::new(bulkhead_guard::FairnessConfig {
        public_in_flight: 1,
        ..bulkhead_guard::FairnessConfig::for_pool(16)
    });
    let mut h = harness_with(Some(fairness.clone())).await;
    let held = fairness
        .admit(bulkhead_guard::Who::Public)
        .await
        .expect("the public share");
    let service = ServiceIdentity {
        name: "task".into(),
        scopes: Vec::new(),
    };
    let service_claims = Claims::service(ISSUER, AUDIENCE, &service, Duration::from_secs(300));
    let service_token = h.key.sign(&service_claims).expect("sign");
    let user_token = h
        .key
        .sign(&claims(&alice(TenantRole::Owner)))
        .expect("sign");
    let forged = SigningKey::generate().sign(&service_claims).expect("sign");
    for (what, token) in [
        ("no token", None),
        ("a user's token", Some(&user_token)),
        ("a forged service token", Some(&forged)),
    ] {
        let request = match token {
            Some(token) => with_header(
                GetJwksRequest::default(),
                "x-service-authorization",
                &format!("Bearer {token}"),
            ),
            None => Request::new(GetJwksRequest::default()),
        };
        let status = h.client.get_jwks(request).await.expect_err("shed");
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    }
    h.client
        .get_jwks(with_header(
            GetJwksRequest::default(),
            "x-service-authorization",
            &format!("Bearer {service_token}"),
        ))
        .await
        .expect("a service's call is not the flood's");
    // Two service tokens, even both valid, are ambiguous: public.
    let mut twice = with_header(
        GetJwksRequest::default(),
        "x-service-authorization",
        &format!("Bearer {service_token}"),
    );
    twice.metadata_mut().append(
        "x-service-authorization",
        format!("Bearer {service_token}").parse().expect("ascii"),
    );
    let status = h.client.get_jwks(twice).await.expect_err("shed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // A token alongside a user's header is ambiguous: public.
    let mut both = with_header(
        GetJwksRequest::default(),
        "x-service-authorization",
        &format!("Bearer {service_token}"),
    );
    both.metadata_mut().insert(
        "authorization",
        format!("Bearer {user_token}").parse().expect("ascii"),
    );
    let status = h.client.get_jwks(both).await.expect_err("shed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Login is public and no service keeps it up: a service's token does
    // not take it out of the public share.
    let status = h
        .client
        .login(with_header(
            pb::LoginRequest::default(),
            "x-service-authorization",
            &format!("Bearer {service_token}"),
        ))
        .await
        .expect_err("shed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop(held);
    let status = h
        .client
        .login(pb::LoginRequest::default())
        .await
        .expect_err("this server answers no Login");
    assert_eq!(
        status.code(),
        Code::Unimplemented,
        "served once there is room"
    );
}

/// A call that waited for one of its tenant's places is checked again once
/// out of the queue (as its handler takes the context): a session revoked, or
/// a tenant deactivated, while it waited is refused as it would have been on
/// arrival; a call that nothing happened to is served.
#[tokio::test]
async fn calls_revoked_or_deactivated_while_queued_are_refused() {
    let fairness = one_place_each();
    let h = harness_with(Some(fairness.clone())).await;
    let revoked_user = alice(TenantRole::Member);
    let deactivated_user = alice(TenantRole::Member);
    let untouched_user = alice(TenantRole::Member);
    for (user, change, expected) in [
        (&revoked_user, "revoked", Some(Code::Unauthenticated)),
        (
            &deactivated_user,
            "deactivated",
            Some(Code::FailedPrecondition),
        ),
        (&untouched_user, "nothing", None),
    ] {
        let tenant = user.tenant_id;
        let token = h.key.sign(&claims(user)).expect("sign");
        let held = fairness
            .admit(bulkhead_guard::Who::Tenant(tenant))
            .await
            .expect("the tenant's only place");
        let mut client = h.client.clone();
        let queued = tokio::spawn(async move { client.who_am_i(bearer(&token)).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while fairness.queued(tenant) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the call never queued"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match change {
            "revoked" => h.revoked.revoke(
                user.session_id,
                std::time::SystemTime::now() + Duration::from_secs(900),
            ),
            "deactivated" => h.inactive.set(tenant, false),
            _ => {}
        }
        drop(held);
        let answer = queued.await.expect("task");
        match expected {
            Some(code) => assert_refused(answer, code),
            None => {
                let me = answer.expect("served after its wait").into_inner();
                assert_eq!(me.user_id, user.user_id.to_string(), "{change}");
            }
        }
    }
}

/// A WhoAmI call whose headers went out at once, its message held back until
/// it is released; made only once the guard has let it in (it holds its
/// tenant's only place).
struct HeldBackCall {
    release: tokio::sync::oneshot::Sender<()>,
    answer: tokio::task::JoinHandle<Result<Response<WhoAmIResponse>, Status>>,
}

impl HeldBackCall {
    async fn start(
        h: &Harness,
        fairness: &bulkhead_guard::Fairness,
        token: &str,
        tenant: TenantId,
    ) -> Self {
        Self::start_with(h, fairness, &[("authorization", token)], tenant).await
    }

    /// As [`HeldBackCall::start`], with these bearer tokens (by header).
    async fn start_with(
        h: &Harness,
        fairness: &bulkhead_guard::Fairness,
        tokens: &[(&'static str, &str)],
        tenant: TenantId,
    ) -> Self {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let message = futures_util::stream::once(async move {
            let _ = released.await;
            WhoAmIRequest::default()
        });
        let mut request = Request::new(message);
        for (header, token) in tokens {
            request
                .metadata_mut()
                .insert(*header, format!("Bearer {token}").parse().expect("ascii"));
        }
        let mut grpc = tonic::client::Grpc::new(h.channel.clone());
        let answer = tokio::spawn(async move {
            grpc.ready().await.expect("ready");
            grpc.client_streaming(
                request,
                http::uri::PathAndQuery::from_static("/bulkhead.auth.v1.AuthService/WhoAmI"),
                tonic_prost::ProstCodec::<WhoAmIRequest, WhoAmIResponse>::default(),
            )
            .await
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while place_free(fairness, tenant) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the held call never took its place"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self { release, answer }
    }

    /// Sends the message; the answer.
    async fn release(self) -> Result<Response<WhoAmIResponse>, Status> {
        self.release
            .send(())
            .expect("the call waits for its message");
        tokio::time::timeout(Duration::from_secs(10), self.answer)
            .await
            .expect("answered")
            .expect("task")
    }
}

/// Whether `tenant` has a place free now.
fn place_free(fairness: &bulkhead_guard::Fairness, tenant: TenantId) -> bool {
    futures_util::FutureExt::now_or_never(fairness.admit(bulkhead_guard::Who::Tenant(tenant)))
        .is_some_and(|admitted| admitted.is_ok())
}

fn one_place_each() -> bulkhead_guard::Fairness {
    bulkhead_guard::Fairness::new(bulkhead_guard::FairnessConfig {
        tenant_concurrency: 1,
        ..bulkhead_guard::FairnessConfig::for_pool(16)
    })
}

/// The guard checks a call when its headers arrive; its message may come
/// much later (a caller may hold it back up to the handler timeout). The
/// handler, taking the context once the message is there, checks again: a
/// session revoked in between is refused, and a call nothing happened to is
/// served.
#[tokio::test]
async fn a_session_revoked_while_its_call_holds_back_its_message_is_refused() {
    let fairness = one_place_each();
    let h = harness_with(Some(fairness.clone())).await;
    for revoke in [true, false] {
        let user = alice(TenantRole::Member);
        let token = h.key.sign(&claims(&user)).expect("sign");
        let call = HeldBackCall::start(&h, &fairness, &token, user.tenant_id).await;
        if revoke {
            h.revoked.revoke(
                user.session_id,
                std::time::SystemTime::now() + Duration::from_secs(900),
            );
        }
        let answer = call.release().await;
        if revoke {
            assert_refused(answer, Code::Unauthenticated);
        } else {
            let me = answer.expect("served").into_inner();
            assert_eq!(me.user_id, user.user_id.to_string());
        }
        // The place is given back either way.
        assert!(
            place_free(&fairness, user.tenant_id),
            "the call's place is free again"
        );
    }
}

/// A call is served only while its token is valid: one whose token expires
/// while it holds back its message is refused (here with no leeway, a token
/// of 2 s), as a stream is once its token expires (`still_stands`). With a
/// user's and a service's token, the earlier expiry counts.
#[tokio::test]
async fn a_token_that_expires_while_its_call_holds_back_its_message_is_refused() {
    let fairness = one_place_each();
    let h = harness_verifying(
        Some(fairness.clone()),
        VerifierConfig {
            leeway: Duration::ZERO,
            ..VerifierConfig::default()
        },
    )
    .await;
    for with_service in [false, true] {
        let user = alice(TenantRole::Member);
        let (user_lifetime, service_lifetime) = if with_service {
            (Duration::from_secs(900), Duration::from_secs(2))
        } else {
            (Duration::from_secs(2), Duration::from_secs(900))
        };
        let user_claims = Claims::access(ISSUER, AUDIENCE, &user, user_lifetime);
        let service_claims = Claims::service(
            ISSUER,
            AUDIENCE,
            &ServiceIdentity {
                name: "task".into(),
                scopes: vec![],
            },
            service_lifetime,
        );
        let expires =
            std::time::UNIX_EPOCH + Duration::from_secs(user_claims.exp.min(service_claims.exp));
        let user_token = h.key.sign(&user_claims).expect("sign");
        let service_token = h.key.sign(&service_claims).expect("sign");
        let mut tokens = vec![("authorization", user_token.as_str())];
        if with_service {
            tokens.push(("x-service-authorization", service_token.as_str()));
        }
        let call = HeldBackCall::start_with(&h, &fairness, &tokens, user.tenant_id).await;
        while std::time::SystemTime::now() <= expires + Duration::from_millis(50) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = call
            .release()
            .await
            .expect_err("expired before its message came");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(status.message(), "token expired or not yet valid");
        assert!(
            place_free(&fairness, user.tenant_id),
            "the call's place is free again"
        );
    }
}

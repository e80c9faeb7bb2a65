//! The guard's reading of identity metadata on arbitrary headers, through
//! the real tower layer and the Task service's policy: never a panic, and a
//! call reaches the service only with one valid bearer token.
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::token::{Claims, SigningKey};
use bulkhead_guard::{GuardLayer, RevokedSessions, TokenVerifier, VerifierConfig};
use libfuzzer_sys::fuzz_target;
use tower::{Layer as _, ServiceExt as _};

static REACHED: AtomicUsize = AtomicUsize::new(0);

struct World {
    runtime: tokio::runtime::Runtime,
    guard: GuardLayer,
    token: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let key = SigningKey::generate();
        let config = VerifierConfig::default();
        let user = TenantUser {
            user_id: UserId::new_v7(),
            session_id: SessionId::new_v7(),
            tenant_id: TenantId::new_v7(),
            tenant_slug: "acme".into(),
            tenant_role: TenantRole::Owner,
            platform_role: PlatformRole::User,
        };
        let token = key
            .sign(&Claims::access(
                &config.issuer,
                &config.audience,
                &user,
                Duration::from_secs(3600),
            ))
            .expect("sign");
        let verifier = std::sync::Arc::new(TokenVerifier::new(config, &key.jwk_set()));
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            guard: GuardLayer::new(
                verifier,
                bulkhead_task::policy(),
                RevokedSessions::default(),
            ),
            token,
        }
    })
}

const NAMES: [&str; 5] = [
    "authorization",
    "x-service-authorization",
    "x-tenant-id",
    "x-request-id",
    "traceparent",
];

fuzz_target!(|data: &[u8]| {
    let w = world();
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let path = parts.next().unwrap_or_default();
    let Ok(uri) = http::Uri::builder()
        .path_and_query(format!("/bulkhead.task.v1.TaskService/{path}"))
        .build()
    else {
        return;
    };
    let mut request = http::Request::new(tonic::body::Body::empty());
    *request.uri_mut() = uri;
    for part in parts {
        let Some((index, value)) = part.split_at_checked(1) else {
            continue;
        };
        let name = NAMES[usize::from(index.as_bytes()[0]) % NAMES.len()];
        // "$T" stands for the one valid token.
        let value = value.replace("$T", &w.token);
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            request.headers_mut().append(name, value);
        }
    }
    let sent = request.headers().clone();
    let service = w
        .guard
        .layer(tower::service_fn(|_: http::Request<tonic::body::Body>| {
            REACHED.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty())) }
        }));
    let before = REACHED.load(Ordering::SeqCst);
    let response = w
        .runtime
        .block_on(service.oneshot(request))
        .expect("infallible");
    if REACHED.load(Ordering::SeqCst) == before {
        assert!(response.headers().contains_key("grpc-status"));
        return;
    }
    let auth: Vec<_> = sent.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1, "admitted with {auth:?}");
    let value = auth[0].to_str().expect("ascii");
    let (_, token) = value.split_once(' ').expect("a scheme");
    assert_eq!(token.trim(), w.token, "admitted with another token");
});

//! Property tests (issue #13, item 5): what every service parses from the
//! wire, given arbitrary input, never panics and answers exactly as it should.
//!
//! * every RPC's request checks (enumerated from the descriptor set: an RPC
//!   without a checker fails), on random protobuf messages and raw bytes;
//! * token verification, on arbitrary strings and on a valid token with a
//!   byte changed;
//! * the guard's reading of identity metadata (bearer tokens, `x-tenant-id`,
//!   repeated or malformed), through the real tower layer;
//! * page tokens.
//!
//! Each property prints how many cases it ran. No database: these run in a
//! few seconds as part of `cargo test --workspace`. The time-boxed fuzzers
//! over the same entry points are in `tests/fuzz/`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bulkhead::services::ServiceKind;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::token::{Claims, SigningKey, TokenUse};
use bulkhead_guard::{GuardLayer, RevokedSessions, TokenVerifier, VerifierConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::Code;
use tower::{Layer as _, ServiceExt as _};

const CASES: u32 = 2_000;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------
// Random protobuf messages.

/// Text the validators meet: empty, ids, near-ids, slugs, emails, times,
/// control characters, long runs, any unicode.
fn interesting_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(uuid::Uuid::now_v7().to_string()),
        Just(uuid::Uuid::nil().to_string()),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{11,13}",
        "[a-z0-9-]{0,70}",
        "[a-zA-Z0-9._%+-]{0,20}@[a-z0-9.-]{0,20}",
        "[ -~]{0,64}",
        "\\PC{0,40}",
        "[\\x00-\\x1f]{1,8}",
        (1usize..5000).prop_map(|n| "x".repeat(n)),
    ]
}

#[derive(Debug, Clone)]
enum Field {
    Varint(u64),
    Text(String),
    Bytes(Vec<u8>),
    Message(Vec<(u32, Field)>),
}

fn field(depth: u32) -> BoxedStrategy<Field> {
    let leaf = prop_oneof![
        prop_oneof![
            any::<u64>(),
            0u64..10,
            Just(u64::MAX),
            Just(u64::from(u32::MAX)),
            Just(u64::MAX - 1),
        ]
        .prop_map(Field::Varint),
        interesting_text().prop_map(Field::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Field::Bytes),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![
            3 => leaf,
            1 => proptest::collection::vec((1u32..10, field(depth - 1)), 0..6).prop_map(Field::Message),
        ]
        .boxed()
    }
}

fn encode(fields: &[(u32, Field)], buf: &mut Vec<u8>) {
    for (tag, value) in fields {
        match value {
            Field::Varint(v) => {
                encode_key(*tag, WireType::Varint, buf);
                encode_varint(*v, buf);
            }
            Field::Text(text) => encode_bytes(*tag, text.as_bytes(), buf),
            Field::Bytes(bytes) => encode_bytes(*tag, bytes, buf),
            Field::Message(inner) => {
                let mut nested = Vec::new();
                encode(inner, &mut nested);
                encode_bytes(*tag, &nested, buf);
            }
        }
    }
}

fn encode_bytes(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// A random message body: fields 1–9 of any kind, nested two deep; or raw
/// bytes.
fn message_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec((1u32..10, field(2)), 0..8).prop_map(|fields| {
            let mut buf = Vec::new();
            encode(&fields, &mut buf);
            buf
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

// ---------------------------------------------------------------------------
// Every RPC's request checks.

fn every_rpc() -> Vec<String> {
    ServiceKind::ALL
        .iter()
        .flat_map(|k| k.grpc_services().iter())
        .flat_map(|service| {
            bulkhead_proto::method_names(service)
                .into_iter()
                .map(move |m| format!("/{service}/{m}"))
        })
        .collect()
}

/// The service's checker for `path`, on `body`.
fn check_request(path: &str, body: &[u8]) -> Option<Result<(), tonic::Status>> {
    let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(7));
    bulkhead_auth::checks::check_request(path, body)
        .or_else(|| bulkhead_tenant::checks::check_request(path, body))
        .or_else(|| bulkhead_task::checks::check_request(path, body, tenant))
        .or_else(|| bulkhead_audit::checks::check_request(path, body, tenant))
}

#[test]
fn every_rpcs_request_checks_answer_arbitrary_messages_exactly() {
    let rpcs = every_rpc();
    assert_eq!(
        rpcs.len(),
        53,
        "the suite's RPCs (update when one is added)"
    );
    let mut total = 0;
    let mut refused = 0;
    for path in &rpcs {
        assert!(
            check_request(path, &[]).is_some(),
            "{path}: no request checker (add it to its service's checks.rs)"
        );
        let mut run = runner(CASES / 4);
        let seen = AtomicUsize::new(0);
        let bad = AtomicUsize::new(0);
        run.run(&message_body(), |body| {
            seen.fetch_add(1, Ordering::Relaxed);
            match check_request(path, &body).expect("a checker") {
                Ok(()) => {}
                Err(status) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    // Bad input is INVALID_ARGUMENT; a login with a malformed
                    // email is refused as a wrong password (nothing to learn).
                    let login = path.ends_with("/Login");
                    prop_assert!(
                        status.code() == Code::InvalidArgument
                            || (login && status.code() == Code::Unauthenticated),
                        "{path}: {status:?}"
                    );
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        total += seen.into_inner();
        refused += bad.into_inner();
    }
    println!(
        "request checks: {} RPCs, {total} cases ({refused} refused as INVALID_ARGUMENT)",
        rpcs.len()
    );
    assert!(refused > 0 && refused < total, "both outcomes were reached");
}

// ---------------------------------------------------------------------------
// Tokens.

struct Keys {
    key: SigningKey,
    verifier: Arc<TokenVerifier>,
    user: TenantUser,
    token: String,
}

fn keys() -> Keys {
    let key = SigningKey::generate();
    let config = VerifierConfig::default();
    let verifier = Arc::new(TokenVerifier::new(config.clone(), &key.jwk_set()));
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
            Duration::from_secs(900),
        ))
        .expect("sign");
    Keys {
        key,
        verifier,
        user,
        token,
    }
}

#[test]
fn token_verification_refuses_arbitrary_and_altered_tokens() {
    let k = keys();
    assert!(k.verifier.verify(&k.token, TokenUse::Access).is_ok());
    let cases = AtomicUsize::new(0);
    let mut run = runner(CASES);
    run.run(&"\\PC{0,600}", |text| {
        cases.fetch_add(1, Ordering::Relaxed);
        prop_assert!(k.verifier.verify(&text, TokenUse::Access).is_err());
        prop_assert!(k.verifier.verify(&text, TokenUse::Service).is_err());
        Ok(())
    })
    .expect("arbitrary strings");
    // One byte of the real token changed, anywhere, to anything else.
    let len = k.token.len();
    let mut run = runner(CASES);
    run.run(&(0..len, any::<u8>()), |(at, byte)| {
        cases.fetch_add(1, Ordering::Relaxed);
        let mut bytes = k.token.clone().into_bytes();
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        let Ok(altered) = String::from_utf8(bytes) else {
            return Ok(());
        };
        let verified = k.verifier.verify(&altered, TokenUse::Access);
        // A base64 character whose changed bits the encoding ignores can
        // decode to the very same token: then the same identity, never another.
        if let Ok(v) = verified {
            prop_assert_eq!(
                &v.identity,
                &bulkhead_guard::token::Identity::User(k.user.clone())
            );
        }
        Ok(())
    })
    .expect("altered tokens");
    // Claims of any shape, validly signed: verified only when complete.
    let mut run = runner(CASES / 4);
    run.run(
        &proptest::collection::btree_map("[a-z]{1,6}", interesting_text(), 0..8),
        |claims| {
            cases.fetch_add(1, Ordering::Relaxed);
            let token = k.key.sign_payload(&claims).expect("sign");
            prop_assert!(k.verifier.verify(&token, TokenUse::Access).is_err());
            Ok(())
        },
    )
    .expect("arbitrary claims");
    println!("token verification: {} cases", cases.into_inner());
}

// ---------------------------------------------------------------------------
// Identity metadata through the guard.

/// Values of an identity header: the real token, forged ones, tenant ids
/// (the token's and another), and anything printable.
fn header_value(k: &Keys) -> impl Strategy<Value = String> {
    let token = k.token.clone();
    let mut altered = k.token.clone().into_bytes();
    altered[10] ^= 1;
    let altered = String::from_utf8(altered).expect("ascii");
    let own = k.user.tenant_id.to_string();
    prop_oneof![
        Just(format!("Bearer {token}")),
        Just(format!("bearer   {token}  ")),
        Just(format!("Basic {token}")),
        Just(token),
        Just(format!("Bearer {altered}")),
        Just(own),
        Just(TenantId::new_v7().to_string()),
        "[ -~]{0,80}",
    ]
}

/// A runtime to drive the guard in, and the guard as Task runs it.
fn task_guard(k: &Keys) -> (tokio::runtime::Runtime, GuardLayer) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let guard = GuardLayer::new(
        k.verifier.clone(),
        bulkhead_task::policy(),
        RevokedSessions::default(),
    );
    (runtime, guard)
}

#[test]
fn the_guard_admits_only_one_valid_token_with_no_contrary_tenant() {
    let k = keys();
    let (runtime, guard) = task_guard(&k);
    let reached = Arc::new(AtomicUsize::new(0));
    let inner = {
        let reached = reached.clone();
        tower::service_fn(move |_: http::Request<tonic::body::Body>| {
            reached.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty())) }
        })
    };
    let service = guard.layer(inner);
    let names = ["authorization", "x-service-authorization", "x-tenant-id"];
    let headers = proptest::collection::vec((0..names.len(), header_value(&k)), 0..5);
    let paths = prop_oneof![
        Just("/bulkhead.task.v1.TaskService/ListTasks".to_owned()),
        Just("/bulkhead.task.v1.TaskService/ReleaseAssignments".to_owned()),
        Just("/bulkhead.task.v1.CatalogService/CreateService".to_owned()),
        Just("/bulkhead.task.v1.TaskService/NoSuchMethod".to_owned()),
        "/[ -~]{0,40}",
    ];
    let cases = AtomicUsize::new(0);
    let passed = AtomicUsize::new(0);
    let mut run = runner(CASES);
    run.run(&(paths, headers), |(path, headers)| {
        cases.fetch_add(1, Ordering::Relaxed);
        let Ok(uri) = http::Uri::builder().path_and_query(path.as_str()).build() else {
            return Ok(());
        };
        let mut request = http::Request::new(tonic::body::Body::empty());
        *request.uri_mut() = uri;
        for (name, value) in &headers {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                request.headers_mut().append(names[*name], value);
            }
        }
        let sent = request.headers().clone();
        let before = reached.load(Ordering::SeqCst);
        let response = runtime
            .block_on(service.clone().oneshot(request))
            .expect("infallible");
        if reached.load(Ordering::SeqCst) == before {
            // Refused: a gRPC status in the headers, never a panic.
            prop_assert!(response.headers().contains_key("grpc-status"));
            return Ok(());
        }
        passed.fetch_add(1, Ordering::Relaxed);
        // Admitted: exactly one bearer token, the real one, in
        // `authorization`; no service token; `x-tenant-id` absent or the
        // token's own tenant, once; a method of the table.
        let auth: Vec<_> = sent.get_all("authorization").iter().collect();
        prop_assert_eq!(auth.len(), 1);
        let value = auth[0].to_str().expect("ascii");
        let (scheme, token) = value.split_once(' ').expect("scheme");
        prop_assert!(scheme.eq_ignore_ascii_case("bearer"));
        prop_assert_eq!(token.trim(), k.token.as_str());
        prop_assert!(sent.get("x-service-authorization").is_none());
        let tenants: Vec<_> = sent.get_all("x-tenant-id").iter().collect();
        prop_assert!(
            tenants.is_empty()
                || (tenants.len() == 1 && tenants[0] == k.user.tenant_id.to_string().as_str())
        );
        prop_assert!(path.starts_with("/bulkhead.task.v1.") && !path.contains("NoSuchMethod"));
        Ok(())
    })
    .expect("guard");
    let passed = passed.into_inner();
    println!(
        "identity metadata: {} cases, {passed} admitted",
        cases.into_inner()
    );
    assert!(passed > 0, "the valid case was reached");
}

// ---------------------------------------------------------------------------
// Page tokens.

#[test]
fn page_tokens_decode_only_their_own_list() {
    use bulkhead_rpc::paging::{decode, encode};
    let cases = AtomicUsize::new(0);
    let mut run = runner(CASES);
    run.run(&("[ -~]{0,200}", "[a-z/0-9-]{1,40}"), |(token, kind)| {
        cases.fetch_add(1, Ordering::Relaxed);
        let _ = decode(&kind, &token);
        Ok(())
    })
    .expect("arbitrary tokens");
    let mut run = runner(CASES);
    run.run(
        &("[a-z/0-9-]{1,40}", "[a-z/0-9-]{1,40}", "\\PC{0,80}"),
        |(kind, other, cursor)| {
            cases.fetch_add(1, Ordering::Relaxed);
            let token = encode(&kind, &cursor);
            prop_assert_eq!(decode(&kind, &token), Ok(Some(cursor.clone())));
            if !format!("{kind}:{cursor}").starts_with(&format!("{other}:")) {
                prop_assert!(decode(&other, &token).is_err());
            }
            Ok(())
        },
    )
    .expect("round trips");
    println!("page tokens: {} cases", cases.into_inner());
}

// ---------------------------------------------------------------------------
// Deadlines.

/// The guard keeps the caller's `grpc-timeout` with the request, so that the
/// handler's calls downstream (Task asking Tenant about an assignee) carry
/// what is left of it, capped.
#[test]
fn the_guard_keeps_the_callers_deadline_for_calls_downstream() {
    let k = keys();
    let (runtime, guard) = task_guard(&k);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let inner = {
        let seen = seen.clone();
        tower::service_fn(move |request: http::Request<tonic::body::Body>| {
            let left = request
                .extensions()
                .get::<bulkhead_guard::Deadline>()
                .map(|d| bulkhead_guard::Deadline::downstream(Some(*d), Duration::from_secs(5)));
            seen.lock().expect("lock").push(left);
            async { Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty())) }
        })
    };
    let service = guard.layer(inner);
    for timeout in [None, Some("800m"), Some("30S")] {
        let mut request = http::Request::new(tonic::body::Body::empty());
        *request.uri_mut() = "/bulkhead.task.v1.TaskService/CreateTask"
            .parse()
            .expect("uri");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", k.token).parse().expect("ascii"),
        );
        if let Some(timeout) = timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", timeout.parse().expect("ascii"));
        }
        runtime
            .block_on(service.clone().oneshot(request))
            .expect("infallible");
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "each call reached the handler");
    assert_eq!(seen[0], None, "no deadline sent, none kept");
    let short = seen[1].expect("kept");
    assert!(
        short <= Duration::from_millis(800) && short > Duration::from_millis(500),
        "{short:?}"
    );
    assert_eq!(seen[2], Some(Duration::from_secs(5)), "capped");
}

//! What every Bulkhead test harness needs, once: a service started the way
//! `up` and `serve` start it (its module, the RLS check, the real guard) on a
//! port-0 socket and a test database, callers with tokens minted by a test key,
//! and bearer metadata. Dev-dependency only: it panics freely.

pub mod certs;
pub mod otlp;
pub mod proxy;

use std::sync::Arc;
use std::time::Duration;

use bulkhead_context::{ServiceIdentity, TenantUser};
use bulkhead_guard::VerifierConfig;
use bulkhead_guard::token::{Claims, SigningKey};
use bulkhead_postgres::testing::TestDatabase;
use bulkhead_server::{DbUrls, Peers, ServiceModule, SharedGuard};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

/// `message` with `authorization: Bearer <token>`.
///
/// # Panics
/// When the token is not valid metadata.
pub fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// With `BULKHEAD_TEST_LOG` set (an `EnvFilter`, e.g. `error` or
/// `bulkhead_auth=debug`), the services' logs are written as the test's
/// output: shown for a failing test only (`-- --nocapture` shows them all, as
/// they come), so a CI run that fails says what its servers said. Every
/// service a test starts calls it.
pub fn log_when_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("BULKHEAD_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Starts `module` on `database` behind `guard`, serving until the test process
/// ends; returns its `http://` URL.
///
/// # Panics
/// When the service cannot start.
pub async fn start_module(
    module: &dyn ServiceModule,
    database: &TestDatabase,
    guard: &SharedGuard,
    peers: Peers,
    credentials: Option<Arc<dyn bulkhead_clients::ServiceCredentials>>,
) -> String {
    log_when_asked();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = bulkhead_server::start(
        module,
        &DbUrls::new(database.app_url.clone(), database.platform_url.clone()),
        listener.into(),
        guard.clone(),
        peers,
        credentials,
        stopped,
    )
    .await
    .unwrap_or_else(|e| panic!("{} starts: {e}", module.name()));
    // Serves until the test process ends.
    std::mem::forget(stop);
    drop(started);
    url
}

/// A lazily connected channel to `url`.
///
/// # Panics
/// When `url` is not a valid endpoint.
#[must_use]
pub fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("endpoint")
        .connect_lazy()
}

/// Who makes a call.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A user with an access token.
    User(TenantUser),
    /// A service with a service token only.
    Service,
    /// A service acting for a user: both tokens.
    ServiceFor(TenantUser),
    /// No token at all.
    Nobody,
}

impl Caller {
    /// The user behind the call.
    ///
    /// # Panics
    /// For a bare service or nobody.
    #[must_use]
    pub fn user(&self) -> &TenantUser {
        match self {
            Self::User(u) | Self::ServiceFor(u) => u,
            _ => panic!("not a user"),
        }
    }
}

/// Mints tokens with a test key; service tokens name `service`.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The key (also the verifier's).
    pub key: Arc<SigningKey>,
    /// The name service tokens carry.
    pub service: &'static str,
}

impl Tokens {
    /// Tokens of a fresh key for service `service`.
    #[must_use]
    pub fn new(service: &'static str) -> Self {
        Self {
            key: Arc::new(SigningKey::generate()),
            service,
        }
    }

    /// A guard trusting this key.
    #[must_use]
    pub fn guard(&self) -> SharedGuard {
        SharedGuard::new(Arc::new(bulkhead_guard::TokenVerifier::new(
            VerifierConfig::default(),
            &self.key.jwk_set(),
        )))
    }

    fn sign(&self, claims: &Claims) -> String {
        self.key.sign(claims).expect("sign")
    }

    /// An access token for `user`, valid ten minutes.
    #[must_use]
    pub fn access(&self, user: &TenantUser) -> String {
        let config = VerifierConfig::default();
        self.sign(&Claims::access(
            &config.issuer,
            &config.audience,
            user,
            Duration::from_secs(600),
        ))
    }

    /// A service token naming `name`, valid ten minutes.
    #[must_use]
    pub fn service_named(&self, name: &str) -> String {
        self.service_valid_for(name, Duration::from_secs(600))
    }

    /// A service token naming `name`, valid for `lifetime` (whole seconds).
    #[must_use]
    pub fn service_valid_for(&self, name: &str, lifetime: Duration) -> String {
        let config = VerifierConfig::default();
        self.sign(&Claims::service(
            &config.issuer,
            &config.audience,
            &ServiceIdentity {
                name: name.into(),
                scopes: vec![],
            },
            lifetime,
        ))
    }

    /// `message` as `caller` sends it.
    ///
    /// # Panics
    /// Never in practice: tokens are ASCII.
    pub fn request<T>(&self, caller: &Caller, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let mut put = |key: &'static str, token: String| {
            request
                .metadata_mut()
                .insert(key, format!("Bearer {token}").parse().expect("ascii"));
        };
        match caller {
            Caller::User(user) => put("authorization", self.access(user)),
            Caller::Service => put("x-service-authorization", self.service_named(self.service)),
            Caller::ServiceFor(user) => {
                put("authorization", self.access(user));
                put("x-service-authorization", self.service_named(self.service));
            }
            Caller::Nobody => {}
        }
        request
    }
}

/// The error of `result`, asserting its code.
///
/// # Panics
/// When `result` is `Ok` or carries another code.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    let status = result.expect_err(&format!("expected {code:?}"));
    assert_eq!(status.code(), code, "{status:?}");
    status
}

/// The fields named in the BadRequest details of an INVALID_ARGUMENT, in the
/// order the service reported them.
///
/// # Panics
/// When `result` is not an INVALID_ARGUMENT with BadRequest details.
#[track_caller]
pub fn violated_fields<T: std::fmt::Debug>(result: Result<T, Status>) -> Vec<String> {
    assert_code(result, Code::InvalidArgument)
        .get_error_details()
        .bad_request()
        .expect("BadRequest details")
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

/// An update mask of `paths`.
#[must_use]
pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

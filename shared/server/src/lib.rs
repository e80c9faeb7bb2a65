//! Assembles and runs Bulkhead services, the same way for every service
//! ([`assembly`]: a service crate's [`ServiceModule`] and [`start`]), and the
//! one gRPC server each of them is:
//!
//! ```text
//! request id → observe → guard (authenticate, tenant check, authorize) → health | reflection | service
//! ```
//!
//! * **request id** is outermost so that refusals carry the id too;
//! * **observe** ([`observe`]) opens the RPC's span and measures every call,
//!   refusals included;
//! * the **guard** runs for every path; health and reflection are public entries of
//!   every policy table, so `grpcurl list` and probes need no token;
//! * **health** (`grpc.health.v1`) reports the service SERVING only once the caller
//!   says its start-up checks (database, RLS) passed;
//! * **reflection** is served in `grpc.reflection.v1` and `v1alpha` (grpcurl 1.8.6
//!   speaks only v1alpha) and advertises just this port's services.

use std::future::Future;
use std::time::Duration;

/// With the `mimalloc` feature (the `bulkhead` binary's), the process
/// allocates with mimalloc: a list answer allocates a string per field of
/// every row, several times over (row, domain value, message, frame), and
/// glibc's malloc took about 14% of the Task service's CPU serving
/// `ListTasks` (perf on `up` under h2load, 2-core machine).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod assembly;
pub mod health;
pub mod message_within;
pub mod observe;
pub mod tls;

pub use assembly::{
    Assembled, CredentialsFactory, DbUrls, Listening, Peers, ServiceEnv, ServiceModule,
    ServiceSpec, SharedGuard, StartError, Started, TunedModule, start,
};

use bulkhead_guard::{GuardLayer, RequestIdLayer};
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The longest any handler may run before its response (the caller's own
/// `grpc-timeout`, when shorter, wins).
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a call's request message may take to arrive once its
/// handler reads it (see [`message_within`]).
pub const MESSAGE_WITHIN: Duration = Duration::from_secs(10);

/// The most calls one HTTP/2 connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// As [`MESSAGE_WITHIN`], for the public methods (Login, Refresh, GetJwks,
/// health checks): anyone may call them, and their messages are small.
pub const PUBLIC_MESSAGE_WITHIN: Duration = Duration::from_secs(2);

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Serves `routes` (the services `service_names`) on `listener` until
/// `shutdown` completes.
///
/// `health` says `NOT_SERVING` until the caller marks the service SERVING (see
/// [`mark_serving`]).
///
/// # Errors
/// [`ServeError`] when reflection cannot be built or the transport fails.
pub async fn serve(
    listening: Listening,
    service_names: &'static [&'static str],
    routes: Routes,
    guard: GuardLayer,
    health: HealthReporter,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health),
    );
    let reflection_v1 = reflection_builder(service_names).build_v1()?;
    let reflection_v1alpha = reflection_builder(service_names).build_v1alpha()?;

    let guard = match &listening.tls {
        Some(tls) if tls.binds_service_certificates() => guard.binding_service_certificates(),
        _ => guard,
    };
    // The request-body bound below takes public calls' admissions.
    let guard = guard.admitting_public_calls_on_their_message();
    let router = tonic::transport::Server::builder()
        // gRPC keeps connections for long: recycle them so new replicas get traffic.
        .max_connection_age(Duration::from_secs(300))
        // Streams that hold no fairness place (health watches, reflection)
        // cannot pile up without bound on one connection; a client past it
        // waits for a stream to end (tonic's default is no limit).
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // No handler runs for ever before its response. Streams end their
        // handler at their first response, so they are not cut.
        .timeout(HANDLER_TIMEOUT)
        .layer(RequestIdLayer)
        .layer(observe::ObserveLayer::new(guard.policy()))
        .layer(guard)
        // A caller that sends headers and holds its message back gives its
        // places back within 10 s (2 s for a public method).
        .layer(message_within::MessageWithinLayer::new(
            MESSAGE_WITHIN,
            PUBLIC_MESSAGE_WITHIN,
        ))
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    match listening.tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    tls::incoming(listening.tcp, tls.server_config()?),
                    shutdown,
                )
                .await?;
        }
        None => {
            // TCP_NODELAY: without it, a response larger than one segment (a
            // page of 50 tasks) waits ~40 ms for a delayed ACK (Nagle).
            router
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listening.tcp)
                        .with_nodelay(Some(true)),
                    shutdown,
                )
                .await?;
        }
    }
    Ok(())
}

fn reflection_builder(
    services: &'static [&'static str],
) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bulkhead_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details, so grpcurl can show BadRequest field violations.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
    services
        .iter()
        .fold(builder, |b, service| b.with_service_name(*service))
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

/// The health name a liveness probe asks for: SERVING while the process
/// serves, whatever its database does (readiness asks for the service's own
/// name, which follows the database: restarting a process does not bring its
/// database back).
pub const LIVENESS: &str = "liveness";

/// A health reporter and the status of `services`: `NOT_SERVING` until
/// [`mark_serving`]; [`LIVENESS`] SERVING.
pub async fn health_for(services: &'static [&'static str]) -> HealthReporter {
    let reporter = HealthReporter::new();
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    for service in services {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
}

/// Marks `services` (and the server as a whole) NOT_SERVING.
pub async fn mark_not_serving(health: &HealthReporter, services: &'static [&'static str]) {
    for service in services {
        health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
        metrics::gauge!("service_serving", "grpc_service" => *service).set(0.0);
    }
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

/// Marks `services` (and the server as a whole) SERVING.
pub async fn mark_serving(health: &HealthReporter, services: &'static [&'static str]) {
    for service in services {
        health
            .set_service_status(service, ServingStatus::Serving)
            .await;
        metrics::gauge!("service_serving", "grpc_service" => *service).set(1.0);
    }
    health.set_service_status("", ServingStatus::Serving).await;
}

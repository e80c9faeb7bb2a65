//! The guard's side of revocation: a subscription to Auth's `WatchRevocations`
//! that fills this process's revoked-session set, reconnecting with backoff.
//! The set is current only while the feed is heard (a heartbeat every second)
//! within a bound: past it the guard refuses user calls (fail closed) until
//! the feed is back and has caught up.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder as _;
use bulkhead_context::SessionId;
use bulkhead_guard::RevokedSessions;
use bulkhead_proto::auth::v1 as pb;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::ServiceCredentials;

/// How long a guard serves user calls without hearing Auth's revocation feed.
pub const REVOCATION_FEED_BOUND: Duration = Duration::from_secs(10);

/// Keeps `revoked` in step with Auth until `shutdown` flips to true. From
/// the call on (before the future first runs) `revoked` is current only while
/// the feed was heard within `bound`.
pub fn follow_revocations(
    channel: Channel,
    credentials: Arc<dyn ServiceCredentials>,
    revoked: RevokedSessions,
    bound: Duration,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    revoked.follow_feed(bound);
    follow(channel, credentials, revoked, bound, shutdown)
}

async fn follow(
    channel: Channel,
    credentials: Arc<dyn ServiceCredentials>,
    revoked: RevokedSessions,
    bound: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(watch_feed(revoked.clone(), shutdown.clone()));
    let mut client = AuthServiceClient::new(channel);
    let mut delays = backoff();
    loop {
        let (caught_up, ended) = tokio::select! {
            outcome = subscribe(&mut client, &*credentials, &revoked, bound) => outcome,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        // A stream that caught up and ended cleanly, or because its token
        // expired (Auth ends each then), was healthy: start backing off
        // afresh. One that failed after catching up (an Auth behind the
        // stored revocations, a lagging subscriber) backs off further: each
        // subscription reloads every unexpired revocation.
        let expired = ended
            .as_ref()
            .is_err_and(|status| status.code() == tonic::Code::Unauthenticated);
        if caught_up && (ended.is_ok() || expired) {
            delays = backoff();
        }
        if let Err(status) = ended {
            if caught_up && expired {
                tracing::debug!(
                    message = status.message(),
                    "revocation feed ended: subscribing again"
                );
            } else {
                tracing::warn!(code = ?status.code(), message = status.message(), "revocation feed interrupted");
            }
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Says when the set stops or starts being current: a log line and the
/// `revocation_feed_current` gauge (1 or 0), checked every second.
async fn watch_feed(revoked: RevokedSessions, mut shutdown: watch::Receiver<bool>) {
    let mut current = true;
    loop {
        let now = revoked.is_current();
        metrics::gauge!("revocation_feed_current").set(if now { 1.0 } else { 0.0 });
        if now != current {
            if now {
                tracing::info!("revocation feed caught up: user calls are served again");
            } else {
                tracing::error!(
                    silence_seconds = revoked.feed_silence().map(|d| d.as_secs()),
                    "revocation feed lost: user calls answer UNAVAILABLE until it catches up"
                );
            }
            current = now;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// One subscription: whether it caught up (its first heartbeat), and how it
/// ended. Silence longer than `bound` ends it.
async fn subscribe(
    client: &mut AuthServiceClient<Channel>,
    credentials: &dyn ServiceCredentials,
    revoked: &RevokedSessions,
    bound: Duration,
) -> (bool, Result<(), tonic::Status>) {
    let request =
        match crate::credentials::service_request(credentials, pb::WatchRevocationsRequest {}) {
            Ok(request) => request,
            Err(status) => return (false, Err(status)),
        };
    let mut stream = match client.watch_revocations(request).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return (false, Err(status)),
    };
    let mut caught_up = false;
    loop {
        let item = match tokio::time::timeout(bound, stream.message()).await {
            Ok(Ok(Some(item))) => item,
            Ok(Ok(None)) => return (caught_up, Ok(())),
            Ok(Err(status)) => return (caught_up, Err(status)),
            Err(_) => {
                return (
                    caught_up,
                    Err(tonic::Status::deadline_exceeded(
                        "no heartbeat from the revocation feed",
                    )),
                );
            }
        };
        if item.heartbeat {
            caught_up = true;
            // As of when Auth last read the stored revocations (an older
            // Auth sends no time: as of now).
            match item.in_step_time.and_then(|t| SystemTime::try_from(t).ok()) {
                Some(as_of) => revoked.heard_as_of(as_of),
                None => revoked.heard(),
            }
            continue;
        }
        let Ok(session) = SessionId::parse(&item.session_id) else {
            continue;
        };
        let expires = item
            .expires_at
            .and_then(|t| u64::try_from(t.seconds).ok())
            .map_or_else(
                || SystemTime::now() + Duration::from_secs(3600),
                |s| UNIX_EPOCH + Duration::from_secs(s),
            );
        revoked.revoke(session, expires);
    }
}

/// Refreshes `verifier`'s keys from Auth's `GetJwks` every `every` until
/// `shutdown`: a rotated-in key is trusted here before Auth signs with it.
/// With `credentials`, each call carries the service's token, so an
/// anonymous flood of Auth's public methods does not shed it.
pub async fn follow_jwks(
    channel: Channel,
    credentials: Option<Arc<dyn ServiceCredentials>>,
    verifier: Arc<bulkhead_guard::TokenVerifier>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = AuthServiceClient::new(channel);
    loop {
        let request =
            crate::credentials::with_token_if_any(credentials.as_deref(), pb::GetJwksRequest {});
        match client.get_jwks(request).await {
            Ok(response) => match serde_json::from_str(&response.into_inner().jwks_json) {
                Ok(jwks) => verifier.replace_keys(&jwks),
                Err(err) => tracing::warn!(%err, "Auth published an unreadable key set"),
            },
            Err(status) => tracing::warn!(code = ?status.code(), "could not refresh the key set"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

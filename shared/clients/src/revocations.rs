//! The guard's side of revocation: a subscription to Auth's `WatchRevocations`
//! that fills this process's revoked-session set, reconnecting with backoff.

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

/// Keeps `revoked` in step with Auth until `shutdown` flips to true.
pub async fn follow_revocations(
    channel: Channel,
    credentials: Arc<dyn ServiceCredentials>,
    revoked: RevokedSessions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = AuthServiceClient::new(channel);
    let mut delays = backoff();
    loop {
        let outcome = tokio::select! {
            outcome = subscribe(&mut client, &*credentials, &revoked) => outcome,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match outcome {
            // A stream that delivered something was healthy: start backing off afresh.
            Ok(true) => delays = backoff(),
            Ok(false) => {}
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "revocation feed interrupted")
            }
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
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

/// One subscription; `Ok(true)` when it delivered at least one revocation.
async fn subscribe(
    client: &mut AuthServiceClient<Channel>,
    credentials: &dyn ServiceCredentials,
    revoked: &RevokedSessions,
) -> Result<bool, tonic::Status> {
    let request = crate::credentials::service_request(credentials, pb::WatchRevocationsRequest {})?;
    let mut stream = client.watch_revocations(request).await?.into_inner();
    let mut delivered = false;
    while let Some(item) = stream.message().await? {
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
        delivered = true;
    }
    Ok(delivered)
}

/// Refreshes `verifier`'s keys from Auth's `GetJwks` every `every` until
/// `shutdown`: a rotated-in key is trusted here before Auth signs with it.
pub async fn follow_jwks(
    channel: Channel,
    verifier: Arc<bulkhead_guard::TokenVerifier>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = AuthServiceClient::new(channel);
    loop {
        match client.get_jwks(pb::GetJwksRequest {}).await {
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

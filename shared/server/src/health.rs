//! Health that tells the truth: NOT_SERVING while the service's database does
//! not answer (and SERVING again by itself when it does), NOT_SERVING first
//! when the service stops, and a bounded wait for the calls in flight.

use std::future::Future;
use std::time::Duration;

use bulkhead_db::Db;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;

/// How often the database is asked.
pub const PING_EVERY: Duration = Duration::from_secs(1);

/// How long an answer may take before the database counts as gone.
pub const PING_WITHIN: Duration = Duration::from_secs(2);

/// How long the calls in flight may take to finish once the service stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps `services`' health in step with `db` until `shutdown` flips.
pub async fn follow_database(
    db: Db,
    health: HealthReporter,
    services: &'static [&'static str],
    mut shutdown: watch::Receiver<bool>,
) {
    let mut answering = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(PING_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = db.ping(PING_WITHIN).await;
        if now.is_ok() == answering || *shutdown.borrow() {
            continue;
        }
        answering = now.is_ok();
        match now {
            Ok(()) => {
                tracing::info!(?services, "the database answers again: SERVING");
                crate::mark_serving(&health, services).await;
            }
            Err(err) => {
                tracing::warn!(?services, %err, "the database does not answer: NOT_SERVING");
                crate::mark_not_serving(&health, services).await;
            }
        }
    }
}

/// Runs `serving` (a server that stops accepting when `shutdown` flips and then
/// waits for its calls); once the flip comes, waits [`DRAIN_TIMEOUT`] at most
/// for it to finish.
///
/// # Errors
/// The server's own.
pub async fn bounded_drain(
    serving: impl Future<Output = Result<(), crate::ServeError>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), crate::ServeError> {
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result,
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    if let Ok(result) = tokio::time::timeout(DRAIN_TIMEOUT, serving).await {
        result
    } else {
        tracing::warn!(
            timeout = ?DRAIN_TIMEOUT,
            "calls still in flight when the drain timed out: stopping anyway"
        );
        Ok(())
    }
}

//! Password hashing with Argon2id (RustCrypto `argon2`, its defaults are OWASP's
//! minimum: m=19 MiB, t=2, p=1), on dedicated hasher threads sized to the
//! cores: a login storm queues instead of stalling other RPCs or taking GiBs.
//! Each hasher takes the next job from a bounded queue the moment it finishes
//! one, on its own thread: no hand-off through the async runtime between two
//! hashes (with a permit released by an async task and the next job sent to
//! `spawn_blocking`, the hasher sat idle ~10% of a login flood waiting for
//! busy runtime threads to pass it on). The queue is bounded: past
//! [`QUEUE_PER_HASHER`] waiting per hasher, a call is refused at once
//! ([`Busy`]: RESOURCE_EXHAUSTED with RetryInfo) rather than waiting without
//! end. Presented passwords over [`MAX_PASSWORD_BYTES`] are refused before any
//! hashing.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

/// The longest password hashed or checked (bytes): longer ones are refused
/// unhashed (Argon2 over megabytes would be a cheap way to burn CPU).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Calls that may wait for a hasher, per hasher (at ~20-35 ms a hash in
/// release builds, about a second of queue).
pub const QUEUE_PER_HASHER: usize = 32;

/// Every hasher is busy and the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is busy")]
pub struct Busy;

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords off the async threads.
#[derive(Debug, Clone)]
pub struct Passwords {
    /// The hashers' queue; they stop when the last clone is dropped.
    jobs: Sender<Job>,
    /// Verified when the email is unknown, so that case costs the same time.
    decoy: Arc<str>,
}

impl Passwords {
    /// `parallelism` hashers (at least one).
    ///
    /// # Panics
    /// When a thread cannot be started, or (never in practice) hashing a
    /// constant with a fresh salt fails.
    #[must_use]
    pub fn new(parallelism: usize) -> Self {
        Self::with_queue(parallelism, parallelism.max(1) * QUEUE_PER_HASHER)
    }

    /// `parallelism` hashers (at least one) and `queue` calls waiting.
    ///
    /// # Panics
    /// When a thread cannot be started, or (never in practice) hashing a
    /// constant with a fresh salt fails.
    #[must_use]
    pub fn with_queue(parallelism: usize, queue: usize) -> Self {
        let decoy = hash_now("decoy password, never a real one").expect("hashing a constant");
        let (jobs, waiting) = crossbeam_channel::bounded::<Job>(queue);
        for n in 0..parallelism.max(1) {
            let waiting = waiting.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    for job in waiting {
                        // A job that panics answers nobody (its caller gets
                        // an error) and the hasher goes on: a lost thread
                        // would shrink the pool for good.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            metrics::counter!("password_hashing_panics_total").increment(1);
                            tracing::error!("a password hashing job panicked");
                        }
                    }
                })
                .expect("a hasher thread");
        }
        Self {
            jobs,
            decoy: decoy.into(),
        }
    }

    /// Runs `work` on a hasher, or [`Busy`] when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A caller gone while it waited (a cancelled call) costs no hash:
            // a client cannot fill the queue with calls it has dropped.
            if answer.is_closed() {
                return;
            }
            let _ = answer.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("password_hashing_refused_total").increment(1);
                return Err(Busy.into());
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(HashError::Failed("the hashers stopped".into()));
            }
        }
        answered
            .await
            .map_err(|_| HashError::Failed("a hasher stopped mid-job".into()))
    }

    /// The PHC string of `password`.
    ///
    /// # Errors
    /// [`HashError::Busy`] when the queue is full; [`HashError::Failed`] when
    /// hashing fails (it does not in practice).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_now(&password))
            .await?
            .map_err(HashError::Failed)
    }

    /// Whether `password` matches `hash`; with no hash (unknown user), checks the
    /// decoy anyway and answers false. A password over [`MAX_PASSWORD_BYTES`]
    /// matches nothing and is not hashed.
    ///
    /// # Errors
    /// [`HashError::Busy`] when the queue is full; [`HashError::Failed`] when
    /// no hasher answered (never a plain "no": that would count against the
    /// user).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.to_string());
        let matches = self.run(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        });
        // Awaited whether or not the user is known: an unknown email costs
        // the same hash (no `known && …` short cut).
        let matches = matches.await?;
        Ok(known && matches)
    }
}

/// Why a password was not hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The queue is full.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// Hashing failed.
    #[error("{0}")]
    Failed(String),
}

fn hash_now(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One hasher and one place in line: of eight calls at once, those beyond
    /// two are refused at once, and the line empties again after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_line_refuses_instead_of_waiting() {
        let passwords = Passwords::with_queue(1, 1);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let passwords = passwords.clone();
                tokio::spawn(async move { passwords.verify("a password".into(), None).await })
            })
            .collect();
        let mut busy = 0;
        for call in calls {
            match call.await.expect("call") {
                Ok(matched) => assert!(!matched, "the decoy matches nothing"),
                Err(HashError::Busy(Busy)) => busy += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(busy >= 6, "{busy} of 8 refused");
        assert_eq!(passwords.verify("a password".into(), None).await, Ok(false));
        let huge = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(
            passwords.verify(huge, Some("not even a hash".into())).await,
            Ok(false)
        );
    }

    /// A job that panics fails its own call and leaves the hasher working.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_fails_alone_and_the_hasher_goes_on() {
        let passwords = Passwords::with_queue(1, 4);
        let hash = passwords.hash("a password".into()).await.expect("hash");
        let failed = passwords.run(|| panic!("a job that panics")).await;
        assert!(matches!(failed, Err(HashError::Failed(_))), "{failed:?}");
        assert_eq!(
            passwords.verify("a password".into(), Some(hash)).await,
            Ok(true)
        );
    }

    /// A call dropped while it waits in line costs no hash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_dropped_in_line_is_not_hashed() {
        let passwords = Passwords::with_queue(1, 4);
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (release, held) = std::sync::mpsc::channel::<()>();
        // The hasher is held busy; a second call waits in line, then is dropped.
        let busy = tokio::spawn({
            let passwords = passwords.clone();
            async move { passwords.run(move || held.recv().ok()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let waiting = tokio::spawn({
            let (passwords, ran) = (passwords.clone(), ran.clone());
            async move {
                passwords
                    .run(move || ran.store(true, std::sync::atomic::Ordering::SeqCst))
                    .await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waiting.abort();
        assert!(waiting.await.is_err(), "cancelled");
        release.send(()).expect("release");
        busy.await.expect("task").expect("answered");
        // The line is empty again once a later call has gone through.
        passwords.run(|| ()).await.expect("a later call");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}

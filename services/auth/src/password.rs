//! Password hashing with Argon2id (RustCrypto `argon2`, its defaults are OWASP's
//! minimum: m=19 MiB, t=2, p=1), on blocking threads behind a semaphore sized to
//! the cores: a login storm queues instead of stalling other RPCs or taking GiBs.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use tokio::sync::Semaphore;

/// Hashes and verifies passwords off the async threads.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified when the email is unknown, so that case costs the same time.
    decoy: Arc<str>,
}

impl Passwords {
    /// A hasher allowing `parallelism` hashes at once.
    ///
    /// # Panics
    /// Never in practice: hashing a constant with a fresh salt cannot fail.
    #[must_use]
    pub fn new(parallelism: usize) -> Self {
        let decoy = hash_now("decoy password, never a real one").expect("hashing a constant");
        Self {
            permits: Arc::new(Semaphore::new(parallelism.max(1))),
            decoy: decoy.into(),
        }
    }

    /// The PHC string of `password`.
    ///
    /// # Errors
    /// When hashing fails (it does not in practice) or the pool is closed.
    pub async fn hash(&self, password: String) -> Result<String, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Whether `password` matches `hash`; with no hash (unknown user), checks the
    /// decoy anyway and answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.to_string());
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        known && matches
    }
}

fn hash_now(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

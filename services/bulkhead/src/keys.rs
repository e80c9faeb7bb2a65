//! Auth's signing key kept in a file (the "files" option of ARCHITECTURE §2), and
//! the verifier every service builds from its public half.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use bulkhead_guard::token::SigningKey;
use bulkhead_guard::{TokenVerifier, VerifierConfig};

/// Loads the PKCS#8 PEM key at `path`, creating it (mode 0600) when missing.
///
/// # Errors
/// When the file cannot be read, written or parsed.
pub fn load_or_create(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        let pem = fs::read_to_string(path)?;
        return Ok(SigningKey::from_pkcs8_pem(&pem)?);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    new_key_file(path)
}

/// A new key, written to `path` (which must not exist) with mode 0600.
fn new_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key.to_pkcs8_pem().as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

/// Loads an existing key.
///
/// # Errors
/// When the file is missing or is not a PKCS#8 Ed25519 key.
pub fn load(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading signing key {}: {e}", path.display()))?;
    Ok(SigningKey::from_pkcs8_pem(&pem)?)
}

/// A verifier trusting `key`'s public half.
#[must_use]
pub fn verifier_for(key: &SigningKey, config: VerifierConfig) -> Arc<TokenVerifier> {
    Arc::new(TokenVerifier::new(config, &key.jwk_set()))
}

/// A verifier trusting the JWK set in the JSON file at `path`.
///
/// # Errors
/// When the file is missing or not a JWK set.
pub fn verifier_from_jwks_file(
    path: &Path,
    config: VerifierConfig,
) -> anyhow::Result<Arc<TokenVerifier>> {
    let text = fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading JWK set {}: {e}", path.display()))?;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)?;
    Ok(Arc::new(TokenVerifier::new(config, &jwks)))
}

/// Auth's key folder: every `auth-signing-<created>.pem` in it (the first key of
/// an older `up`, `auth-signing.pem`, counts as created at 0).
///
/// # Errors
/// When the folder cannot be read or a key cannot be parsed.
pub fn load_ring(
    dir: &Path,
    grace: std::time::Duration,
) -> anyhow::Result<bulkhead_guard::token::KeyRing> {
    let mut keys = Vec::new();
    if dir.exists() {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let created = if name == "auth-signing.pem" {
                0
            } else if let Some(ts) = name
                .strip_prefix("auth-signing-")
                .and_then(|n| n.strip_suffix(".pem"))
            {
                ts.parse::<u64>()?
            } else {
                continue;
            };
            keys.push((created, Arc::new(load(&path)?)));
        }
    }
    if keys.is_empty() {
        rotate(dir)?;
        return load_ring(dir, grace);
    }
    Ok(bulkhead_guard::token::KeyRing::new(keys, grace))
}

/// Adds a new signing key to the folder (mode 0600); returns its `kid`. It is
/// published at once and signs after the grace period.
///
/// # Errors
/// When the file cannot be written.
pub fn rotate(dir: &Path) -> anyhow::Result<String> {
    let now = bulkhead_guard::token::unix_now();
    let path = dir.join(format!("auth-signing-{now}.pem"));
    if path.exists() {
        anyhow::bail!("a key was created this very second; try again");
    }
    let key = load_or_create(&path)?;
    Ok(key.kid().to_owned())
}

/// How long a new key is published before it signs: longer than the verifiers'
/// key-set refresh ([`KEY_REFRESH`]), so every verifier knows it in time.
pub const KEY_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// How often Auth re-reads its key folder and verifiers refresh the key set.
pub const KEY_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Re-reads the key folder every [`KEY_REFRESH`]: Auth signs with the current key,
/// and `verifier` (this process's) trusts every published one.
pub fn spawn_key_reload(
    dir: std::path::PathBuf,
    keys: bulkhead_auth::SharedKeys,
    verifier: Arc<TokenVerifier>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(KEY_REFRESH) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            match load_ring(&dir, KEY_GRACE) {
                Ok(ring) => {
                    verifier.replace_keys(&ring.jwk_set());
                    *keys
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(ring);
                }
                Err(err) => tracing::warn!(%err, "could not reload the signing keys"),
            }
        }
    });
}

/// The retired checkpoint keys kept beside the current one (`up`'s folder):
/// a JWK set of public keys.
#[must_use]
pub fn retired_checkpoint_keys_path(key_file: &Path) -> std::path::PathBuf {
    key_file.with_extension("retired.json")
}

/// The public keys of a JWK set file (none when the file does not exist).
///
/// # Errors
/// When the file cannot be read or is not a JWK set.
pub fn load_public_keys(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let set: serde_json::Value = serde_json::from_str(&fs::read_to_string(path)?)?;
    set.get("keys")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{}: not a JWK set", path.display()))
}

/// Replaces Audit's checkpoint key: the current key's public half joins the
/// retired set (so its checkpoints stay checkable and published), then a new
/// key takes the file's place. Returns (old kid, new kid).
///
/// # Errors
/// When the current key is missing or a file cannot be written.
pub fn rotate_checkpoint_key(
    key_file: &Path,
    retired_file: &Path,
) -> anyhow::Result<(String, String)> {
    let old = load(key_file)?;
    let mut retired = load_public_keys(retired_file)?;
    if !retired.iter().any(|k| k["kid"] == old.kid()) {
        retired.push(old.public_jwk());
    }
    // The retired set first: a crash between the two writes leaves the old
    // key signing and already listed, never a key nobody can check.
    let staged = retired_file.with_extension("json.new");
    fs::write(&staged, serde_json::json!({ "keys": retired }).to_string())?;
    fs::rename(&staged, retired_file)?;
    let staged = key_file.with_extension("pem.new");
    let _ = fs::remove_file(&staged);
    let new = new_key_file(&staged)?;
    fs::rename(&staged, key_file)?;
    Ok((old.kid().to_owned(), new.kid().to_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
    use bulkhead_guard::token::{Claims, TokenUse, unix_now};
    use bulkhead_guard::{TokenVerifier, VerifierConfig};

    use super::*;

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key_after_grace() {
        let dir = tempfile::tempdir().expect("dir");
        let first = load_ring(dir.path(), Duration::ZERO).expect("ring");
        let user = TenantUser {
            user_id: UserId::new_v7(),
            session_id: SessionId::new_v7(),
            tenant_id: TenantId::new_v7(),
            tenant_slug: "acme".into(),
            tenant_role: TenantRole::Owner,
            platform_role: PlatformRole::User,
        };
        let config = VerifierConfig::default();
        let claims = Claims::access(
            &config.issuer,
            &config.audience,
            &user,
            Duration::from_secs(600),
        );
        let old_token = first.signing_key(unix_now()).sign(&claims).expect("sign");

        std::thread::sleep(Duration::from_millis(1100));
        let new_kid = rotate(dir.path()).expect("rotate");
        let in_grace = load_ring(dir.path(), Duration::from_secs(3600)).expect("ring");
        assert_ne!(
            in_grace.signing_key(unix_now()).kid(),
            new_kid,
            "the new key waits out its grace"
        );
        let after = load_ring(dir.path(), Duration::ZERO).expect("ring");
        assert_eq!(after.signing_key(unix_now()).kid(), new_kid);

        let verifier = TokenVerifier::new(config, &after.jwk_set());
        let new_token = after.signing_key(unix_now()).sign(&claims).expect("sign");
        for token in [&old_token, &new_token] {
            verifier
                .verify(token, TokenUse::Access)
                .expect("both keys verify");
        }
    }

    #[test]
    fn a_checkpoint_key_rotation_keeps_the_old_public_key() {
        let dir = tempfile::tempdir().expect("dir");
        let key_file = dir.path().join("audit-checkpoint.pem");
        let first = load_or_create(&key_file).expect("key");
        let retired = retired_checkpoint_keys_path(&key_file);
        let (old, new) = rotate_checkpoint_key(&key_file, &retired).expect("rotate");
        assert_eq!(old, first.kid());
        assert_eq!(load(&key_file).expect("new key").kid(), new);
        let (again, newest) = rotate_checkpoint_key(&key_file, &retired).expect("again");
        assert_eq!(again, new);
        let kept: Vec<String> = load_public_keys(&retired)
            .expect("retired set")
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(kept, vec![old, new]);
        assert_ne!(newest, again);
    }
}

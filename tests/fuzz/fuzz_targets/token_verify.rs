//! Token verification on arbitrary input: never a panic, never verified.
#![no_main]

use std::sync::OnceLock;

use bulkhead_guard::token::{SigningKey, TokenUse};
use bulkhead_guard::{TokenVerifier, VerifierConfig};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        TokenVerifier::new(VerifierConfig::default(), &SigningKey::generate().jwk_set())
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert!(verifier().verify(&text, TokenUse::Access).is_err());
    assert!(verifier().verify(&text, TokenUse::Service).is_err());
});

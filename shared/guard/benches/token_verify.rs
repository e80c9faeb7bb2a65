//! Token verification: first sight (signature check) vs cached, in µs per call.
//! Run: `cargo bench -p bulkhead-guard --bench token_verify`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::token::{Claims, SigningKey, TokenUse};
use bulkhead_guard::{TokenVerifier, VerifierConfig};

fn main() {
    let key = SigningKey::generate();
    let config = VerifierConfig::default();
    let user = TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::new_v7(),
        tenant_slug: "acme-corporation".into(),
        tenant_role: TenantRole::Member,
        platform_role: PlatformRole::User,
    };
    let first_sight = 3_000;
    // Distinct tokens (each a new `jti`): every verification is a cache miss.
    let tokens: Vec<String> = (0..first_sight)
        .map(|_| {
            key.sign(&Claims::access(
                &config.issuer,
                &config.audience,
                &user,
                Duration::from_secs(900),
            ))
            .expect("sign")
        })
        .collect();
    let verifier = TokenVerifier::new(config, &key.jwk_set());

    let started = Instant::now();
    for token in &tokens {
        black_box(verifier.verify(token, TokenUse::Access).expect("valid"));
    }
    let miss = started.elapsed().as_secs_f64() * 1e6 / f64::from(first_sight);

    let cached_calls = 1_000_000;
    let token = &tokens[0];
    let started = Instant::now();
    for _ in 0..cached_calls {
        black_box(
            verifier
                .verify(black_box(token), TokenUse::Access)
                .expect("valid"),
        );
    }
    let hit = started.elapsed().as_secs_f64() * 1e6 / f64::from(cached_calls);

    println!("token verification (EdDSA, {} byte token)", token.len());
    println!("  first sight (signature check): {miss:>8.2} µs/call over {first_sight} tokens");
    println!("  cached (sha-256 key, moka):    {hit:>8.2} µs/call over {cached_calls} calls");
    println!(
        "  speed-up: {:.0}x; goal: cached <= 2 µs -> {}",
        miss / hit,
        if hit <= 2.0 { "met" } else { "NOT met" }
    );
}

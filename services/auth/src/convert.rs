//! Domain ↔ wire conversions: proto types stop here.

use bulkhead_clients::MembershipView;
use bulkhead_proto::auth::v1 as pb;
use bulkhead_rpc::timestamp;

use crate::repo::User;
use crate::sessions::IssuedTokens;

/// A tenant the user can act in.
#[must_use]
pub fn tenant_access(m: &MembershipView) -> pb::TenantAccess {
    pb::TenantAccess {
        id: m.tenant_id.to_string(),
        slug: m.slug.clone(),
        role: bulkhead_proto::tenant::v1::TenantRole::from(m.role).into(),
        name: m.name.clone(),
        is_default: m.is_default,
    }
}

/// A session's tokens.
#[must_use]
pub fn token_pair(t: IssuedTokens) -> pb::TokenPair {
    pb::TokenPair {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        access_token_expires_at: Some(timestamp(t.access_expires)),
        refresh_token_expires_at: Some(timestamp(t.refresh_expires)),
        session_id: t.session.to_string(),
    }
}

/// A user (never their password hash).
#[must_use]
pub fn user(u: &User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        platform_role: pb::PlatformRole::from(u.platform_role()).into(),
        is_active: u.is_active,
        create_time: Some(timestamp(u.create_time)),
        update_time: Some(timestamp(u.update_time)),
    }
}

/// One public key of the JWK set, field by field.
#[must_use]
pub fn jwk(jwk: &serde_json::Value) -> pb::Jwk {
    let text = |k: &str| jwk[k].as_str().unwrap_or_default().to_owned();
    pb::Jwk {
        kty: text("kty"),
        crv: text("crv"),
        kid: text("kid"),
        alg: text("alg"),
        r#use: text("use"),
        x: text("x"),
    }
}

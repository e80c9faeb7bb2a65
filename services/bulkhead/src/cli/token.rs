//! `bulkhead token`: a break-glass access token minted with `up`'s local key,
//! for an hour at most (verifiers refuse longer lifetimes), and recorded in the
//! audit trail before it is printed: in the platform chain and in the trail
//! of the tenant it is for. No record, no token.

use std::path::PathBuf;
use std::time::Duration;

use bulkhead::keys;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::VerifierConfig;
use bulkhead_guard::token::Claims;
use clap::ValueEnum;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `up` data folder holding the key.
    #[arg(long, env = "BULKHEAD_DATA_DIR", default_value = ".bulkhead")]
    data_dir: PathBuf,
    /// Tenant id (default: a random one, recorded in the platform chain only).
    #[arg(long)]
    tenant_id: Option<String>,
    /// Why: recorded with the mint (1–200 characters). Required.
    #[arg(long, value_parser = reason)]
    reason: String,
    /// Tenant slug.
    #[arg(long, default_value = "break-glass")]
    tenant_slug: String,
    /// User id (default: a random one).
    #[arg(long)]
    user_id: Option<String>,
    /// Tenant role.
    #[arg(long, value_enum, ignore_case = true, default_value = "VIEWER")]
    role: Role,
    /// Platform role SUPER_ADMIN.
    #[arg(long)]
    super_admin: bool,
    /// Lifetime in minutes, 1 to 60.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=60))]
    ttl_minutes: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl From<Role> for TenantRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Owner => Self::Owner,
            Role::Admin => Self::Admin,
            Role::Member => Self::Member,
            Role::Viewer => Self::Viewer,
        }
    }
}

fn reason(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 200 || trimmed.chars().any(char::is_control)
    {
        return Err("1 to 200 printable characters".to_owned());
    }
    Ok(trimmed.to_owned())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Never a new key: a mistyped folder would leave a private key behind.
    let dir = args.data_dir.join("keys");
    if !dir.is_dir() {
        anyhow::bail!(
            "no keys in {}: is that the data folder of a `bulkhead up`?",
            dir.display()
        );
    }
    let ring = keys::load_ring(&dir, keys::KEY_GRACE)?;
    let key = ring.signing_key(bulkhead_guard::token::unix_now()).clone();
    let user = TenantUser {
        user_id: args
            .user_id
            .as_deref()
            .map_or_else(|| Ok(UserId::new_v7()), UserId::parse)?,
        session_id: SessionId::new_v7(),
        tenant_id: args
            .tenant_id
            .as_deref()
            .map_or_else(|| Ok(TenantId::new_v7()), TenantId::parse)?,
        tenant_slug: args.tenant_slug,
        tenant_role: args.role.into(),
        platform_role: if args.super_admin {
            PlatformRole::SuperAdmin
        } else {
            PlatformRole::User
        },
    };
    let config = VerifierConfig::default();
    let claims = Claims::access(
        &config.issuer,
        &config.audience,
        &user,
        Duration::from_secs(args.ttl_minutes * 60),
    );
    let token = key.sign(&claims)?;
    let minted = Minted {
        user: &user,
        claims: &claims,
        kid: key.kid(),
        reason: &args.reason,
        own_tenant: args.tenant_id.is_some(),
    };
    record(&args.data_dir, &minted)
        .await
        .map_err(|e| anyhow::anyhow!("the mint could not be recorded in the audit trail, so no token: {e} (is `bulkhead up` running on {}?)", args.data_dir.display()))?;
    eprintln!(
        "break-glass token for user {} in tenant {} ({}), {} minutes; recorded as auth.break_glass_token",
        user.user_id,
        user.tenant_id,
        user.tenant_role.as_str(),
        args.ttl_minutes
    );
    println!("{token}");
    Ok(())
}

/// What is recorded of a mint.
struct Minted<'a> {
    user: &'a TenantUser,
    claims: &'a Claims,
    kid: &'a str,
    reason: &'a str,
    /// Whether the tenant was named (a real one): then its trail gets the
    /// event too.
    own_tenant: bool,
}

/// Writes the mint into Auth's outbox (through `up`'s cluster, as Auth's
/// platform role): an event in the platform chain, and in the tenant's trail
/// when a tenant was named. Who ran it is the OS account (its uid, from the
/// kernel); `$USER` and `$SUDO_USER` are kept as claimed.
async fn record(data_dir: &std::path::Path, minted: &Minted<'_>) -> anyhow::Result<()> {
    use bulkhead_outbox::audit::{Actor, Event};
    let schema = bulkhead::services::ServiceKind::Auth.schema();
    let db = super::cross_tenant_db(None, data_dir, schema, &schema.platform_role()).await?;
    let user = minted.user;
    let uid = nix::unistd::getuid();
    let account = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let actor = Actor {
        user_id: None,
        service: Some("bulkhead-cli".to_owned()),
        request_id: minted.claims.jti.clone(),
        trace_id: None,
    };
    let details = serde_json::json!({
        "reason": minted.reason,
        "user_id": user.user_id.to_string(),
        "tenant_id": user.tenant_id.to_string(),
        "tenant_slug": user.tenant_slug,
        "tenant_role": user.tenant_role.as_str(),
        "super_admin": user.platform_role == PlatformRole::SuperAdmin,
        "expire_time": minted.claims.exp,
        "jti": minted.claims.jti,
        "kid": minted.kid,
        "os_uid": uid.as_raw(),
        "os_account": account,
        "claimed_user": std::env::var("USER").unwrap_or_default(),
        "claimed_sudo_user": std::env::var("SUDO_USER").unwrap_or_default(),
        "host": nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
        "pid": std::process::id(),
    });
    let mut trails = vec![TenantId::from_uuid(uuid::Uuid::nil())];
    if minted.own_tenant {
        trails.push(user.tenant_id);
    }
    db.platform_tx(async |tx| {
        for tenant in &trails {
            Event::new("auth.break_glass_token", "session", user.session_id)
                .new_value(details.clone())
                .record_for(tx, *tenant, &actor)
                .await?;
        }
        Ok::<_, bulkhead_db::DbError>(())
    })
    .await?;
    Ok(())
}

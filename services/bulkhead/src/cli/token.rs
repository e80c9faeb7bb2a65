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
    /// Tenant id (default: a random one).
    #[arg(long)]
    tenant_id: Option<String>,
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

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ring = keys::load_ring(&args.data_dir.join("keys"), keys::KEY_GRACE)?;
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
    record(&args.data_dir, &user, args.ttl_minutes)
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

/// Writes the mint into Auth's outbox (through `up`'s cluster, as Auth's
/// platform role): an event in the platform chain and one in the tenant's.
async fn record(
    data_dir: &std::path::Path,
    user: &TenantUser,
    ttl_minutes: u64,
) -> anyhow::Result<()> {
    use bulkhead_outbox::audit::{Actor, Event};
    let schema = bulkhead::services::ServiceKind::Auth.schema();
    let db = super::cross_tenant_db(None, data_dir, schema, &schema.platform_role()).await?;
    let actor = Actor {
        user_id: None,
        service: Some("bulkhead-cli".to_owned()),
        request_id: user.session_id.to_string(),
        trace_id: None,
    };
    let details = serde_json::json!({
        "user_id": user.user_id.to_string(),
        "tenant_id": user.tenant_id.to_string(),
        "tenant_role": user.tenant_role.as_str(),
        "super_admin": user.platform_role == PlatformRole::SuperAdmin,
        "ttl_minutes": ttl_minutes,
        "os_user": std::env::var("USER").unwrap_or_default(),
    });
    db.platform_tx(async |tx| {
        for tenant in [TenantId::from_uuid(uuid::Uuid::nil()), user.tenant_id] {
            Event::new("auth.break_glass_token", "session", user.session_id)
                .new_value(details.clone())
                .record_for(tx, tenant, &actor)
                .await?;
        }
        Ok::<_, bulkhead_db::DbError>(())
    })
    .await?;
    Ok(())
}

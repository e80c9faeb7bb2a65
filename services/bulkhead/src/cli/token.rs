//! `bulkhead token`: a break-glass access token minted with `up`'s local key.

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
    /// Lifetime in minutes.
    #[arg(long, default_value_t = 15)]
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

pub fn run(args: Args) -> anyhow::Result<()> {
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
    eprintln!(
        "break-glass token for user {} in tenant {} ({}); this mint is not in the audit trail yet",
        user.user_id,
        user.tenant_id,
        user.tenant_role.as_str()
    );
    println!("{}", key.sign(&claims)?);
    Ok(())
}

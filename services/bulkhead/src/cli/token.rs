//! `bulkhead token`: a break-glass access token minted with `up`'s local key,
//! for an hour at most (verifiers refuse longer lifetimes), with a session of
//! its own that `bulkhead token --revoke` ends everywhere, and recorded in the
//! audit trail before it is printed: in the platform chain and in the trail
//! of the tenant it is for, printed only once Audit has accepted every
//! record. No confirmed record, no token.

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
    /// How long to wait for Audit to accept the records (seconds): past it,
    /// the session is revoked and no token is printed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    confirm_within: u64,
    /// Revoke the break-glass session with this id (printed at its mint)
    /// instead of minting: every service refuses its token within about a
    /// second. Recorded in the platform chain with `--reason`.
    #[arg(
        long,
        value_name = "SESSION_ID",
        conflicts_with_all = ["tenant_id", "user_id", "super_admin"]
    )]
    revoke: Option<String>,
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
    if let Some(session) = &args.revoke {
        return revoke(&args.data_dir, SessionId::parse(session)?, &args.reason).await;
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
    let unrecorded = |e: anyhow::Error| {
        anyhow::anyhow!(
            "the mint could not be recorded in the audit trail, so no token: {e} (is `bulkhead up` running on {}?)",
            args.data_dir.display()
        )
    };
    let db = auth_platform_db(&args.data_dir).await.map_err(unrecorded)?;
    let messages = record(&db, &minted).await.map_err(unrecorded)?;
    let within = Duration::from_secs(args.confirm_within);
    if let Err(err) = confirmed(&db, &messages, within).await {
        let reason = "Audit did not confirm the mint";
        let ended = db
            .platform_tx(async |tx| {
                bulkhead_auth::break_glass::revoke(tx, user.session_id, reason).await
            })
            .await;
        anyhow::bail!(
            "{err}: no token (its session {}; the record stays in the outbox and reaches Audit when it can)",
            if ended.is_ok() {
                "is revoked"
            } else {
                "expires unused"
            }
        );
    }
    eprintln!(
        "break-glass token for user {} in tenant {} ({}), {} minutes, session {}; recorded as auth.break_glass_token and confirmed by Audit; end it with `bulkhead token --revoke {} --reason …`",
        user.user_id,
        user.tenant_id,
        user.tenant_role.as_str(),
        args.ttl_minutes,
        user.session_id,
        user.session_id
    );
    println!("{token}");
    Ok(())
}

/// `up`'s Auth database, as Auth's platform role.
async fn auth_platform_db(data_dir: &std::path::Path) -> anyhow::Result<bulkhead_db::Db> {
    let schema = bulkhead::services::ServiceKind::Auth.schema();
    super::cross_tenant_db(None, data_dir, schema, &schema.platform_role()).await
}

/// Waits until Audit accepted every message of `messages` (the relay marks
/// each delivered once Audit's `AppendEvents` took it), for `within` at most.
async fn confirmed(
    db: &bulkhead_db::Db,
    messages: &[uuid::Uuid],
    within: Duration,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let waiting = db
            .platform_tx(async |tx| bulkhead_outbox::undelivered(tx, messages).await)
            .await?;
        if waiting == 0 {
            return Ok(());
        }
        if started.elapsed() >= within {
            anyhow::bail!(
                "Audit did not confirm {waiting} of {} record(s) within {within:?}",
                messages.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ends break-glass session `session` (Auth's follower streams it to every
/// guard within about a second), recorded in the platform chain.
async fn revoke(
    data_dir: &std::path::Path,
    session: SessionId,
    reason: &str,
) -> anyhow::Result<()> {
    use bulkhead_outbox::audit::Event;
    let db = auth_platform_db(data_dir).await?;
    let actor = cli_actor(session.to_string());
    let revoked = db
        .platform_tx(async |tx| {
            let revoked = bulkhead_auth::break_glass::revoke(tx, session, reason)
                .await?
                .is_some();
            if revoked {
                Event::new("auth.break_glass_revoked", "session", session)
                    .new_value(serde_json::json!({ "reason": reason, "by": operator() }))
                    .record_for(tx, TenantId::from_uuid(uuid::Uuid::nil()), &actor)
                    .await?;
            }
            Ok::<_, anyhow::Error>(revoked)
        })
        .await?;
    if !revoked {
        anyhow::bail!("no live break-glass session {session}");
    }
    eprintln!(
        "break-glass session {session} revoked: every service refuses its token within about a second"
    );
    Ok(())
}

/// Who runs the CLI: the OS account (its uid, from the kernel); `$USER` and
/// `$SUDO_USER` as claimed.
fn operator() -> serde_json::Value {
    let uid = nix::unistd::getuid();
    let account = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    serde_json::json!({
        "os_uid": uid.as_raw(),
        "os_account": account,
        "claimed_user": std::env::var("USER").unwrap_or_default(),
        "claimed_sudo_user": std::env::var("SUDO_USER").unwrap_or_default(),
        "host": nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
        "pid": std::process::id(),
    })
}

fn cli_actor(request_id: String) -> bulkhead_outbox::audit::Actor {
    bulkhead_outbox::audit::Actor {
        user_id: None,
        service: Some("bulkhead-cli".to_owned()),
        request_id,
        trace_id: None,
    }
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

/// Stores the token's session and writes the mint into Auth's outbox, in one
/// transaction (through `up`'s cluster, as Auth's platform role): an event in
/// the platform chain, and in the tenant's trail when a tenant was named.
/// Returns the outbox messages, to wait for Audit's confirmation.
async fn record(db: &bulkhead_db::Db, minted: &Minted<'_>) -> anyhow::Result<Vec<uuid::Uuid>> {
    use bulkhead_outbox::audit::Event;
    let user = minted.user;
    let actor = cli_actor(minted.claims.jti.clone());
    let mut details = serde_json::json!({
        "reason": minted.reason,
        "user_id": user.user_id.to_string(),
        "tenant_id": user.tenant_id.to_string(),
        "tenant_slug": user.tenant_slug,
        "tenant_role": user.tenant_role.as_str(),
        "super_admin": user.platform_role == PlatformRole::SuperAdmin,
        "expire_time": minted.claims.exp,
        "jti": minted.claims.jti,
        "kid": minted.kid,
    });
    if let (Some(details), serde_json::Value::Object(by)) = (details.as_object_mut(), operator()) {
        details.extend(by);
    }
    let mut trails = vec![TenantId::from_uuid(uuid::Uuid::nil())];
    if minted.own_tenant {
        trails.push(user.tenant_id);
    }
    let expires = chrono::DateTime::from_timestamp(i64::try_from(minted.claims.exp)?, 0)
        .ok_or_else(|| anyhow::anyhow!("an expiry out of range"))?;
    db.platform_tx(async |tx| {
        bulkhead_auth::break_glass::store(tx, user.session_id, expires).await?;
        let mut messages = Vec::new();
        for tenant in &trails {
            messages.push(
                Event::new("auth.break_glass_token", "session", user.session_id)
                    .new_value(details.clone())
                    .record_for_message(tx, *tenant, &actor)
                    .await?,
            );
        }
        Ok::<_, anyhow::Error>(messages)
    })
    .await
}

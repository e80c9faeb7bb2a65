//! The gRPC handlers of Auth.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bulkhead_clients::{MembershipView, TenantDirectory};
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantUser, UserId};
use bulkhead_db::Db;
use bulkhead_guard::token::{Claims, KeyRing, SigningKey, unix_now};
use bulkhead_guard::{RequestContext, RevokedSessions};
use bulkhead_proto::auth::v1 as pb;
use bulkhead_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use bulkhead_proto::tenant::v1::TenantRole as PbTenantRole;
use chrono::{DateTime, Utc};
use sha2::Digest as _;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use bulkhead_outbox::audit::{Actor, Event};

use crate::error::AuthError;
use crate::password::Passwords;
use crate::repo::{self, NewSession, Revoke, User};

/// Token lifetimes and identity of the issuer.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    /// Access token lifetime (ARCHITECTURE §2: 15 minutes by default).
    pub access_ttl: Duration,
    /// Refresh token (session) lifetime.
    pub refresh_ttl: Duration,
    /// Service lifetime of `IssueServiceToken` tokens.
    pub service_ttl: Duration,
    /// The services allowed to obtain tokens, with their secrets.
    pub service_clients: Vec<ServiceClient>,
    /// Login throttling.
    pub login_limits: crate::limits::LimitsConfig,
}

/// A service that may call `IssueServiceToken`.
#[derive(Clone)]
pub struct ServiceClient {
    /// The client id, which is also the service's name in its tokens.
    pub client_id: String,
    /// The shared secret (from config; never logged).
    pub secret: String,
    /// Scopes its tokens carry.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "bulkhead-auth".into(),
            audience: "bulkhead".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            service_ttl: Duration::from_secs(15 * 60),
            service_clients: Vec::new(),
            login_limits: crate::limits::LimitsConfig::default(),
        }
    }
}

/// Auth's signing keys, replaceable while running (key rotation).
pub type SharedKeys = Arc<std::sync::RwLock<Arc<KeyRing>>>;

/// The Auth service's handlers.
#[derive(Clone)]
pub struct AuthApi {
    db: Db,
    keys: SharedKeys,
    config: AuthConfig,
    passwords: Passwords,
    tenants: TenantDirectory,
    revoked: RevokedSessions,
    /// Login throttling and lockout.
    limits: Arc<crate::limits::LoginLimits>,
    /// Every revocation, for `WatchRevocations` subscribers.
    feed: tokio::sync::broadcast::Sender<(Uuid, DateTime<Utc>)>,
}

impl std::fmt::Debug for AuthApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthApi")
            .field("kid", &self.signing_key().kid())
            .finish_non_exhaustive()
    }
}

impl AuthApi {
    /// Handlers over `db` (as `auth_app`), signing with `key`, reading memberships
    /// from `tenants`, and marking revoked sessions in `revoked` (the guards' set of
    /// this process).
    #[must_use]
    pub fn new(
        db: Db,
        keys: SharedKeys,
        config: AuthConfig,
        tenants: TenantDirectory,
        revoked: RevokedSessions,
    ) -> Self {
        // Hashing may take all cores but one: the rest of the server (cheap RPCs,
        // the database on the same machine) keeps a core under a login storm.
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let hashers = cores.saturating_sub(1).max(1);
        let limits = config.login_limits;
        Self {
            db,
            keys,
            config,
            passwords: Passwords::new(hashers),
            tenants,
            revoked,
            feed: tokio::sync::broadcast::channel(4096).0,
            limits: Arc::new(crate::limits::LoginLimits::new(limits)),
        }
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }

    /// The key to sign with now.
    fn signing_key(&self) -> Arc<SigningKey> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .signing_key(unix_now())
            .clone()
    }

    async fn memberships(&self, user: Uuid) -> Result<Vec<MembershipView>, AuthError> {
        self.tenants
            .memberships(&user.to_string())
            .await
            .map_err(|s| AuthError::TenantUnavailable(s.message().to_owned()))
    }

    /// Signs an access token for `user` acting in `membership` under `session`.
    fn access_token(
        &self,
        user: &User,
        session: SessionId,
        membership: &MembershipView,
    ) -> Result<(String, DateTime<Utc>), AuthError> {
        let identity = TenantUser {
            user_id: UserId::from_uuid(user.id),
            session_id: session,
            tenant_id: membership.tenant_id,
            tenant_slug: membership.slug.clone(),
            tenant_role: membership.role,
            platform_role: user.platform_role(),
        };
        let claims = Claims::access(
            &self.config.issuer,
            &self.config.audience,
            &identity,
            self.config.access_ttl,
        );
        let token = self
            .signing_key()
            .sign(&claims)
            .map_err(|e| AuthError::Signing(e.to_string()))?;
        let expires = DateTime::from_timestamp(i64::try_from(claims.exp).unwrap_or(i64::MAX), 0)
            .unwrap_or_default();
        Ok((token, expires))
    }

    /// A new session (refresh-token family) for `user` in `membership`'s tenant.
    async fn start_session(
        &self,
        user: &User,
        membership: &MembershipView,
        action: &'static str,
        actor: &Actor,
    ) -> Result<(pb::TokenPair, SessionId), AuthError> {
        let session = SessionId::new_v7();
        let (access_token, access_expires) = self.access_token(user, session, membership)?;
        let (refresh_token, hash) = new_refresh_token();
        let refresh_expires = Utc::now() + self.config.refresh_ttl;
        let new = NewSession {
            id: session,
            user: UserId::from_uuid(user.id),
            tenant: membership.tenant_id,
            refresh_hash: &hash,
            refresh_expires_at: refresh_expires,
            access_expires_at: access_expires,
        };
        self.db
            .platform_tx(async |tx| {
                repo::create_session(tx, &new).await?;
                let event = Event::new(action, "session", session)
                    .new_value(serde_json::json!({ "user_id": user.id, "tenant_id": membership.tenant_id.to_string() }));
                event.record_for(tx, membership.tenant_id, actor).await?;
                Ok::<_, AuthError>(())
            })
            .await?;
        Ok((
            pb::TokenPair {
                access_token,
                refresh_token,
                access_token_expires_at: Some(timestamp(access_expires)),
                refresh_token_expires_at: Some(timestamp(refresh_expires)),
                session_id: session.to_string(),
            },
            session,
        ))
    }

    /// Revokes `which` and leaves the audit event in the same transaction.
    async fn revoke_audited(
        &self,
        which: Revoke,
        reason: &str,
        tenant: TenantId,
        actor: &Actor,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>, AuthError> {
        let revoked = self
            .db
            .platform_tx(async |tx| {
                let revoked = repo::revoke(tx, which, reason).await?;
                let ids: Vec<String> = revoked.iter().map(|(id, _)| id.to_string()).collect();
                Event::new("auth.sessions_revoked", "session", format!("{which:?}"))
                    .new_value(serde_json::json!({ "reason": reason, "sessions": ids }))
                    .record_for(tx, tenant, actor)
                    .await?;
                Ok::<_, AuthError>(revoked)
            })
            .await?;
        self.mark_revoked(&revoked);
        Ok(revoked)
    }

    /// A failed login, audited without the password or any token.
    async fn audit_login_failure(
        &self,
        email: &str,
        user: Option<Uuid>,
        actor: &Actor,
    ) -> Result<(), AuthError> {
        self.db
            .platform_tx(async |tx| {
                Event::new(
                    "auth.login_failure",
                    "user",
                    user.map_or_else(|| "unknown".to_owned(), |u| u.to_string()),
                )
                .new_value(serde_json::json!({ "email": email }))
                .record_for(tx, TenantId::from_uuid(Uuid::nil()), actor)
                .await?;
                Ok::<_, AuthError>(())
            })
            .await
    }

    fn mark_revoked(&self, revoked: &[(Uuid, DateTime<Utc>)]) {
        for (session, expires) in revoked {
            let expiry = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(expires.timestamp()).unwrap_or(0));
            self.revoked.revoke(SessionId::from_uuid(*session), expiry);
            // No subscriber is not an error: they load the revoked set when they connect.
            let _ = self.feed.send((*session, *expires));
        }
    }
}

/// `RESOURCE_EXHAUSTED` with a `RetryInfo` saying when to try again.
fn throttled(wait: Duration) -> Status {
    use tonic_types::StatusExt as _;
    let wait = wait.max(Duration::from_millis(1));
    Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!(
            "too many login attempts: retry in {} s",
            wait.as_secs().max(1)
        ),
        tonic_types::ErrorDetails::with_retry_info(Some(wait)),
    )
}

/// The actor of a public RPC (no verified principal yet): just the request id.
fn anonymous<T>(request: &Request<T>) -> Actor {
    Actor {
        request_id: request
            .extensions()
            .get::<bulkhead_guard::RequestId>()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        ..Actor::default()
    }
}

fn check_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim();
    let plausible = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if plausible {
        Ok(email.to_owned())
    } else {
        Err(AuthError::Invalid(
            "email must be an address such as ada@example.com".into(),
        ))
    }
}

fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0_u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = refresh_hash(&token);
    (token, hash)
}

fn refresh_hash(token: &str) -> Vec<u8> {
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

fn tenant_access(m: &MembershipView) -> pb::TenantAccess {
    pb::TenantAccess {
        id: m.tenant_id.to_string(),
        slug: m.slug.clone(),
        role: role_to_proto(m.role).into(),
        name: m.name.clone(),
        is_default: m.is_default,
    }
}

fn role_to_proto(role: bulkhead_context::TenantRole) -> PbTenantRole {
    role.into()
}

/// The requested tenant (must be a membership), else the default one, else the first.
fn pick(memberships: &[MembershipView], slug: &str) -> Option<MembershipView> {
    if slug.is_empty() {
        memberships
            .iter()
            .find(|m| m.is_default)
            .or_else(|| memberships.first())
            .cloned()
    } else {
        memberships.iter().find(|m| m.slug == slug).cloned()
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let mut actor = anonymous(&request);
        let peer = request.remote_addr().map(|a| a.ip());
        let r = request.into_inner();
        // Malformed input gets the same answer as a wrong password: nothing to learn.
        let email = check_email(&r.email).map_err(|_| AuthError::InvalidCredentials)?;
        let limit_key = email.to_lowercase();
        if let Err(wait) = self.limits.check(&limit_key, peer) {
            tracing::warn!(
                security = true,
                event = "login_throttled",
                "login throttled"
            );
            return Err(throttled(wait));
        }
        let user = self
            .db
            .platform_tx(async |tx| repo::user_by_email(tx, &email).await)
            .await?;
        // Always pay one Argon2 verification, known user or not (similar timing).
        let verified = self
            .passwords
            .verify(r.password, user.as_ref().map(|u| u.password_hash.clone()))
            .await;
        let known = user.as_ref().map(|u| u.id);
        let Some(user) = user.filter(|u| verified && u.is_active) else {
            tracing::info!(security = true, event = "login_failure", "login refused");
            self.limits.failed(&limit_key);
            self.audit_login_failure(&email, known, &actor).await?;
            return Err(AuthError::InvalidCredentials.into());
        };
        actor.user_id = Some(user.id.to_string());
        let memberships = self.memberships(user.id).await?;
        let Some(membership) = pick(&memberships, &r.tenant_slug) else {
            tracing::info!(security = true, event = "login_failure", user_id = %user.id, "no accessible tenant");
            self.limits.failed(&limit_key);
            self.audit_login_failure(&email, Some(user.id), &actor)
                .await?;
            return Err(AuthError::InvalidCredentials.into());
        };
        self.limits.succeeded(&limit_key);
        let (tokens, _) = self
            .start_session(&user, &membership, "auth.login", &actor)
            .await?;
        tracing::info!(security = true, event = "login_success", user_id = %user.id, tenant_id = %membership.tenant_id, "login");
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(tokens),
            tenant: Some(tenant_access(&membership)),
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Reply<pb::RefreshResponse> {
        let actor = anonymous(&request);
        let hash = refresh_hash(&request.into_inner().refresh_token);
        let found = self
            .db
            .platform_tx(async |tx| {
                if let Some(session) = repo::session_by_refresh(tx, &hash).await? {
                    return Ok::<_, AuthError>(Ok(session));
                }
                Ok(Err(repo::session_of_old_refresh(tx, &hash).await?))
            })
            .await?;
        let session = match found {
            Ok(session) => session,
            Err(reused) => {
                // A rotated token shown again: someone holds a copy. End the family.
                if let Some(session) = reused {
                    tracing::warn!(
                        security = true,
                        event = "refresh_reuse",
                        "rotated refresh token reused: session revoked"
                    );
                    let platform = TenantId::from_uuid(Uuid::nil());
                    self.revoke_audited(
                        Revoke::Session(session),
                        "refresh token reused",
                        platform,
                        &actor,
                    )
                    .await?;
                }
                return Err(AuthError::InvalidRefreshToken.into());
            }
        };
        if session.revoked_at.is_some() || session.refresh_expires_at <= Utc::now() {
            return Err(AuthError::InvalidRefreshToken.into());
        }
        let user = self
            .db
            .user_tx(UserId::from_uuid(session.user_id), async |tx| {
                repo::own_user(tx).await
            })
            .await?
            .filter(|u| u.is_active)
            .ok_or(AuthError::InvalidRefreshToken)?;
        // The membership is read live: a removed member cannot refresh.
        let memberships = self.memberships(user.id).await?;
        let Some(membership) = memberships
            .into_iter()
            .find(|m| *m.tenant_id.as_uuid() == session.tenant_id)
        else {
            let tenant = TenantId::from_uuid(session.tenant_id);
            self.revoke_audited(
                Revoke::Session(session.id),
                "membership ended",
                tenant,
                &actor,
            )
            .await?;
            return Err(AuthError::InvalidRefreshToken.into());
        };
        let sid = SessionId::from_uuid(session.id);
        let (access_token, access_expires) = self.access_token(&user, sid, &membership)?;
        let (refresh_token, new_hash) = new_refresh_token();
        self.db
            .platform_tx(async |tx| repo::rotate(tx, session.id, &new_hash, access_expires).await)
            .await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(pb::TokenPair {
                access_token,
                refresh_token,
                access_token_expires_at: Some(timestamp(access_expires)),
                refresh_token_expires_at: Some(timestamp(session.refresh_expires_at)),
                session_id: session.id.to_string(),
            }),
            tenant: Some(tenant_access(&membership)),
        }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::LogoutResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let which = if request.get_ref().all_sessions {
            Revoke::User(user.user_id, None)
        } else {
            Revoke::Session(*user.session_id.as_uuid())
        };
        let revoked = self
            .revoke_audited(which, "logout", user.tenant_id, &Actor::of(ctx))
            .await?;
        Ok(Response::new(pb::LogoutResponse {
            revoked_count: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
        }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let row = self
            .db
            .user_tx(user.user_id, async |tx| repo::own_user(tx).await)
            .await?
            .ok_or(AuthError::NotFound)?;
        let memberships = self.memberships(row.id).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            user_id: user.user_id.to_string(),
            email: row.email,
            platform_role: pb::PlatformRole::from(user.platform_role).into(),
            tenant_id: user.tenant_id.to_string(),
            tenant_slug: user.tenant_slug.clone(),
            tenant_role: role_to_proto(user.tenant_role).into(),
            session_id: user.session_id.to_string(),
            switchable_tenants: memberships.iter().map(tenant_access).collect(),
            access_token_expires_at: None,
        }))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        // Every published key: during a rotation, the next one and the previous one.
        let jwks = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .public_jwks();
        let keys = jwks
            .iter()
            .map(|jwk| {
                let text = |k: &str| jwk[k].as_str().unwrap_or_default().to_owned();
                pb::Jwk {
                    kty: text("kty"),
                    crv: text("crv"),
                    kid: text("kid"),
                    alg: text("alg"),
                    r#use: text("use"),
                    x: text("x"),
                }
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: serde_json::json!({ "keys": jwks }).to_string(),
            keys,
        }))
    }

    async fn switch_tenant(
        &self,
        request: Request<pb::SwitchTenantRequest>,
    ) -> Reply<pb::SwitchTenantResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let caller = ctx.tenant_user()?.clone();
        let wanted = match &request.get_ref().tenant {
            Some(pb::switch_tenant_request::Tenant::TenantId(id)) => TenantId::parse(id)
                .map(|id| (Some(id), None))
                .map_err(|_| {
                    AuthError::Fields(vec![(
                        "tenant_id".into(),
                        "must be a tenant id (UUID)".into(),
                    )])
                })?,
            Some(pb::switch_tenant_request::Tenant::TenantSlug(slug)) if !slug.is_empty() => {
                (None, Some(slug.clone()))
            }
            _ => {
                return Err(AuthError::Fields(vec![(
                    "tenant".into(),
                    "set tenant_id or tenant_slug".into(),
                )])
                .into());
            }
        };
        let user = self
            .db
            .user_tx(caller.user_id, async |tx| repo::own_user(tx).await)
            .await?
            .filter(|u| u.is_active)
            .ok_or(AuthError::Forbidden)?;
        // Checked live with Tenant, never from the token.
        let memberships = self.memberships(user.id).await?;
        let Some(membership) = memberships.into_iter().find(|m| match &wanted {
            (Some(id), _) => m.tenant_id == *id,
            (_, Some(slug)) => &m.slug == slug,
            _ => false,
        }) else {
            tracing::warn!(security = true, event = "switch_refused", user_id = %user.id, "switch to a tenant without membership");
            return Err(Status::permission_denied("not a member of that tenant"));
        };
        let (tokens, _) = self
            .start_session(&user, &membership, "auth.switch_tenant", &Actor::of(ctx))
            .await?;
        Ok(Response::new(pb::SwitchTenantResponse {
            tokens: Some(tokens),
            tenant: Some(tenant_access(&membership)),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Reply<pb::CreateUserResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let caller = ctx.tenant_user()?;
        let r = request.get_ref();
        let mut violations: Vec<(String, String)> = Vec::new();
        let email = check_email(&r.email).ok();
        if email.is_none() {
            violations.push((
                "email".into(),
                "must be an address such as ada@example.com".into(),
            ));
        }
        if r.password.chars().count() < 12 || r.password.len() > 1024 {
            violations.push(("password".into(), "must be 12 to 1024 characters".into()));
        }
        if r.display_name.chars().count() > 200 {
            violations.push((
                "display_name".into(),
                "must be at most 200 characters".into(),
            ));
        }
        let role = match pb::PlatformRole::try_from(r.platform_role) {
            Ok(pb::PlatformRole::SuperAdmin) => PlatformRole::SuperAdmin,
            Ok(pb::PlatformRole::User | pb::PlatformRole::Unspecified) => PlatformRole::User,
            Err(_) => {
                violations.push(("platform_role".into(), "must be SUPER_ADMIN or USER".into()));
                PlatformRole::User
            }
        };
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(AuthError::Fields(violations).into());
        };
        if role == PlatformRole::SuperAdmin && caller.platform_role != PlatformRole::SuperAdmin {
            return Err(AuthError::Forbidden.into());
        }
        let hash = self
            .passwords
            .hash(r.password.clone())
            .await
            .map_err(AuthError::Invalid)?;
        let display_name = r.display_name.trim().to_owned();
        let user = self
            .db
            .platform_tx(async |tx| {
                let user = repo::create_user(tx, &email, &display_name, &hash, role).await?;
                Event::new("auth.user_create", "user", user.id)
                    .new_value(serde_json::json!({ "email": user.email, "platform_role": user.platform_role }))
                    .record_for(tx, caller.tenant_id, &Actor::of(ctx))
                    .await?;
                Ok::<_, AuthError>(user)
            })
            .await?;
        tracing::info!(security = true, event = "user_created", user_id = %user.id, by = %caller.user_id, "user created");
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(pb::User {
                id: user.id.to_string(),
                email: user.email,
                display_name,
                platform_role: pb::PlatformRole::from(role).into(),
                is_active: user.is_active,
                create_time: None,
                update_time: None,
            }),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Reply<pb::ChangePasswordResponse> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let ctx = &ctx;
        let caller = ctx.tenant_user()?.clone();
        let r = request.into_inner();
        if r.new_password.chars().count() < 12 || r.new_password.len() > 1024 {
            return Err(AuthError::Fields(vec![(
                "new_password".into(),
                "must be 12 to 1024 characters".into(),
            )])
            .into());
        }
        let user = self
            .db
            .user_tx(caller.user_id, async |tx| repo::own_user(tx).await)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        if !self
            .passwords
            .verify(r.current_password, Some(user.password_hash))
            .await
        {
            return Err(AuthError::InvalidCredentials.into());
        }
        let hash = self
            .passwords
            .hash(r.new_password)
            .await
            .map_err(AuthError::Invalid)?;
        // The new hash, the end of every other session and the audit event: one transaction.
        let keep = *caller.session_id.as_uuid();
        let actor = Actor::of(ctx);
        let revoked = self
            .db
            .platform_tx(async |tx| {
                repo::set_password(tx, caller.user_id, &hash).await?;
                let revoked = repo::revoke(
                    tx,
                    Revoke::UserExcept(caller.user_id, keep),
                    "password changed",
                )
                .await?;
                Event::new("auth.password_change", "user", caller.user_id)
                    .new_value(serde_json::json!({ "sessions_revoked": revoked.len() }))
                    .record_for(tx, caller.tenant_id, &actor)
                    .await?;
                Ok::<_, AuthError>(revoked)
            })
            .await?;
        self.mark_revoked(&revoked);
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_count: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
        }))
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Reply<pb::IssueServiceTokenResponse> {
        use subtle::ConstantTimeEq as _;
        let r = request.into_inner();
        // Compare digests in constant time, and do it even for unknown clients.
        let given = sha2::Sha256::digest(r.client_secret.as_bytes());
        let mut matched: Option<&ServiceClient> = None;
        for client in &self.config.service_clients {
            let expected = sha2::Sha256::digest(client.secret.as_bytes());
            let same_secret: bool = given.ct_eq(&expected).into();
            if same_secret && client.client_id == r.client_id {
                matched = Some(client);
            }
        }
        let Some(client) = matched else {
            tracing::warn!(security = true, event = "service_auth_failure", client_id = %r.client_id, "bad client credentials");
            return Err(Status::unauthenticated("invalid client credentials"));
        };
        let identity = bulkhead_context::ServiceIdentity {
            name: client.client_id.clone(),
            scopes: client.scopes.clone(),
        };
        let claims = Claims::service(
            &self.config.issuer,
            &self.config.audience,
            &identity,
            self.config.service_ttl,
        );
        let token = self
            .signing_key()
            .sign(&claims)
            .map_err(|e| AuthError::Signing(e.to_string()))?;
        Ok(Response::new(pb::IssueServiceTokenResponse {
            access_token: token,
            expires_at: Some(prost_types::Timestamp {
                seconds: i64::try_from(claims.exp).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            scopes: client.scopes.clone(),
            service_name: client.client_id.clone(),
        }))
    }

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Reply<futures_util::stream::BoxStream<'static, Result<pb::WatchRevocationsResponse, Status>>>
    {
        use futures_util::StreamExt as _;
        let _ctx = RequestContext::from_request(&request)?;
        // Subscribe first, then load: nothing revoked in between is missed
        // (a session may come twice, which subscribers take as it is).
        let live = tokio_stream::wrappers::BroadcastStream::new(self.feed.subscribe());
        let current = self
            .db
            .platform_tx(async |tx| repo::revoked_unexpired(tx).await)
            .await?;
        let item = |(session, expires): (Uuid, DateTime<Utc>)| pb::WatchRevocationsResponse {
            session_id: session.to_string(),
            expires_at: Some(timestamp(expires)),
            revoke_time: Some(timestamp(Utc::now())),
        };
        let initial = futures_util::stream::iter(current.into_iter().map(move |r| Ok(item(r))));
        let live = live.map(move |event| match event {
            Ok(revoked) => Ok(item(revoked)),
            // A subscriber too slow to keep up must reconnect and reload.
            Err(_) => Err(Status::data_loss("revocation feed lagged: reconnect")),
        });
        Ok(Response::new(initial.chain(live).boxed()))
    }

    async fn revoke_sessions(
        &self,
        request: Request<pb::RevokeSessionsRequest>,
    ) -> Reply<pb::RevokeSessionsResponse> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let ctx = &ctx;
        let r = request.into_inner();
        // Every bad field reported at once.
        let mut violations: Vec<(String, String)> = Vec::new();
        let tenant = match r.tenant_id.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(text) => TenantId::parse(text)
                .map_err(|_| {
                    violations.push(("tenant_id".into(), "must be a tenant id (UUID)".into()))
                })
                .ok(),
        };
        let user = if r.user_id.is_empty() {
            None
        } else {
            UserId::parse(&r.user_id)
                .map_err(|_| violations.push(("user_id".into(), "must be a user id (UUID)".into())))
                .ok()
        };
        if r.user_id.is_empty() && r.tenant_id.as_deref().is_none_or(str::is_empty) {
            violations.push(("user_id".into(), "set user_id, tenant_id or both".into()));
        }
        let which = match (user, tenant) {
            _ if !violations.is_empty() => return Err(AuthError::Fields(violations).into()),
            (Some(user), tenant) => Revoke::User(user, tenant),
            (None, Some(tenant)) => Revoke::Tenant(tenant),
            (None, None) => return Err(AuthError::Fields(violations).into()),
        };
        let reason = if r.reason.is_empty() {
            "revoked".to_owned()
        } else {
            r.reason
        };
        // Idempotent: revoking what is already revoked changes nothing.
        let audit_tenant = tenant.unwrap_or_else(|| TenantId::from_uuid(Uuid::nil()));
        let revoked = self
            .revoke_audited(which, &reason, audit_tenant, &Actor::of(ctx))
            .await?;
        Ok(Response::new(pb::RevokeSessionsResponse {
            revoked_count: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
        }))
    }
}

/// Creates the first SUPER_ADMIN if no user has this email (idempotent): the
/// system path, before anyone can log in. Returns the user's id and whether it
/// was created now.
///
/// # Errors
/// When the database fails or the input is unusable.
pub async fn bootstrap_admin(
    db: &Db,
    email: &str,
    password: &str,
) -> Result<(UserId, bool), AuthError> {
    let email = check_email(email)?;
    if password.chars().count() < 12 {
        return Err(AuthError::Invalid(
            "the password must have at least 12 characters".into(),
        ));
    }
    let hash = Passwords::new(1)
        .hash(password.to_owned())
        .await
        .map_err(AuthError::Invalid)?;
    let (user, created) = db
        .platform_tx(async |tx| {
            repo::ensure_user(tx, &email, &hash, PlatformRole::SuperAdmin).await
        })
        .await?;
    Ok((UserId::from_uuid(user.id), created))
}

impl AuthApi {
    /// Fills the revoked set with the revoked, unexpired sessions (at start-up).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn load_revoked(&self) -> Result<(), AuthError> {
        let revoked = self
            .db
            .platform_tx(async |tx| repo::revoked_unexpired(tx).await)
            .await?;
        self.mark_revoked(&revoked);
        Ok(())
    }
}

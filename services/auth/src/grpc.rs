//! The gRPC handlers of Auth: take the context, turn the request into domain
//! values, do the work through the sessions and the repository, convert back.

use std::sync::Arc;

use bulkhead_clients::{MembershipView, TenantDirectory};
use bulkhead_context::{PlatformRole, TenantId, UserId};
use bulkhead_db::{Db, PlatformConn};
use bulkhead_guard::{RequestContext, RevokedSessions};
use bulkhead_outbox::audit::{Actor, Event};
use bulkhead_proto::auth::v1 as pb;
use bulkhead_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use bulkhead_rpc::{timestamp, unix_timestamp};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::config::{AuthConfig, ServiceClient, SharedKeys};
use crate::convert;
use crate::error::AuthError;
use crate::limits::LoginLimits;
use crate::password::Passwords;
use crate::repo::{self, Revoke};
use crate::requests::{ChangePassword, CreateUser, Login, RevokeSessions, SwitchTarget};
use crate::sessions::{Presented, RefreshStep, Sessions, next_step};
use crate::throttle::{Attempt, ThrottleConfig};
use crate::tokens::{Signer, refresh_hash};

/// The Auth service's handlers.
#[derive(Debug, Clone)]
pub struct AuthApi {
    db: Db,
    service_clients: Arc<[ServiceClient]>,
    signer: Signer,
    sessions: Sessions,
    passwords: Passwords,
    tenants: TenantDirectory,
    /// The in-process rate per client network.
    limits: Arc<LoginLimits>,
    /// The password-guessing caps, counted in the database.
    throttle: Arc<ThrottleConfig>,
}

impl AuthApi {
    /// Handlers over `db` (runtime and platform pools), signing with `keys`,
    /// reading memberships from `tenants`, and marking revoked sessions in
    /// `revoked` (the guards' set of this process).
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
        let signer = Signer::new(keys, config.clone());
        Self {
            sessions: Sessions::new(db.clone(), signer.clone(), config.refresh_ttl, revoked)
                .with_live_cap(config.login_limits.live_sessions_per_user),
            db,
            service_clients: config.service_clients.into(),
            signer,
            passwords: Passwords::new(hashers),
            tenants,
            limits: Arc::new(LoginLimits::new(&config.login_limits)),
            throttle: Arc::new(config.login_limits.throttle),
        }
    }

    /// The client's address: the peer's, or behind a trusted proxy the one it
    /// forwards.
    fn client_address<T>(&self, request: &Request<T>) -> Option<std::net::IpAddr> {
        // Every line of the header, in order: a proxy that appends a line
        // appends the truth last.
        let lines: Vec<&str> = request
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        crate::throttle::client_address(
            request.remote_addr().map(|a| a.ip()),
            &lines,
            &self.throttle.trusted_proxies,
        )
    }

    /// A password check passed: its attempt is taken back.
    async fn password_accepted(&self, attempt: &Attempt) -> Result<(), AuthError> {
        let throttle = &self.throttle;
        self.db
            .platform_tx(async |tx| throttle.succeeded(tx, attempt).await)
            .await
    }

    /// Counts an attempt on `account` from `client` (or says how long to
    /// wait), in one transaction with `lookup` (the reads the check needs:
    /// one transaction fewer per login); now and then, clears counters nobody
    /// needs any more, in a transaction of its own.
    async fn admit<T>(
        &self,
        account: &str,
        client: Option<std::net::IpAddr>,
        lookup: impl AsyncFnOnce(PlatformConn<'_>) -> Result<T, AuthError>,
    ) -> Result<(Attempt, T), AuthError> {
        if self.limits.due_for_purge() {
            let (db, throttle) = (self.db.clone(), self.throttle.clone());
            tokio::spawn(async move {
                match db.platform_tx(async |tx| throttle.purge(tx).await).await {
                    Ok(n) => tracing::debug!(deleted = n, "purged login counters"),
                    Err(err) => tracing::warn!(%err, "purging login counters failed"),
                }
            });
        }
        let throttle = &self.throttle;
        self.db
            .platform_tx(async |tx| {
                // The reads first: the counters' rows are locked from here
                // to the commit.
                let found = lookup(tx).await?;
                Ok((throttle.admit(tx, account, client).await?, found))
            })
            .await
    }

    /// Checks `password` against `hash` for an admitted attempt: a check that
    /// reaches no verdict (the hashers busy) is taken back, so it counts
    /// against nobody.
    async fn check_password(
        &self,
        attempt: &Attempt,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, AuthError> {
        match self.passwords.verify(password, hash).await {
            Ok(verdict) => Ok(verdict),
            Err(err) => {
                let throttle = &self.throttle;
                self.db
                    .platform_tx(async |tx| throttle.refund(tx, attempt).await)
                    .await?;
                Err(err.into())
            }
        }
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }

    /// Fills the revoked set with the revoked, unexpired sessions (at start-up).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn load_revoked(&self) -> Result<(), AuthError> {
        self.sessions.load_revoked().await
    }

    /// Follows the revocations other Auth replicas make (see
    /// [`Sessions::follow_database`]).
    #[must_use]
    pub fn follow_revocations(
        &self,
        every: std::time::Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        self.sessions.clone().follow_database(every, shutdown)
    }

    /// A rotated refresh token was shown again: someone holds a copy, or two
    /// holders raced with one token. The session (the token family) ends
    /// (OAuth 2.0 Security BCP §4.14); the caller gets the refusal to return.
    async fn end_family(&self, session: Uuid, actor: &Actor) -> Status {
        tracing::warn!(
            security = true,
            event = "refresh_reuse",
            "rotated refresh token reused: session revoked"
        );
        let platform = TenantId::from_uuid(Uuid::nil());
        match self
            .sessions
            .revoke(
                Revoke::Session(session),
                "refresh token reused",
                platform,
                actor,
            )
            .await
        {
            Ok(_) => AuthError::InvalidRefreshToken.into(),
            Err(err) => err.into(),
        }
    }

    /// The user's live memberships, read from Tenant.
    async fn memberships(&self, user: Uuid) -> Result<Vec<MembershipView>, AuthError> {
        self.tenants
            .memberships(&user.to_string())
            .await
            .map_err(|s| AuthError::TenantUnavailable(s.message().to_owned()))
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

/// The requested tenant (must be a membership), else the default one, else
/// the first: the oldest (Tenant lists them so; a membership another tenant's
/// ADMIN added later never becomes where a login without a slug lands).
fn pick(memberships: &[MembershipView], slug: Option<&str>) -> Option<MembershipView> {
    match slug {
        None => memberships
            .iter()
            .find(|m| m.is_default)
            .or_else(|| memberships.first())
            .cloned(),
        Some(slug) => memberships.iter().find(|m| m.slug == slug).cloned(),
    }
}

/// The user's live row, if they still exist and are active.
async fn active_user(db: &Db, user: UserId) -> Result<Option<repo::User>, AuthError> {
    Ok(db
        .user_tx(user, async |tx| repo::own_user(tx).await)
        .await?
        .filter(|u| u.is_active))
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let mut actor = anonymous(&request);
        let client = self.client_address(&request);
        let login = Login::try_from(request.into_inner())?;
        if let Err(wait) = self.limits.check(client) {
            return Err(AuthError::Throttled(wait).into());
        }
        let email = login.email.as_str();
        // Never a password: refused before it costs a counter or a hash.
        if login.password.len() > crate::password::MAX_PASSWORD_BYTES {
            return Err(AuthError::InvalidCredentials.into());
        }
        // With the attempt counted: the user, and a place in the order of
        // membership changes, drawn before the membership is read, for the
        // session's gate (`repo::gate_session`).
        let (attempt, (user, read)) = self
            .admit(&login.email.key(), client, async |tx| {
                let user = repo::user_by_email(tx, email).await?;
                Ok((user, repo::membership_read(tx).await?))
            })
            .await?;
        // Always pay one Argon2 verification, known user or not (similar timing).
        let verified = self
            .check_password(
                &attempt,
                login.password,
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await?;
        let known = user.as_ref().map(|u| u.id);
        let Some(user) = user.filter(|u| verified && u.is_active) else {
            tracing::info!(security = true, event = "login_failure", "login refused");
            self.audit_login_failure(email, known, &actor).await?;
            return Err(AuthError::InvalidCredentials.into());
        };
        actor.user_id = Some(user.id.to_string());
        // The password was right: whatever follows (no such tenant, Tenant
        // unreachable) is no guess.
        self.password_accepted(&attempt).await?;
        let memberships = self.memberships(user.id).await?;
        let Some(membership) = pick(&memberships, login.tenant_slug.as_deref()) else {
            tracing::info!(security = true, event = "login_failure", user_id = %user.id, "no accessible tenant");
            self.audit_login_failure(email, Some(user.id), &actor)
                .await?;
            return Err(AuthError::InvalidCredentials.into());
        };
        let tokens = self
            .sessions
            .start(&user, &membership, read, "auth.login", &actor, None)
            .await?;
        tracing::info!(security = true, event = "login_success", user_id = %user.id, tenant_id = %membership.tenant_id, "login");
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(convert::token_pair(tokens)),
            tenant: Some(convert::tenant_access(&membership)),
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Reply<pb::RefreshResponse> {
        let actor = anonymous(&request);
        let hash = refresh_hash(&request.into_inner().refresh_token);
        let presented: Presented = self
            .db
            .platform_tx(async |tx| repo::presented_refresh(tx, &hash).await)
            .await?;
        let session = match next_step(presented, chrono::Utc::now()) {
            RefreshStep::Rotate(session) => session,
            RefreshStep::Refuse => return Err(AuthError::InvalidRefreshToken.into()),
            RefreshStep::EndFamily(session) => {
                return Err(self.end_family(session, &actor).await);
            }
        };
        let user = active_user(&self.db, UserId::from_uuid(session.user_id))
            .await?
            .ok_or(AuthError::InvalidRefreshToken)?;
        // The membership is read live: a removed member cannot refresh.
        let memberships = self.memberships(user.id).await?;
        let Some(membership) = memberships
            .into_iter()
            .find(|m| *m.tenant_id.as_uuid() == session.tenant_id)
        else {
            let tenant = TenantId::from_uuid(session.tenant_id);
            self.sessions
                .revoke(
                    Revoke::Session(session.id),
                    "membership ended",
                    tenant,
                    &actor,
                )
                .await?;
            return Err(AuthError::InvalidRefreshToken.into());
        };
        // A revocation that committed after the membership was read (Tenant
        // removing the member) revoked this session: the swap refuses it.
        let tokens = match self
            .sessions
            .rotate(&user, &session, &hash, &membership)
            .await?
        {
            Ok(tokens) => tokens,
            Err(repo::NotRotated::Revoked) => return Err(AuthError::InvalidRefreshToken.into()),
            // Another refresh with this token won the swap: a second use of a
            // rotated token, whoever sent it.
            Err(repo::NotRotated::Superseded) => {
                return Err(self.end_family(session.id, &actor).await);
            }
        };
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(convert::token_pair(tokens)),
            tenant: Some(convert::tenant_access(&membership)),
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
            .sessions
            .revoke(which, "logout", user.tenant_id, &Actor::of(ctx))
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
            tenant_role: bulkhead_proto::tenant::v1::TenantRole::from(user.tenant_role).into(),
            session_id: user.session_id.to_string(),
            switchable_tenants: memberships.iter().map(convert::tenant_access).collect(),
            access_token_expires_at: None,
        }))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        // Every published key: during a rotation, the next one and the previous one.
        let jwks = self.signer.public_jwks();
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: serde_json::json!({ "keys": jwks }).to_string(),
            keys: jwks.iter().map(convert::jwk).collect(),
        }))
    }

    async fn switch_tenant(
        &self,
        request: Request<pb::SwitchTenantRequest>,
    ) -> Reply<pb::SwitchTenantResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let caller = ctx.tenant_user()?;
        let target = SwitchTarget::try_from(request.get_ref())?;
        if let Err(wait) = self.limits.check_switch(&caller.user_id.to_string()) {
            return Err(AuthError::TooManySessions(wait).into());
        }
        let user = active_user(&self.db, caller.user_id)
            .await?
            .ok_or(AuthError::Forbidden)?;
        let read = self.sessions.membership_read().await?;
        // Checked live with Tenant, never from the token.
        let memberships = self.memberships(user.id).await?;
        let Some(membership) = memberships.into_iter().find(|m| match &target {
            SwitchTarget::Id(id) => m.tenant_id == *id,
            SwitchTarget::Slug(slug) => &m.slug == slug,
        }) else {
            tracing::warn!(security = true, event = "switch_refused", user_id = %user.id, "switch to a tenant without membership");
            return Err(AuthError::NotAMember.into());
        };
        let tokens = self
            .sessions
            .start(
                &user,
                &membership,
                read,
                "auth.switch_tenant",
                &Actor::of(ctx),
                Some(crate::repo::Switch {
                    from: caller.session_id,
                    per_minute: self.limits.sessions_per_user_per_minute,
                }),
            )
            .await?;
        Ok(Response::new(pb::SwitchTenantResponse {
            tokens: Some(convert::token_pair(tokens)),
            tenant: Some(convert::tenant_access(&membership)),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Reply<pb::CreateUserResponse> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let caller = ctx.tenant_user()?;
        let new = CreateUser::try_from(request.into_inner())?;
        if new.platform_role == PlatformRole::SuperAdmin
            && caller.platform_role != PlatformRole::SuperAdmin
        {
            return Err(AuthError::Forbidden.into());
        }
        let hash = self
            .passwords
            .hash(new.password.expose())
            .await
            .map_err(AuthError::from)?;
        // Hashing takes a while: the caller's session may have ended since.
        ctx.still_stands()?;
        let actor = Actor::of(&ctx);
        let user = self
            .db
            .platform_tx(async |tx| {
                let user = repo::create_user(
                    tx,
                    new.email.as_str(),
                    new.display_name.as_str(),
                    &hash,
                    new.platform_role,
                )
                .await?;
                Event::new("auth.user_create", "user", user.id)
                    .new_value(serde_json::json!({ "email": user.email, "platform_role": user.platform_role }))
                    .record_for(tx, caller.tenant_id, &actor)
                    .await?;
                Ok::<_, AuthError>(user)
            })
            .await?;
        tracing::info!(security = true, event = "user_created", user_id = %user.id, by = %caller.user_id, "user created");
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(convert::user(&user)),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Reply<pb::ChangePasswordResponse> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let caller = ctx.tenant_user()?;
        let client = self.client_address(&request);
        let change = ChangePassword::try_from(request.into_inner())?;
        let user = self
            .db
            .user_tx(caller.user_id, async |tx| repo::own_user(tx).await)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        // The current password is checked under the login caps: a stolen
        // access token is no free password oracle.
        if let Err(wait) = self.limits.check(client) {
            return Err(AuthError::Throttled(wait).into());
        }
        if change.current.len() > crate::password::MAX_PASSWORD_BYTES {
            return Err(AuthError::InvalidCredentials.into());
        }
        let (attempt, ()) = self
            .admit(&user.email.to_lowercase(), client, async |_| Ok(()))
            .await?;
        if !self
            .check_password(&attempt, change.current, Some(user.password_hash))
            .await?
        {
            return Err(AuthError::InvalidCredentials.into());
        }
        // The check took a while: a session ended since earns nothing.
        ctx.still_stands()?;
        self.password_accepted(&attempt).await?;
        let hash = self
            .passwords
            .hash(change.new.expose())
            .await
            .map_err(AuthError::from)?;
        // Two hashings take a while: the caller's session may have ended since.
        ctx.still_stands()?;
        // The new hash, the end of every other session and the audit event: one transaction.
        let keep = *caller.session_id.as_uuid();
        let actor = Actor::of(&ctx);
        let revoked = self
            .db
            .platform_tx(async |tx| {
                // A revocation of this session committed on another
                // replica, which this one's guard may not have heard yet,
                // refuses the change; one still running waits for it.
                let live = repo::hold_live_session(
                    tx,
                    caller.user_id,
                    caller.tenant_id,
                    caller.session_id,
                )
                .await?;
                if !live {
                    return Err(AuthError::SessionRevoked);
                }
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
        self.sessions.mark_revoked(&revoked);
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_count: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
        }))
    }

    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Reply<pb::IssueServiceTokenResponse> {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let client = self.client_address(&request);
        // Where service tokens are bound to client certificates (mutual
        // TLS), so is minting one: a leaked secret mints nothing without the
        // service's key.
        let extensions = request.extensions();
        let uncertified = extensions
            .get::<bulkhead_guard::ServiceCertificatesBound>()
            .is_some()
            && !bulkhead_guard::presented_certificate_for(extensions, &request.get_ref().client_id);
        let r = request.into_inner();
        // Compare digests in constant time, and do it even for unknown clients.
        let given = sha2::Sha256::digest(r.client_secret.as_bytes());
        let mut matched: Option<&ServiceClient> = None;
        for client in self.service_clients.iter() {
            let expected = sha2::Sha256::digest(client.secret.as_bytes());
            let same_secret: bool = given.ct_eq(&expected).into();
            if same_secret && client.client_id == r.client_id {
                matched = Some(client);
            }
        }
        let Some(client) = matched.filter(|_| !uncertified) else {
            tracing::warn!(security = true, event = "service_auth_failure", client_id = %r.client_id, "bad client credentials");
            // Failures only, per client network: nobody can spend a rate the
            // services need to renew their tokens.
            if let Err(wait) = self.limits.check_service_failure(client) {
                return Err(AuthError::Throttled(wait).into());
            }
            return Err(Status::unauthenticated("invalid client credentials"));
        };
        let identity = bulkhead_context::ServiceIdentity {
            name: client.client_id.clone(),
            scopes: client.scopes.clone(),
        };
        let (token, exp) = self.signer.service(&identity)?;
        Ok(Response::new(pb::IssueServiceTokenResponse {
            access_token: token,
            expires_at: Some(unix_timestamp(exp)),
            scopes: client.scopes.clone(),
            service_name: client.client_id.clone(),
        }))
    }

    type WatchRevocationsStream =
        futures_util::stream::BoxStream<'static, Result<pb::WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Reply<Self::WatchRevocationsStream> {
        use futures_util::StreamExt as _;
        // Served while its token is valid: the stream ends UNAUTHENTICATED
        // at its first message (a heartbeat comes every second) after the
        // token expires, and the subscriber comes back with a fresh one.
        let ctx = RequestContext::from_request(&request)?.clone();
        // Subscribe first, then load: nothing revoked in between is missed
        // (a session may come twice, which subscribers take as it is).
        let live = tokio_stream::wrappers::BroadcastStream::new(self.sessions.subscribe());
        let current = self.sessions.revoked_unexpired().await?;
        let item = |(session, expires): crate::sessions::Revoked| pb::WatchRevocationsResponse {
            session_id: session.to_string(),
            expires_at: Some(timestamp(expires)),
            revoke_time: Some(timestamp(chrono::Utc::now())),
            heartbeat: false,
            in_step_time: None,
        };
        let initial = futures_util::stream::iter(current.into_iter().map(move |r| Ok(item(r))));
        let live = live.map(move |event| match event {
            Ok(revoked) => Ok(item(revoked)),
            // A subscriber too slow to keep up must reconnect and reload.
            Err(_) => Err(Status::data_loss("revocation feed lagged: reconnect")),
        });
        // Heartbeats say the feed is live, and only while this Auth is in step
        // with the revocations other replicas store; once it is not, the
        // stream ends and its subscribers reconnect elsewhere.
        let heartbeat = |in_step: std::time::SystemTime| pb::WatchRevocationsResponse {
            heartbeat: true,
            in_step_time: Some(timestamp(chrono::DateTime::<chrono::Utc>::from(in_step))),
            ..pb::WatchRevocationsResponse::default()
        };
        // The backlog was read just now.
        let caught_up = futures_util::stream::once(std::future::ready(Ok(heartbeat(
            std::time::SystemTime::now(),
        ))));
        let sessions = self.sessions.clone();
        let mut every = tokio::time::interval(crate::sessions::HEARTBEAT_EVERY);
        // A stalled stream gets the next beat, not a burst of old ones.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let beats = tokio_stream::wrappers::IntervalStream::new(every).map(move |_| {
            if sessions.in_step() {
                Ok(heartbeat(sessions.in_step_since()))
            } else {
                Err(Status::unavailable(
                    "this Auth is behind the stored revocations: reconnect",
                ))
            }
        });
        let live = futures_util::stream::select(live, beats);
        let answer = initial.chain(caught_up).chain(live).map(move |item| {
            ctx.still_stands()?;
            item
        });
        Ok(Response::new(answer.boxed()))
    }

    async fn revoke_sessions(
        &self,
        request: Request<pb::RevokeSessionsRequest>,
    ) -> Reply<pb::RevokeSessionsResponse> {
        let ctx = RequestContext::from_request(&request)?.clone();
        let revoke = RevokeSessions::try_from(request.into_inner())?;
        // Idempotent: revoking what is already revoked changes nothing.
        let revoked = self
            .sessions
            .revoke(
                revoke.which,
                &revoke.reason,
                revoke.audit_tenant,
                &Actor::of(&ctx),
            )
            .await?;
        Ok(Response::new(pb::RevokeSessionsResponse {
            revoked_count: i32::try_from(revoked.len()).unwrap_or(i32::MAX),
        }))
    }
}

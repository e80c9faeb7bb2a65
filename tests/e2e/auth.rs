//! Auth and Tenant together on real sockets: logging in, refresh rotation and
//! reuse detection, and a removed member's token refused by another service
//! within two seconds (Tenant's outbox → Auth's RevokeSessions → the guards).

use bulkhead_testkit::bearer;
use std::time::{Duration, Instant};

use super::support::{TestSuite, spawn_suite_with};
use bulkhead::services::ServiceKind;
use bulkhead_auth::Existing;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use tonic::Code;
use tonic::transport::Channel;

/// A user in Auth (created on the system path) and their tenants in Tenant.
struct World {
    /// Keeps the servers running.
    _suite: TestSuite,
    auth: AuthServiceClient<Channel>,
    tenants: TenantServiceClient<Channel>,
    alice: UserId,
    bob: UserId,
    acme: tenant::Tenant,
    globex: tenant::Tenant,
}

const PASSWORD: &str = "correct horse battery staple";

async fn world() -> World {
    world_with(bulkhead_auth::LimitsConfig::default()).await
}

async fn world_with(limits: bulkhead_auth::LimitsConfig) -> World {
    let suite = spawn_suite_with(limits).await;
    let auth_db = suite.databases["auth"].clone();
    let db = auth_db.app_db(4).await;
    let alice =
        bulkhead_auth::bootstrap_admin(&db, "alice@example.com", PASSWORD, Existing::Verify)
            .await
            .expect("alice")
            .user_id();
    let bob = bulkhead_auth::bootstrap_admin(&db, "bob@example.com", PASSWORD, Existing::Verify)
        .await
        .expect("bob")
        .user_id();
    let mut tenants = TenantServiceClient::new(suite.channel(ServiceKind::Tenant));
    let operator = suite.operator_token();
    let create = |slug: &str, owner: UserId| {
        bearer(
            &operator,
            tenant::CreateTenantRequest {
                slug: slug.into(),
                name: slug.into(),
                domain: String::new(),
                owner_user_id: owner.to_string(),
            },
        )
    };
    let acme = tenants
        .create_tenant(create("acme", alice))
        .await
        .expect("acme")
        .into_inner()
        .tenant
        .expect("t");
    let globex = tenants
        .create_tenant(create("globex", bob))
        .await
        .expect("globex")
        .into_inner()
        .tenant
        .expect("t");
    let auth = AuthServiceClient::new(suite.channel(ServiceKind::Auth));
    World {
        _suite: suite,
        auth,
        tenants,
        alice,
        bob,
        acme,
        globex,
    }
}

async fn login(
    w: &World,
    email: &str,
    password: &str,
    slug: &str,
) -> Result<auth::LoginResponse, tonic::Status> {
    w.auth
        .clone()
        .login(auth::LoginRequest {
            email: email.into(),
            password: password.into(),
            tenant_slug: slug.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_into_the_default_or_a_named_tenant() {
    let w = world().await;
    let default = login(&w, "ALICE@example.com", PASSWORD, "")
        .await
        .expect("login");
    assert_eq!(default.tenant.as_ref().expect("tenant").slug, "acme");
    let access = default.tokens.expect("tokens").access_token;
    let me = w
        .auth
        .clone()
        .who_am_i(bearer(&access, auth::WhoAmIRequest {}))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.user_id, w.alice.to_string());
    assert_eq!(me.tenant_id, w.acme.id);
    assert_eq!(me.email, "alice@example.com");

    // The access token works in another service, for exactly its tenant.
    let members = w
        .tenants
        .clone()
        .list_members(bearer(&access, tenant::ListMembersRequest::default()))
        .await
        .expect("tenant accepts Auth's token")
        .into_inner();
    assert!(members.memberships.iter().all(|m| m.tenant_id == w.acme.id));

    // Bob joins acme as a VIEWER; he can now log into it by name.
    let bob_in_globex = login(&w, "bob@example.com", PASSWORD, "")
        .await
        .expect("bob")
        .tokens
        .expect("t");
    assert_eq!(
        login(&w, "bob@example.com", PASSWORD, "acme")
            .await
            .expect_err("not yet")
            .code(),
        Code::Unauthenticated
    );
    w.tenants
        .clone()
        .add_member(bearer(
            &access,
            tenant::AddMemberRequest {
                user_id: w.bob.to_string(),
                role: tenant::TenantRole::Viewer.into(),
            },
        ))
        .await
        .expect("add bob");
    let named = login(&w, "bob@example.com", PASSWORD, "acme")
        .await
        .expect("named tenant");
    assert_eq!(
        named.tenant.expect("tenant").role,
        tenant::TenantRole::Viewer as i32
    );
    let _ = (bob_in_globex, &w.globex);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_no_tenant_look_the_same() {
    let w = world().await;
    let wrong = login(&w, "alice@example.com", "not the password", "")
        .await
        .expect_err("wrong");
    let unknown = login(&w, "nobody@example.com", PASSWORD, "")
        .await
        .expect_err("unknown");
    let foreign = login(&w, "alice@example.com", PASSWORD, "globex")
        .await
        .expect_err("no membership");
    let garbage = login(&w, "not-an-email", PASSWORD, "")
        .await
        .expect_err("garbage");
    for status in [&wrong, &unknown, &foreign, &garbage] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid credentials");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_reused_token_ends_the_session_everywhere() {
    let w = world().await;
    let first = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("login")
        .tokens
        .expect("tokens");
    let second = w
        .auth
        .clone()
        .refresh(auth::RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .expect("rotation")
        .into_inner()
        .tokens
        .expect("tokens");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.session_id, first.session_id);
    w.tenants
        .clone()
        .list_members(bearer(
            &second.access_token,
            tenant::ListMembersRequest::default(),
        ))
        .await
        .expect("the new access token works");

    // The first refresh token again: reuse. The whole session ends.
    let reused = w
        .auth
        .clone()
        .refresh(auth::RefreshRequest {
            refresh_token: first.refresh_token,
        })
        .await
        .expect_err("reuse");
    assert_eq!(reused.code(), Code::Unauthenticated);
    // At once where it was revoked; within 2 s on every replica of Tenant.
    for endpoint in w._suite.endpoints(ServiceKind::Tenant) {
        let replica = TenantServiceClient::new(
            tonic::transport::Endpoint::from_shared(endpoint)
                .expect("endpoint")
                .connect_lazy(),
        );
        let list = || {
            let mut tenants = replica.clone();
            let request = bearer(&second.access_token, tenant::ListMembersRequest::default());
            async move { tenants.list_members(request).await.map(drop) }
        };
        until_answers(
            "revoked in every service",
            Some(Code::Unauthenticated),
            Duration::from_secs(2),
            list,
        )
        .await;
        let status = list().await.expect_err("revoked");
        assert_eq!(status.message(), "session revoked");
    }
    let status = w
        .auth
        .clone()
        .refresh(auth::RefreshRequest {
            refresh_token: second.refresh_token,
        })
        .await
        .expect_err("the family is dead");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_members_token_stops_working_within_two_seconds() {
    let w = world().await;
    let alice = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("alice")
        .tokens
        .expect("t");
    w.tenants
        .clone()
        .add_member(bearer(
            &alice.access_token,
            tenant::AddMemberRequest {
                user_id: w.bob.to_string(),
                role: tenant::TenantRole::Member.into(),
            },
        ))
        .await
        .expect("add bob");
    let bob = login(&w, "bob@example.com", PASSWORD, "acme")
        .await
        .expect("bob")
        .tokens
        .expect("t");
    w.tenants
        .clone()
        .list_members(bearer(
            &bob.access_token,
            tenant::ListMembersRequest::default(),
        ))
        .await
        .expect("bob is in");

    w.tenants
        .clone()
        .remove_member(bearer(
            &alice.access_token,
            tenant::RemoveMemberRequest {
                user_id: w.bob.to_string(),
            },
        ))
        .await
        .expect("removed");
    let removed_at = Instant::now();
    loop {
        let result = w
            .tenants
            .clone()
            .list_members(bearer(
                &bob.access_token,
                tenant::ListMembersRequest::default(),
            ))
            .await;
        if let Err(status) = result {
            assert_eq!(status.message(), "session revoked", "{status:?}");
            break;
        }
        assert!(
            removed_at.elapsed() < Duration::from_secs(2),
            "bob's token still works after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = w
        .auth
        .clone()
        .refresh(auth::RefreshRequest {
            refresh_token: bob.refresh_token,
        })
        .await
        .expect_err("no refresh after removal");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_this_session_and_internal_rpcs_need_a_service() {
    let w = world().await;
    let tokens = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("login")
        .tokens
        .expect("t");
    let other = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("login")
        .tokens
        .expect("t");
    let out = w
        .auth
        .clone()
        .logout(bearer(
            &tokens.access_token,
            auth::LogoutRequest {
                all_sessions: false,
            },
        ))
        .await
        .expect("logout")
        .into_inner();
    assert_eq!(out.revoked_count, 1);
    // At once on the Auth that ended it; within 2 s on every replica.
    until_answers(
        "out",
        Some(Code::Unauthenticated),
        Duration::from_secs(2),
        || {
            let mut auth = w.auth.clone();
            let request = bearer(&tokens.access_token, auth::WhoAmIRequest {});
            async move { auth.who_am_i(request).await.map(drop) }
        },
    )
    .await;
    w.auth
        .clone()
        .who_am_i(bearer(&other.access_token, auth::WhoAmIRequest {}))
        .await
        .expect("the other session lives");

    let status = w
        .auth
        .clone()
        .revoke_sessions(bearer(
            &other.access_token,
            auth::RevokeSessionsRequest {
                user_id: w.alice.to_string(),
                tenant_id: None,
                reason: "x".into(),
            },
        ))
        .await
        .expect_err("users cannot call internal RPCs");
    assert_eq!(status.code(), Code::PermissionDenied);

    // The published key set verifies Auth's tokens.
    let jwks = w
        .auth
        .clone()
        .get_jwks(auth::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&jwks.jwks_json).expect("RFC 7517 JSON");
    let header = jsonwebtoken::decode_header(&other.access_token).expect("header");
    let jwk = set
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in set");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["bulkhead"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&other.access_token, &key, &validation)
        .expect("verifies");
    assert_eq!(claims.claims["sub"], w.alice.to_string());
    assert_eq!(claims.claims["tid"], w.acme.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_tenant_is_checked_live_with_tenant() {
    let w = world().await;
    let alice = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("alice")
        .tokens
        .expect("t");
    let bob = login(&w, "bob@example.com", PASSWORD, "")
        .await
        .expect("bob")
        .tokens
        .expect("t");
    // Bob owns globex; he joins acme, then switches to it.
    w.tenants
        .clone()
        .add_member(bearer(
            &alice.access_token,
            tenant::AddMemberRequest {
                user_id: w.bob.to_string(),
                role: tenant::TenantRole::Admin.into(),
            },
        ))
        .await
        .expect("add bob");
    let switched = w
        .auth
        .clone()
        .switch_tenant(bearer(
            &bob.access_token,
            auth::SwitchTenantRequest {
                tenant: Some(auth::switch_tenant_request::Tenant::TenantSlug(
                    "acme".into(),
                )),
            },
        ))
        .await
        .expect("switch")
        .into_inner();
    let access = switched.tokens.expect("tokens").access_token;
    let me = w
        .auth
        .clone()
        .who_am_i(bearer(&access, auth::WhoAmIRequest {}))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.tenant_id, w.acme.id);
    assert_eq!(me.tenant_role, tenant::TenantRole::Admin as i32);
    assert_eq!(me.switchable_tenants.len(), 2);

    // Alice belongs to acme only: globex is refused.
    let status = w
        .auth
        .clone()
        .switch_tenant(bearer(
            &alice.access_token,
            auth::SwitchTenantRequest {
                tenant: Some(auth::switch_tenant_request::Tenant::TenantId(
                    w.globex.id.clone(),
                )),
            },
        ))
        .await
        .expect_err("not a member");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_users_and_a_password_change_ends_other_sessions() {
    let w = world().await;
    let alice = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("alice")
        .tokens
        .expect("t");
    let created = w
        .auth
        .clone()
        .create_user(bearer(
            &alice.access_token,
            auth::CreateUserRequest {
                email: "carol@example.com".into(),
                password: "carol's long password".into(),
                display_name: "Carol".into(),
                platform_role: 0,
            },
        ))
        .await
        .expect("create")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(created.platform_role, auth::PlatformRole::User as i32);
    let again = w
        .auth
        .clone()
        .create_user(bearer(
            &alice.access_token,
            auth::CreateUserRequest {
                email: "CAROL@example.com".into(),
                password: "another long password".into(),
                display_name: String::new(),
                platform_role: 0,
            },
        ))
        .await
        .expect_err("taken");
    assert_eq!(again.code(), Code::AlreadyExists);
    let bad = w
        .auth
        .clone()
        .create_user(bearer(
            &alice.access_token,
            auth::CreateUserRequest {
                email: "nope".into(),
                password: "short".into(),
                display_name: String::new(),
                platform_role: 0,
            },
        ))
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("email") && bad.message().contains("password"),
        "{}",
        bad.message()
    );

    // Two sessions; changing the password from one ends the other.
    let other = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("again")
        .tokens
        .expect("t");
    let wrong = w
        .auth
        .clone()
        .change_password(bearer(
            &alice.access_token,
            auth::ChangePasswordRequest {
                current_password: "wrong".into(),
                new_password: "a brand new password".into(),
            },
        ))
        .await
        .expect_err("current password required");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let changed = w
        .auth
        .clone()
        .change_password(bearer(
            &alice.access_token,
            auth::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "a brand new password".into(),
            },
        ))
        .await
        .expect("changed")
        .into_inner();
    assert_eq!(changed.revoked_count, 1);
    w.auth
        .clone()
        .who_am_i(bearer(&alice.access_token, auth::WhoAmIRequest {}))
        .await
        .expect("this session goes on");
    // At once on the Auth that changed it; within 2 s on every replica.
    let started = Instant::now();
    let status = loop {
        match w
            .auth
            .clone()
            .who_am_i(bearer(&other.access_token, auth::WhoAmIRequest {}))
            .await
        {
            Err(status) => break status,
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(2),
                "the other session still answers after 2 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.message(), "session revoked");
    assert!(login(&w, "alice@example.com", PASSWORD, "").await.is_err());
    login(&w, "alice@example.com", "a brand new password", "")
        .await
        .expect("the new password works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_tokens_with_client_credentials_and_watch_revocations() {
    let w = world().await;
    let bad = w
        .auth
        .clone()
        .issue_service_token(auth::IssueServiceTokenRequest {
            client_id: "task".into(),
            client_secret: "wrong".into(),
        })
        .await
        .expect_err("bad secret");
    assert_eq!(bad.code(), Code::Unauthenticated);
    let issued = w
        .auth
        .clone()
        .issue_service_token(auth::IssueServiceTokenRequest {
            client_id: "task".into(),
            client_secret: super::support::TASK_CLIENT_SECRET.into(),
        })
        .await
        .expect("issued")
        .into_inner();
    assert_eq!(issued.service_name, "task");

    // The service token opens internal RPCs; a user's token does not.
    let alice = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("alice")
        .tokens
        .expect("t");
    let user_watch = w
        .auth
        .clone()
        .watch_revocations(bearer(
            &alice.access_token,
            auth::WatchRevocationsRequest {},
        ))
        .await;
    assert_eq!(
        user_watch.expect_err("users cannot watch").code(),
        Code::PermissionDenied
    );
    let mut watch = tonic::Request::new(auth::WatchRevocationsRequest {});
    watch.metadata_mut().insert(
        "x-service-authorization",
        format!("Bearer {}", issued.access_token)
            .parse()
            .expect("ascii"),
    );
    let mut stream = w
        .auth
        .clone()
        .watch_revocations(watch)
        .await
        .expect("watch")
        .into_inner();

    w.auth
        .clone()
        .logout(bearer(
            &alice.access_token,
            auth::LogoutRequest {
                all_sessions: false,
            },
        ))
        .await
        .expect("logout");
    let item = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let item = stream.message().await.expect("stream").expect("an item");
            if !item.heartbeat {
                return item;
            }
        }
    })
    .await
    .expect("a revocation within 2 s");
    assert_eq!(item.session_id, alice.session_id);
}

/// An Auth that cannot read the revocations other replicas store (here: the
/// sessions table locked away from it) stops saying its feed is live and
/// ends its streams with UNAVAILABLE, so their guards fail closed and
/// reconnect elsewhere; once it reads again, new streams are live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_behind_the_stored_revocations_ends_its_streams() {
    use diesel_async::SimpleAsyncConnection as _;
    let w = world().await;
    let watch = || {
        let mut request = tonic::Request::new(auth::WatchRevocationsRequest {});
        request.metadata_mut().insert(
            "x-service-authorization",
            format!("Bearer {}", w._suite.service_token("task"))
                .parse()
                .expect("ascii"),
        );
        let mut auth = w.auth.clone();
        async move { auth.watch_revocations(request).await }
    };
    let mut stream = watch().await.expect("watch").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an answer")
        .expect("stream")
        .expect("a heartbeat");
    assert!(first.heartbeat, "nothing was revoked: a heartbeat first");

    let mut lock = w._suite.databases["auth"].admin_connection().await;
    lock.batch_execute("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            match stream.message().await {
                Ok(Some(item)) => assert!(item.heartbeat, "{item:?}"),
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(
        started.elapsed() >= bulkhead_auth::IN_STEP_WITHIN - Duration::from_secs(1),
        "ended after {:?}, before its bound",
        started.elapsed()
    );
    lock.batch_execute("ROLLBACK").await.expect("unlock");
    // Once it reads again, a new stream is live.
    let mut stream = watch().await.expect("watch again").into_inner();
    let item = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let item = stream.message().await.expect("stream").expect("an item");
            if item.heartbeat {
                return item;
            }
        }
    })
    .await
    .expect("a heartbeat");
    assert!(item.heartbeat);
}

/// IssueServiceToken is public, like Login: failed guesses from one network
/// meet a rate per network (a burst of 30 by default) and then wait; a right
/// secret is never held up (nobody can keep a service from its token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuing_service_tokens_is_held_to_the_login_rate() {
    let w = world().await;
    let issue = |secret: &str| {
        let mut auth = w.auth.clone();
        let request = auth::IssueServiceTokenRequest {
            client_id: "task".into(),
            client_secret: secret.into(),
        };
        async move { auth.issue_service_token(request).await }
    };
    // Each Auth process keeps its own rate (the guessing caps proper are in
    // the database): over replicas, each has its burst.
    let replicas = w._suite.endpoints(ServiceKind::Auth).len();
    let mut refused = 0;
    let mut throttled = 0;
    let started = Instant::now();
    for n in 0..120 {
        match issue(&format!("guess-{n}")).await {
            Err(status) if status.code() == Code::Unauthenticated => refused += 1,
            Err(status) if status.code() == Code::ResourceExhausted => throttled += 1,
            other => panic!("guess {n}: {other:?}"),
        }
    }
    // The rate refills at 2 a second (120 a minute) in each process
    // meanwhile: a slow machine gets more checked, never more than that.
    let refilled = 2 * usize::try_from(started.elapsed().as_secs() + 1).unwrap_or(usize::MAX);
    assert!(
        (25 * replicas..=(31 + refilled) * replicas).contains(&refused),
        "{refused} guesses checked by {replicas} Auth(s) in {:?}",
        started.elapsed()
    );
    assert_eq!(refused + throttled, 120);
    issue(super::support::TASK_CLIENT_SECRET)
        .await
        .expect("the right secret is not held up");
}

/// Live (unrevoked) sessions matching `filter` (SQL over `sessions`, from
/// the test's own ids), read as the database superuser.
async fn live_sessions(w: &World, filter: &str) -> i64 {
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut admin = w._suite.databases["auth"].admin_connection().await;
    let count: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL AND {filter}"
    ))
    .get_result(&mut admin)
    .await
    .expect("count");
    count.n
}

/// The actions in Auth's outbox, oldest first, read as the database superuser.
async fn auth_audit_actions(w: &World) -> Vec<serde_json::Value> {
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        payload: serde_json::Value,
    }
    let mut conn = w._suite.databases["auth"].admin_connection().await;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT payload FROM outbox WHERE topic = 'audit' ORDER BY create_time, seq",
    )
    .load(&mut conn)
    .await
    .expect("outbox");
    rows.into_iter().map(|r| r.payload).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_failures_are_audited_without_secrets() {
    let w = world().await;
    let ok = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("login")
        .tokens
        .expect("t");
    login(&w, "alice@example.com", "a wrong password", "")
        .await
        .expect_err("wrong");
    let events = auth_audit_actions(&w).await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, vec!["auth.login", "auth.login_failure"]);
    let text = serde_json::to_string(&events).expect("json");
    assert!(
        !text.contains(PASSWORD) && !text.contains("a wrong password"),
        "no password in audit"
    );
    assert!(
        !text.contains(&ok.access_token) && !text.contains(&ok.refresh_token),
        "no token in audit"
    );
    assert_eq!(events[0]["tenant_id"], w.acme.id);
    assert_eq!(
        events[1]["tenant_id"],
        "00000000-0000-0000-0000-000000000000"
    );
}

/// A login as the client at `address` (through a trusted proxy on loopback).
async fn login_from(
    w: &World,
    address: &str,
    email: &str,
    password: &str,
) -> Result<auth::LoginResponse, tonic::Status> {
    let mut request = tonic::Request::new(auth::LoginRequest {
        email: email.into(),
        password: password.into(),
        tenant_slug: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().expect("ascii"));
    w.auth
        .clone()
        .login(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Auth behind a proxy on loopback, with caps small enough to reach.
async fn throttled_world() -> World {
    world_with(bulkhead_auth::LimitsConfig {
        per_peer_per_minute: 100_000,
        sessions_per_user_per_minute: 100_000,
        live_sessions_per_user: bulkhead_auth::LimitsConfig::default().live_sessions_per_user,
        throttle: bulkhead_auth::ThrottleConfig {
            free_failures: 5,
            account_failures_per_hour: 12,
            network_failures_per_hour: 15,
            trusted_proxies: vec!["127.0.0.0/8".parse().expect("net")],
        },
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_waits_on_the_guessers_network_and_the_owner_still_logs_in() {
    use tonic_types::StatusExt as _;
    let w = throttled_world().await;
    let attacker = "203.0.113.66";
    for _ in 0..6 {
        let status = login_from(&w, attacker, "alice@example.com", "a wrong password")
            .await
            .expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // The guesser's network waits, even with the right password; the answer
    // says how long.
    let status = login_from(&w, attacker, "alice@example.com", PASSWORD)
        .await
        .expect_err("waits");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let delay = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    // Alice, from her own network, is not kept out (the attack of finding 2).
    login_from(&w, "198.51.100.7", "alice@example.com", PASSWORD)
        .await
        .expect("the owner logs in from elsewhere");
    // Without a trusted proxy the header is nobody's to set: the default
    // suite ignores it (all of these come from 127.0.0.1, and are refused
    // as one network).
    tokio::time::sleep(delay + Duration::from_millis(100)).await;
    login_from(&w, attacker, "alice@example.com", PASSWORD)
        .await
        .expect("after the wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_are_capped_per_account_and_per_network_across_replicas_of_the_count() {
    let w = throttled_world().await;
    // Alice logs in from home once: a known network.
    login_from(&w, "198.51.100.7", "alice@example.com", PASSWORD)
        .await
        .expect("home");
    // 12 guesses from 12 networks: the account's hourly cap.
    for i in 0..12 {
        let status = login_from(&w, &format!("192.0.2.{i}"), "alice@example.com", "wrong")
            .await
            .expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated, "guess {i}");
    }
    // A 13th network is refused before any password is checked; home is not.
    let status = login_from(&w, "192.0.2.200", "alice@example.com", PASSWORD)
        .await
        .expect_err("capped");
    assert_eq!(status.code(), Code::ResourceExhausted);
    login_from(&w, "198.51.100.7", "alice@example.com", PASSWORD)
        .await
        .expect("a known network still gets in");
    // One network guessing across accounts: 15 failures an hour, then even
    // bob's right password from it waits. IPv6 counts per /64.
    for i in 0..15 {
        let status = login_from(
            &w,
            &format!("2001:db8:7:7::{i:x}"),
            &format!("nobody{i}@example.com"),
            "wrong",
        )
        .await
        .expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated, "guess {i}");
    }
    let status = login_from(&w, "2001:db8:7:7:ffff::1", "bob@example.com", PASSWORD)
        .await
        .expect_err("the /64 is capped");
    assert_eq!(status.code(), Code::ResourceExhausted);
    login_from(&w, "2001:db8:7:8::1", "bob@example.com", PASSWORD)
        .await
        .expect("the next /64 is not");
    // The counts are the database's, not one process's.
    let mut admin = w._suite.databases["auth"].admin_connection().await;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let rows: N = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SELECT count(*) AS n FROM login_attempts WHERE failures > 0"),
        &mut admin,
    )
    .await
    .expect("count");
    assert!(
        rows.n >= 3,
        "account, network and pair counters: {}",
        rows.n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_never_slip_past_the_free_failures() {
    let w = throttled_world().await;
    let guesses: Vec<_> = (0..16)
        .map(|_| {
            let auth = w.auth.clone();
            tokio::spawn(async move {
                let mut request = tonic::Request::new(auth::LoginRequest {
                    email: "bob@example.com".into(),
                    password: "a wrong password".into(),
                    tenant_slug: String::new(),
                });
                request
                    .metadata_mut()
                    .insert("x-forwarded-for", "203.0.113.9".parse().expect("ascii"));
                auth.clone().login(request).await.expect_err("wrong").code()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for guess in guesses {
        codes.push(guess.await.expect("task"));
    }
    let checked = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    let refused = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert_eq!(
        (checked, refused),
        (6, 10),
        "five free failures and the sixth, counted before its check; then the wait"
    );
}

/// A login whose password was checked just before a password change commits
/// starts no session after it: the gate re-reads the hash under the user's
/// row lock (ChangePassword revokes every session, and this one would have
/// come after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_checked_before_a_password_change_starts_no_session_after_it() {
    use diesel_async::SimpleAsyncConnection as _;
    let w = world().await;
    let admin = || w._suite.databases["auth"].admin_connection();
    let mut holder = admin().await;
    holder
        .batch_execute("BEGIN; SELECT 1 FROM users WHERE email = 'alice@example.com' FOR UPDATE")
        .await
        .expect("hold alice's row");
    let login = tokio::spawn({
        let mut auth = w.auth.clone();
        async move {
            auth.login(auth::LoginRequest {
                email: "alice@example.com".into(),
                password: PASSWORD.into(),
                tenant_slug: String::new(),
            })
            .await
        }
    });
    // The login has checked the password and waits at the session's gate.
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut watcher = admin().await;
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity
                    WHERE wait_event_type = 'Lock' AND query LIKE '%FOR NO KEY UPDATE%'";
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let found: N =
                diesel_async::RunQueryDsl::get_result(diesel::sql_query(waiting), &mut watcher)
                    .await
                    .expect("activity");
            if found.n > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the login reaches the gate");
    holder
        .batch_execute(
            "UPDATE users SET password_hash = 'changed meanwhile'
              WHERE email = 'alice@example.com'; COMMIT",
        )
        .await
        .expect("the change commits");
    let status = login
        .await
        .expect("task")
        .expect_err("the checked password is no longer alice's");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let sessions: N = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT count(*) AS n FROM sessions s JOIN users u ON u.id = s.user_id
              WHERE u.email = 'alice@example.com'",
        ),
        &mut watcher,
    )
    .await
    .expect("count");
    assert_eq!(sessions.n, 0, "no session started");
}

/// The network's counter is taken last, by one conditional update (every
/// login from one address shares it): 24 guesses at once from one network,
/// each at another account, and exactly the hourly cap of them is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_from_one_network_never_slip_past_its_cap() {
    let w = throttled_world().await;
    let guesses: Vec<_> = (0..24)
        .map(|i| {
            let auth = w.auth.clone();
            tokio::spawn(async move {
                let mut request = tonic::Request::new(auth::LoginRequest {
                    email: format!("nobody{i}@example.com"),
                    password: "a wrong password".into(),
                    tenant_slug: String::new(),
                });
                request
                    .metadata_mut()
                    .insert("x-forwarded-for", "203.0.113.77".parse().expect("ascii"));
                auth.clone().login(request).await.expect_err("wrong").code()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for guess in guesses {
        codes.push(guess.await.expect("task"));
    }
    let count = |code: Code| codes.iter().filter(|c| **c == code).count();
    assert_eq!(
        (count(Code::Unauthenticated), count(Code::ResourceExhausted)),
        (15, 9),
        "the network's 15 an hour checked, the rest refused unchecked: {codes:?}"
    );
    // The refused ones counted nowhere: each account holds its one failure.
    let mut admin = w._suite.databases["auth"].admin_connection().await;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let counted: N = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SELECT coalesce(sum(failures), 0)::bigint AS n FROM login_attempts"),
        &mut admin,
    )
    .await
    .expect("count");
    assert_eq!(
        counted.n,
        15 * 3,
        "15 failures on the network, on 15 accounts and on 15 account x network pairs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_in_another_process_follows_revocations_within_a_second() {
    let w = world().await;
    let tokens = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("login")
        .tokens
        .expect("t");
    // What a separately deployed service does: obtain its token from Auth, then
    // follow WatchRevocations into its own revoked-session set.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let auth_channel = w._suite.channel(ServiceKind::Auth);
    let credentials = bulkhead_clients::IssuedServiceTokens::spawn(
        auth_channel.clone(),
        "task".into(),
        super::support::TASK_CLIENT_SECRET.into(),
        stopped.clone(),
    );
    let remote = bulkhead_guard::RevokedSessions::default();
    tokio::spawn(bulkhead_clients::follow_revocations(
        auth_channel,
        credentials,
        remote.clone(),
        bulkhead_clients::REVOCATION_FEED_BOUND,
        stopped,
    ));
    let session = SessionId::parse(&tokens.session_id).expect("sid");
    assert!(!remote.is_revoked(session));

    w.auth
        .clone()
        .logout(bearer(
            &tokens.access_token,
            auth::LogoutRequest {
                all_sessions: false,
            },
        ))
        .await
        .expect("logout");
    let started = Instant::now();
    while !remote.is_revoked(session) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the remote guard did not learn of it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
}

/// SwitchTenant reads the session it is called from in the database: a
/// session revoked where this guard has not heard of it yet (another Auth
/// replica) starts no new one; and switches racing a logout of every session
/// never leave a live session behind (the logout and the switch lock the
/// user's row, on any replica), in every trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_never_outlives_a_revocation_of_its_session() {
    use diesel_async::RunQueryDsl as _;
    let w = world_with(bulkhead_auth::LimitsConfig {
        sessions_per_user_per_minute: 100_000,
        ..bulkhead_auth::LimitsConfig::default()
    })
    .await;
    let switch = |token: &str| {
        let mut client = w.auth.clone();
        let request = bearer(
            token,
            auth::SwitchTenantRequest {
                tenant: Some(auth::switch_tenant_request::Tenant::TenantSlug(
                    "acme".into(),
                )),
            },
        );
        async move { client.switch_tenant(request).await.map(drop) }
    };
    let mut admin = w._suite.databases["auth"].admin_connection().await;

    // Revoked behind the guard's back, as another replica would.
    let tokens = login(&w, "alice@example.com", PASSWORD, "acme")
        .await
        .expect("alice")
        .tokens
        .expect("tokens");
    diesel::sql_query("UPDATE sessions SET revoked_at = now() WHERE id = $1::uuid")
        .bind::<diesel::sql_types::Text, _>(&tokens.session_id)
        .execute(&mut admin)
        .await
        .expect("revoke in the database");
    let status = switch(&tokens.access_token)
        .await
        .expect_err("its session was revoked");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "session revoked");

    for trial in 0..10 {
        let from = login(&w, "alice@example.com", PASSWORD, "acme")
            .await
            .expect("alice")
            .tokens
            .expect("tokens");
        let other = login(&w, "alice@example.com", PASSWORD, "acme")
            .await
            .expect("alice")
            .tokens
            .expect("tokens");
        let mut racing = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let call = switch(&from.access_token);
            racing.spawn(async move { call.await.err().map(|s| s.code()) });
        }
        let mut auth = w.auth.clone();
        let logout = bearer(
            &other.access_token,
            auth::LogoutRequest { all_sessions: true },
        );
        racing.spawn(async move { auth.logout(logout).await.err().map(|s| s.code()) });
        while let Some(code) = racing.join_next().await {
            let code = code.expect("task");
            assert!(
                matches!(code, None | Some(Code::Unauthenticated)),
                "trial {trial}: {code:?}"
            );
        }
        assert_eq!(
            live_sessions(&w, &format!("user_id = '{}'", w.alice)).await,
            0,
            "trial {trial}: a switch outlived the logout"
        );
    }
}

/// A session switched from another ends with it (and so does one switched
/// from that): a stolen access token cannot switch its way to a refresh token
/// that outlives a logout of the session it was stolen from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_switched_from_another_ends_with_it() {
    let w = world().await;
    let switch = |token: String| {
        let mut client = w.auth.clone();
        async move {
            client
                .switch_tenant(bearer(
                    &token,
                    auth::SwitchTenantRequest {
                        tenant: Some(auth::switch_tenant_request::Tenant::TenantSlug(
                            "acme".into(),
                        )),
                    },
                ))
                .await
                .expect("switch")
                .into_inner()
                .tokens
                .expect("tokens")
        }
    };
    let first = login(&w, "alice@example.com", PASSWORD, "acme")
        .await
        .expect("alice")
        .tokens
        .expect("tokens");
    let child = switch(first.access_token.clone()).await;
    let grandchild = switch(child.access_token.clone()).await;
    let unrelated = login(&w, "alice@example.com", PASSWORD, "acme")
        .await
        .expect("alice again")
        .tokens
        .expect("tokens");
    w.auth
        .clone()
        .logout(bearer(
            &first.access_token,
            auth::LogoutRequest {
                all_sessions: false,
            },
        ))
        .await
        .expect("logout");
    for (what, tokens) in [("child", &child), ("grandchild", &grandchild)] {
        let refreshed = w
            .auth
            .clone()
            .refresh(auth::RefreshRequest {
                refresh_token: tokens.refresh_token.clone(),
            })
            .await
            .expect_err(what);
        assert_eq!(refreshed.code(), Code::Unauthenticated, "{what}");
        let token = tokens.access_token.clone();
        until_answers(
            what,
            Some(Code::Unauthenticated),
            Duration::from_secs(2),
            || {
                let mut auth = w.auth.clone();
                let request = bearer(&token, auth::WhoAmIRequest {});
                async move { auth.who_am_i(request).await.map(drop) }
            },
        )
        .await;
    }
    w.auth
        .clone()
        .who_am_i(bearer(&unrelated.access_token, auth::WhoAmIRequest {}))
        .await
        .expect("a session not switched from it goes on");
}

/// Polls `call` (every 50 ms, for up to `within`) until it answers `want`
/// (`None`: OK); returns how long that took.
async fn until_answers<F, Fut>(
    what: &str,
    want: Option<Code>,
    within: Duration,
    call: F,
) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let started = Instant::now();
    loop {
        let got = call().await;
        if got.as_ref().err().map(tonic::Status::code) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: still {got:?} after {within:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A guard whose revocation feed is cut serves user calls for its bound, then
/// fails closed (UNAVAILABLE, even for a session revoked meanwhile, which it
/// cannot know of) until the feed is back and has caught up; then the
/// revocation made during the cut is in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_that_loses_the_revocation_feed_fails_closed_until_it_catches_up() {
    let w = world().await;
    let first = login(&w, "alice@example.com", PASSWORD, "acme")
        .await
        .expect("alice")
        .tokens
        .expect("tokens");
    let second = login(&w, "alice@example.com", PASSWORD, "acme")
        .await
        .expect("alice again")
        .tokens
        .expect("tokens");
    // A Tenant replica whose guard follows Auth through a proxy the test cuts.
    let proxy = bulkhead_testkit::proxy::TcpProxy::start(w._suite.addr(ServiceKind::Auth)).await;
    let bound = Duration::from_secs(4);
    let replica = super::support::start_replicas_following(
        &w._suite,
        &[ServiceKind::Tenant],
        &[],
        tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr()))
            .expect("endpoint")
            .connect_lazy(),
        bound,
    )
    .await;
    let tenants = TenantServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            replica.addr(ServiceKind::Tenant).expect("replica")
        ))
        .expect("endpoint")
        .connect_lazy(),
    );
    let acme = w.acme.id.clone();
    let get = |token: &str| {
        let mut tenants = tenants.clone();
        let request = bearer(
            token,
            tenant::GetTenantRequest {
                tenant: Some(tenant::get_tenant_request::Tenant::TenantId(acme.clone())),
            },
        );
        async move { tenants.get_tenant(request).await.map(drop) }
    };
    get(&first.access_token)
        .await
        .expect("served while the feed is live");

    proxy.cut();
    // Within the bound: still served (the last heartbeat was a second ago).
    get(&first.access_token)
        .await
        .expect("served within the bound");
    // A revocation the cut guard cannot hear of.
    w.auth
        .clone()
        .logout(bearer(
            &second.access_token,
            auth::LogoutRequest {
                all_sessions: false,
            },
        ))
        .await
        .expect("logout");
    // Past the bound: every user call fails closed, the revoked one included.
    let took = until_answers(
        "past the bound",
        Some(Code::Unavailable),
        bound + Duration::from_secs(10),
        || get(&first.access_token),
    )
    .await;
    assert!(!replica.guard.revoked.is_current());
    let status = get(&second.access_token).await.expect_err("fails closed");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "revocation feed lost: retry shortly");
    // Service calls carry no session: they are still served.
    let mut request = tonic::Request::new(tenant::ListUserMembershipsRequest {
        user_id: w.alice.to_string(),
    });
    request.metadata_mut().insert(
        "x-service-authorization",
        format!("Bearer {}", w._suite.service_token("auth"))
            .parse()
            .expect("ascii"),
    );
    let memberships = tenants.clone().list_user_memberships(request).await;
    assert!(memberships.is_ok(), "{memberships:?}");

    proxy.heal();
    until_answers("after healing", None, Duration::from_secs(20), || {
        get(&first.access_token)
    })
    .await;
    let status = get(&second.access_token)
        .await
        .expect_err("revoked meanwhile");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    eprintln!("failed closed {took:?} after the cut (bound {bound:?})");
    replica.stop().await;
}

/// A second, independent JWT implementation (`jwt-simple`, which shares no code
/// with jsonwebtoken) verifies Auth's tokens with nothing but the published JWK
/// set, and refuses a forged one. (CI also checks them with PyJWT:
/// `deploy/checks/pyjwt_verify.sh`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_jwt_library_verifies_tokens_with_the_jwk_set() {
    use jwt_simple::prelude::{
        Ed25519PublicKey, EdDSAPublicKeyLike as _, Token, VerificationOptions,
    };

    #[derive(serde::Deserialize)]
    struct Access {
        tid: String,
        trole: String,
    }

    let w = world().await;
    let tokens = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("login")
        .tokens
        .expect("t");
    let jwks: serde_json::Value = serde_json::from_str(
        &w.auth
            .clone()
            .get_jwks(auth::GetJwksRequest {})
            .await
            .expect("jwks")
            .into_inner()
            .jwks_json,
    )
    .expect("a JSON JWK set");
    let verify = |token: &str| {
        let kid = Token::decode_metadata(token)?
            .key_id()
            .map(str::to_owned)
            .ok_or_else(|| jwt_simple::Error::msg("no kid"))?;
        let jwk = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["kid"] == kid.as_str())
            .ok_or_else(|| jwt_simple::Error::msg("kid not in the JWK set"))?;
        let key = Ed25519PublicKey::from_jwk(&jwk.to_string())?;
        let options = VerificationOptions {
            allowed_issuers: Some(["bulkhead-auth".to_owned()].into()),
            allowed_audiences: Some(["bulkhead".to_owned()].into()),
            ..VerificationOptions::default()
        };
        key.verify_token::<Access>(token, Some(options))
    };
    let claims = verify(&tokens.access_token).expect("jwt-simple accepts the token");
    assert_eq!(
        claims.subject.as_deref(),
        Some(w.alice.to_string().as_str())
    );
    assert_eq!(claims.custom.tid, w.acme.id);
    assert_eq!(claims.custom.trole, "OWNER");

    // And it refuses a token with one byte of the signature changed.
    let mut forged = tokens.access_token.clone().into_bytes();
    let at = forged.len() - 5;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert!(
        verify(&forged).is_err(),
        "a forged token must fail jwt-simple too"
    );
}

/// A separately deployed service follows Tenant's deactivations: within about a
/// second its guard answers FAILED_PRECONDITION for the tenant too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_in_another_process_follows_deactivations() {
    let w = world().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let credentials = bulkhead_clients::IssuedServiceTokens::spawn(
        w._suite.channel(ServiceKind::Auth),
        "task".into(),
        super::support::TASK_CLIENT_SECRET.into(),
        stopped.clone(),
    );
    let remote = bulkhead_guard::InactiveTenants::default();
    tokio::spawn(bulkhead_clients::follow_inactive_tenants(
        w._suite.channel(ServiceKind::Tenant),
        credentials,
        remote.clone(),
        Duration::from_millis(200),
        stopped,
    ));
    let acme = TenantId::parse(&w.acme.id).expect("id");
    let operator = w._suite.token(&TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::new_v7(),
        tenant_slug: "ops".into(),
        tenant_role: TenantRole::Viewer,
        platform_role: PlatformRole::SuperAdmin,
    });
    let set_active = |active: bool| {
        bearer(
            &operator,
            tenant::SetTenantActiveRequest {
                tenant_id: w.acme.id.clone(),
                is_active: active,
            },
        )
    };
    w.tenants
        .clone()
        .set_tenant_active(set_active(false))
        .await
        .expect("deactivate");
    let started = Instant::now();
    while !remote.contains(acme) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the remote guard did not learn of it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.tenants
        .clone()
        .set_tenant_active(set_active(true))
        .await
        .expect("reactivate");
    let started = Instant::now();
    while remote.contains(acme) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the reactivation did not reach it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_is_no_free_password_oracle() {
    let w = throttled_world().await;
    let network = "203.0.113.77";
    let access = login_from(&w, network, "alice@example.com", PASSWORD)
        .await
        .expect("login")
        .tokens
        .expect("tokens")
        .access_token;
    let change = |current: &str| {
        let mut request = bearer(
            &access,
            auth::ChangePasswordRequest {
                current_password: current.into(),
                new_password: "a brand new password".into(),
            },
        );
        request
            .metadata_mut()
            .insert("x-forwarded-for", network.parse().expect("ascii"));
        let mut auth = w.auth.clone();
        async move { auth.change_password(request).await.map(drop) }
    };
    // A stolen access token guesses the current password: the login caps
    // apply, counted on the same account and network as logins.
    for _ in 0..6 {
        let status = change("a guess").await.expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = change(PASSWORD).await.expect_err("waits");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let status = login_from(&w, network, "alice@example.com", PASSWORD)
        .await
        .expect_err("logins from there wait too");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_tenants_is_rate_limited_per_user() {
    let w = world().await;
    let alice = login(&w, "alice@example.com", PASSWORD, "")
        .await
        .expect("alice")
        .tokens
        .expect("tokens");
    let switch = || {
        let mut client = w.auth.clone();
        let request = bearer(
            &alice.access_token,
            auth::SwitchTenantRequest {
                tenant: Some(auth::switch_tenant_request::Tenant::TenantSlug(
                    "acme".into(),
                )),
            },
        );
        async move { client.switch_tenant(request).await }
    };
    // The default: SwitchTenant starts no session once the user started 10
    // in the last minute (her login is one), counted in the database: 16
    // switches at once, over every replica, and exactly 9 pass.
    use tonic_types::StatusExt as _;
    let cap = bulkhead_auth::LimitsConfig::default().sessions_per_user_per_minute;
    let mut switches = tokio::task::JoinSet::new();
    for _ in 0..16 {
        switches.spawn(switch());
    }
    let mut passed = 0;
    while let Some(result) = switches.join_next().await {
        match result.expect("switch task") {
            Ok(_) => passed += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let delay = status
                    .get_error_details()
                    .retry_info()
                    .and_then(|r| r.retry_delay)
                    .expect("RetryInfo");
                assert!(
                    delay >= Duration::from_secs(1) && delay <= Duration::from_secs(60),
                    "{delay:?}"
                );
            }
        }
    }
    assert_eq!(passed, cap - 1);
    // Bob is not held up by alice's switches.
    let bob = login(&w, "bob@example.com", PASSWORD, "")
        .await
        .expect("bob")
        .tokens
        .expect("tokens");
    w.auth
        .clone()
        .switch_tenant(bearer(
            &bob.access_token,
            auth::SwitchTenantRequest {
                tenant: Some(auth::switch_tenant_request::Tenant::TenantSlug(
                    "globex".into(),
                )),
            },
        ))
        .await
        .expect("bob switches");
}

/// Tenant's answer that bob is a member of acme is held on its way back to an
/// Auth replica while alice removes him and the removal's revocation runs:
/// none of the logins and switches that read it stores a session (each is
/// ABORTED, and the database holds no live session of bob's in acme), and a
/// refresh of his acme session is refused as late (UNAUTHENTICATED), not
/// taken for a stolen token's reuse. Once he is added again, he logs in at
/// once: a change refuses only the sessions whose membership was read before
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_or_switch_racing_a_membership_removal_stores_no_session() {
    let w = world_with(bulkhead_auth::LimitsConfig {
        sessions_per_user_per_minute: 1000,
        ..bulkhead_auth::LimitsConfig::default()
    })
    .await;
    let alice = login(&w, "alice@example.com", PASSWORD, "acme")
        .await
        .expect("alice")
        .tokens
        .expect("tokens");
    let add_bob = || {
        let mut tenants = w.tenants.clone();
        let request = bearer(
            &alice.access_token,
            tenant::AddMemberRequest {
                user_id: w.bob.to_string(),
                role: tenant::TenantRole::Member.into(),
            },
        );
        async move { tenants.add_member(request).await.expect("bob joins acme") }
    };
    add_bob().await;
    let in_globex = login(&w, "bob@example.com", PASSWORD, "globex")
        .await
        .expect("bob")
        .tokens
        .expect("tokens");
    // A session in acme the removal revokes: its end says the revocation ran.
    let in_acme = login(&w, "bob@example.com", PASSWORD, "acme")
        .await
        .expect("bob in acme")
        .tokens
        .expect("tokens");

    // An Auth replica reading memberships through a proxy that can hold replies.
    let proxy = bulkhead_testkit::proxy::TcpProxy::start(w._suite.addr(ServiceKind::Tenant)).await;
    let through_proxy = format!("http://{}", proxy.addr());
    let replica = super::support::start_replicas_wired(
        &w._suite,
        &[ServiceKind::Auth],
        &[],
        w._suite.channel(ServiceKind::Auth),
        bulkhead_clients::REVOCATION_FEED_BOUND,
        &move |peers| peers.tenant = Some(through_proxy.clone()),
    )
    .await;
    let raced = AuthServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            replica.addr(ServiceKind::Auth).expect("replica")
        ))
        .expect("endpoint")
        .connect_lazy(),
    );
    let bob_logs_in = || {
        let mut client = raced.clone();
        async move {
            client
                .login(auth::LoginRequest {
                    email: "bob@example.com".into(),
                    password: PASSWORD.into(),
                    tenant_slug: "acme".into(),
                })
                .await
                .map(drop)
        }
    };
    let bob_switches = || {
        let mut client = raced.clone();
        let request = bearer(
            &in_globex.access_token,
            auth::SwitchTenantRequest {
                tenant: Some(auth::switch_tenant_request::Tenant::TenantSlug(
                    "acme".into(),
                )),
            },
        );
        async move { client.switch_tenant(request).await.map(drop) }
    };
    bob_logs_in()
        .await
        .expect("through the proxy, unheld, bob logs in");

    proxy.delay_replies(Duration::from_secs(4));
    let mut racing = tokio::task::JoinSet::new();
    for n in 0..8 {
        let call: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>> =
            if n % 2 == 0 {
                Box::pin(bob_logs_in())
            } else {
                Box::pin(bob_switches())
            };
        racing.spawn(async move { (call.await, Instant::now()) });
    }
    // And a refresh of his session in acme: the removal revokes that one.
    let refreshing = {
        let mut client = raced.clone();
        let request = auth::RefreshRequest {
            refresh_token: in_acme.refresh_token.clone(),
        };
        tokio::spawn(async move { (client.refresh(request).await.map(drop), Instant::now()) })
    };
    // Tenant has answered them all (bob is a member); the answers are held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.tenants
        .clone()
        .remove_member(bearer(
            &alice.access_token,
            tenant::RemoveMemberRequest {
                user_id: w.bob.to_string(),
            },
        ))
        .await
        .expect("bob removed");
    let revoked_seen = loop {
        if live_sessions(&w, &format!("id = '{}'", in_acme.session_id)).await == 0 {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while let Some(outcome) = racing.join_next().await {
        let (result, answered) = outcome.expect("task");
        assert!(
            answered > revoked_seen,
            "an answer came before the removal's revocation ran: no race was tried"
        );
        let status = result.expect_err("a session on a membership read before its removal");
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
    }
    // The refresh is refused as late, not as a stolen token's reuse.
    let (result, answered) = refreshing.await.expect("task");
    assert!(
        answered > revoked_seen,
        "the refresh answered before the race"
    );
    let status = result.expect_err("a revoked session does not rotate");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        !auth_audit_actions(&w)
            .await
            .iter()
            .any(|event| event.to_string().contains("refresh token reused")),
        "a refresh that came late was taken for a reuse"
    );
    assert_eq!(
        live_sessions(
            &w,
            &format!("user_id = '{}' AND tenant_id = '{}'", w.bob, w.acme.id)
        )
        .await,
        0,
        "a session of bob's in acme outlived his removal"
    );

    proxy.delay_replies(Duration::ZERO);
    add_bob().await;
    bob_logs_in()
        .await
        .expect("added again, bob logs in: the change was before this read");
}

/// A user holds at most `live_sessions_per_user` sessions: 24 logins at once
/// with a cap of 5 all succeed and leave exactly 5 live; the other 19 were
/// ended (audited) and their access tokens are refused (at once where they
/// were ended, within 2 s on another replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_the_live_session_cap() {
    let w = world_with(bulkhead_auth::LimitsConfig {
        live_sessions_per_user: 5,
        // 24 logins at once are no guessing.
        per_peer_per_minute: 100_000,
        throttle: bulkhead_auth::ThrottleConfig {
            free_failures: 1_000_000,
            ..bulkhead_auth::ThrottleConfig::default()
        },
        ..bulkhead_auth::LimitsConfig::default()
    })
    .await;
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let mut auth = w.auth.clone();
        logins.spawn(async move {
            auth.login(auth::LoginRequest {
                email: "alice@example.com".into(),
                password: PASSWORD.into(),
                tenant_slug: "acme".into(),
            })
            .await
            .map(|r| r.into_inner().tokens.expect("tokens").access_token)
        });
    }
    let mut tokens = Vec::new();
    while let Some(login) = logins.join_next().await {
        tokens.push(login.expect("task").expect("every login succeeds"));
    }
    assert_eq!(
        live_sessions(&w, &format!("user_id = '{}'", w.alice)).await,
        5,
        "live sessions past the cap"
    );
    // Where the session was ended, its token is refused at once; another
    // replica hears of it within 2 s.
    let started = Instant::now();
    loop {
        let mut served = 0;
        for token in &tokens {
            match w
                .auth
                .clone()
                .who_am_i(bearer(token, auth::WhoAmIRequest {}))
                .await
            {
                Ok(_) => served += 1,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                    assert_eq!(status.message(), "session revoked");
                }
            }
        }
        if served == 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{served} tokens served 2 s after the cap ended all but 5"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let capped = auth_audit_actions(&w)
        .await
        .iter()
        .filter(|event| event.to_string().contains("live-session cap"))
        .count();
    assert_eq!(capped, 19, "one audit event per session ended");
}

//! Auth's own API tests: every RPC against every kind of caller with its exact
//! answer, every bad field reported at once and nothing written, and one user's
//! sessions out of another's reach. Logins, refresh rotation and revocation
//! across services are in the end-to-end tests (`tests/e2e/auth.rs`).

mod helpers;

use bulkhead_context::{PlatformRole, TenantRole, UserId};
use bulkhead_proto::auth::v1 as pb;
use helpers::{
    CLIENT_SECRET, Caller, Harness, PASSWORD, acting, assert_code, spawn_service, violated_fields,
};
use tonic::Code;

async fn login(h: &Harness, email: &str) -> pb::LoginResponse {
    h.auth
        .clone()
        .login(pb::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            tenant_slug: String::new(),
        })
        .await
        .expect("login")
        .into_inner()
}

/// A user created through `CreateUser` by a SUPER_ADMIN (platform role USER).
async fn create_user(h: &Harness, admin: &Caller, email: &str) -> UserId {
    let user = h
        .auth
        .clone()
        .create_user(h.request(
            admin,
            pb::CreateUserRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                platform_role: pb::PlatformRole::User.into(),
            },
        ))
        .await
        .expect("create user")
        .into_inner()
        .user
        .expect("user");
    UserId::parse(&user.id).expect("id")
}

/// The status code of a call: `Ok` when it succeeded.
fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.map_or_else(|s| s.code(), |_| Code::Ok)
}

/// Every RPC against every kind of caller: VIEWER, MEMBER, ADMIN, OWNER,
/// SUPER_ADMIN (a member of nothing), a service, a service acting for an OWNER,
/// and nobody; each with the exact code it gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_kind_of_caller_exactly() {
    use Code::{Ok as K, PermissionDenied as D, Unauthenticated as U};
    let h = spawn_service().await;
    let root_caller = h.root().await;
    let owner_id = create_user(&h, &root_caller, "owner@example.com").await;
    let acme = h.tenant("acme", owner_id).await;
    let owner = Caller::User(acting(
        owner_id,
        &acme,
        TenantRole::Owner,
        PlatformRole::User,
    ));
    let mut callers = Vec::new();
    for role in [TenantRole::Viewer, TenantRole::Member, TenantRole::Admin] {
        let email = format!("{}@example.com", role.as_str().to_lowercase());
        let id = create_user(&h, &root_caller, &email).await;
        h.add_member(&owner, id, role).await;
        callers.push(Caller::User(acting(id, &acme, role, PlatformRole::User)));
    }
    let super_admin_id = h.user("super@example.com").await;
    callers.extend([
        owner.clone(),
        Caller::User(acting(
            super_admin_id,
            &acme,
            TenantRole::Viewer,
            PlatformRole::SuperAdmin,
        )),
        Caller::Service,
        Caller::ServiceFor(owner.user().clone()),
        Caller::Nobody,
    ]);
    for caller in &callers {
        h.store_session(caller).await;
    }

    //                                   viewer member admin owner super service svc+owner nobody
    let table: Vec<(&str, [Code; 8])> = vec![
        ("Login", [K, K, K, K, K, K, K, K]),
        ("Refresh", [K, K, K, K, K, K, K, K]),
        ("GetJwks", [K, K, K, K, K, K, K, K]),
        ("IssueServiceToken", [K, K, K, K, K, K, K, K]),
        // A SUPER_ADMIN is no member of acme: refused by the live check.
        ("SwitchTenant", [K, K, K, K, D, D, K, U]),
        ("WhoAmI", [K, K, K, K, K, D, K, U]),
        ("CreateUser", [D, D, K, K, K, D, K, U]),
        ("ChangePassword", [K, K, K, K, K, D, K, U]),
        ("RevokeSessions", [D, D, D, D, D, K, K, U]),
        ("WatchRevocations", [D, D, D, D, D, K, K, U]),
        // Last: it ends the session of the caller's token (so the owner's
        // session, ended one column before, is revoked for svc+owner).
        ("Logout", [K, K, K, K, K, D, U, U]),
    ];
    let methods = bulkhead_proto::method_names(bulkhead_auth::SERVICE_NAME);
    let mut listed: Vec<&str> = table.iter().map(|(m, _)| *m).collect();
    listed.sort_unstable();
    let mut all: Vec<&str> = methods.iter().map(String::as_str).collect();
    all.sort_unstable();
    assert_eq!(listed, all, "the matrix lists every RPC of AuthService");

    let mut n = 0;
    for (method, expected) in &table {
        for (caller, want) in callers.iter().zip(expected) {
            n += 1;
            let mut c = h.auth.clone();
            let got = match *method {
                "Login" => code(
                    c.login(h.request(
                        caller,
                        pb::LoginRequest {
                            email: "viewer@example.com".into(),
                            password: PASSWORD.into(),
                            tenant_slug: String::new(),
                        },
                    ))
                    .await,
                ),
                "Refresh" => {
                    let refresh_token = login(&h, "member@example.com")
                        .await
                        .tokens
                        .expect("tokens")
                        .refresh_token;
                    code(
                        c.refresh(h.request(caller, pb::RefreshRequest { refresh_token }))
                            .await,
                    )
                }
                "GetJwks" => code(c.get_jwks(h.request(caller, pb::GetJwksRequest {})).await),
                "IssueServiceToken" => code(
                    c.issue_service_token(h.request(
                        caller,
                        pb::IssueServiceTokenRequest {
                            client_id: "task".into(),
                            client_secret: CLIENT_SECRET.into(),
                        },
                    ))
                    .await,
                ),
                "SwitchTenant" => code(
                    c.switch_tenant(h.request(
                        caller,
                        pb::SwitchTenantRequest {
                            tenant: Some(pb::switch_tenant_request::Tenant::TenantSlug(
                                "acme".into(),
                            )),
                        },
                    ))
                    .await,
                ),
                "WhoAmI" => code(c.who_am_i(h.request(caller, pb::WhoAmIRequest {})).await),
                "CreateUser" => code(
                    c.create_user(h.request(
                        caller,
                        pb::CreateUserRequest {
                            email: format!("new{n}@example.com"),
                            password: PASSWORD.into(),
                            display_name: String::new(),
                            platform_role: pb::PlatformRole::User.into(),
                        },
                    ))
                    .await,
                ),
                "ChangePassword" => code(
                    c.change_password(h.request(
                        caller,
                        pb::ChangePasswordRequest {
                            current_password: PASSWORD.into(),
                            new_password: PASSWORD.into(),
                        },
                    ))
                    .await,
                ),
                "RevokeSessions" => code(
                    c.revoke_sessions(h.request(
                        caller,
                        pb::RevokeSessionsRequest {
                            user_id: UserId::new_v7().to_string(),
                            tenant_id: None,
                            reason: "matrix".into(),
                        },
                    ))
                    .await,
                ),
                "WatchRevocations" => code(
                    c.watch_revocations(h.request(caller, pb::WatchRevocationsRequest {}))
                        .await,
                ),
                "Logout" => code(
                    c.logout(h.request(
                        caller,
                        pb::LogoutRequest {
                            all_sessions: false,
                        },
                    ))
                    .await,
                ),
                other => panic!("no call for {other}"),
            };
            assert_eq!(got, *want, "{method} as {caller:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_reports_every_bad_field_and_creates_nothing() {
    let h = spawn_service().await;
    let admin = h.root().await;
    let before = h.count("users").await;
    let fields = violated_fields(
        h.auth
            .clone()
            .create_user(h.request(
                &admin,
                pb::CreateUserRequest {
                    email: "not an email".into(),
                    password: "short".into(),
                    display_name: "x".repeat(201),
                    platform_role: 42,
                },
            ))
            .await,
    );
    assert_eq!(
        fields,
        ["email", "password", "display_name", "platform_role"]
    );
    assert_eq!(h.count("users").await, before, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_are_unique_whatever_their_case_and_only_super_admins_make_super_admins() {
    let h = spawn_service().await;
    let root = h.user("root@example.com").await;
    let rootland = h.tenant("rootland", root).await;
    let super_admin = Caller::User(acting(
        root,
        &rootland,
        TenantRole::Owner,
        PlatformRole::SuperAdmin,
    ));
    create_user(&h, &super_admin, "ada@example.com").await;
    let create = |email: &str, role: pb::PlatformRole| pb::CreateUserRequest {
        email: email.into(),
        password: PASSWORD.into(),
        display_name: "Ada".into(),
        platform_role: role.into(),
    };
    assert_code(
        h.auth
            .clone()
            .create_user(h.request(
                &super_admin,
                create("ADA@Example.com", pb::PlatformRole::User),
            ))
            .await,
        Code::AlreadyExists,
    );
    // An ADMIN of a tenant may create users, but not SUPER_ADMINs.
    let tenant_admin = Caller::User(acting(
        UserId::new_v7(),
        &rootland,
        TenantRole::Admin,
        PlatformRole::User,
    ));
    assert_code(
        h.auth
            .clone()
            .create_user(h.request(
                &tenant_admin,
                create("eve@example.com", pb::PlatformRole::SuperAdmin),
            ))
            .await,
        Code::PermissionDenied,
    );
    let made = h
        .auth
        .clone()
        .create_user(h.request(
            &super_admin,
            create("grace@example.com", pb::PlatformRole::SuperAdmin),
        ))
        .await
        .expect("a SUPER_ADMIN makes one")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(made.platform_role, i32::from(pb::PlatformRole::SuperAdmin));
    assert!(made.create_time.is_some(), "the row's own times come back");
    assert_eq!(
        h.count("users WHERE lower(email) = 'eve@example.com'")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_needs_the_current_one_and_checks_the_new_one() {
    let h = spawn_service().await;
    let me = h.root().await;
    h.store_session(&me).await;
    let hash_before = h.count("users WHERE update_time = create_time").await;
    let change = |current: &str, new: &str| pb::ChangePasswordRequest {
        current_password: current.into(),
        new_password: new.into(),
    };
    assert_eq!(
        violated_fields(
            h.auth
                .clone()
                .change_password(h.request(&me, change(PASSWORD, "short")))
                .await
        ),
        ["new_password"]
    );
    assert_code(
        h.auth
            .clone()
            .change_password(h.request(&me, change("not my password", "a brand new password")))
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(
        h.count("users WHERE update_time = create_time").await,
        hash_before,
        "neither changed the password"
    );
    // A session from a login before the change ends with it; this one stays.
    let earlier = login(&h, "root@example.com").await.tokens.expect("tokens");
    let revoked = h
        .auth
        .clone()
        .change_password(h.request(&me, change(PASSWORD, "a brand new password")))
        .await
        .expect("changed")
        .into_inner()
        .revoked_count;
    assert_eq!(revoked, 1);
    assert_code(
        h.auth
            .clone()
            .refresh(pb::RefreshRequest {
                refresh_token: earlier.refresh_token,
            })
            .await,
        Code::Unauthenticated,
    );
}

/// `me` changing their password from [`PASSWORD`] to a new one.
fn new_password(h: &Harness, me: &Caller) -> tonic::Request<pb::ChangePasswordRequest> {
    h.request(
        me,
        pb::ChangePasswordRequest {
            current_password: PASSWORD.into(),
            new_password: "a brand new password".into(),
        },
    )
}

/// A password change refused for its revoked session, with `unchanged`
/// users whose password never changed still so.
async fn refused_as_revoked(
    h: &Harness,
    answer: Result<tonic::Response<pb::ChangePasswordResponse>, tonic::Status>,
    unchanged: i64,
) {
    let refused = answer.expect_err("its session was revoked");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), "session revoked");
    assert_eq!(
        h.count("users WHERE update_time = create_time").await,
        unchanged,
        "the password did not change"
    );
}

/// A password change from a session another Auth replica revoked is
/// refused, though this replica's guard has not heard of the revocation: the
/// change reads the session in its own transaction, after taking the user's
/// row (which a revocation takes first). Nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_from_a_session_revoked_elsewhere_changes_nothing() {
    use diesel_async::RunQueryDsl as _;
    let h = spawn_service().await;
    let (me, user) = h.root_in_a_stored_session().await;
    let earlier = login(&h, "root@example.com").await.tokens.expect("tokens");
    // Revoked as another replica would, dated so that this replica's
    // follower of the stored revocations never reads it (its token's
    // expiry, as stored, is past the followers' window): only the change's
    // own read can see it.
    let mut owner = h.database.admin_connection().await;
    diesel::sql_query(
        "UPDATE sessions SET revoked_at = now() - interval '1 hour',
                access_expires_at = now() - interval '1 hour',
                revoke_reason = 'revoked on another replica'
          WHERE id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(*user.session_id.as_uuid())
    .execute(&mut owner)
    .await
    .expect("revoke elsewhere");
    let unchanged = h.count("users WHERE update_time = create_time").await;
    let live = h.count("sessions WHERE revoked_at IS NULL").await;
    let refused = h.auth.clone().change_password(new_password(&h, &me)).await;
    refused_as_revoked(&h, refused, unchanged).await;
    assert_eq!(
        h.count("sessions WHERE revoked_at IS NULL").await,
        live,
        "no other session was ended"
    );
    h.auth
        .clone()
        .refresh(pb::RefreshRequest {
            refresh_token: earlier.refresh_token,
        })
        .await
        .expect("the other session goes on");
}

/// A revocation of the caller's whole tenant still running on another
/// replica (its transaction holds the tenant's access and has updated the
/// caller's session, not committed) makes a password change wait for it, and
/// then refuses it: the change does not slip in before the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_waits_for_a_revocation_in_progress_and_is_refused() {
    use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};
    let h = spawn_service().await;
    let (me, user) = h.root_in_a_stored_session().await;
    let mut revoking = h.database.admin_connection().await;
    revoking
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtextextended('auth.tenant_access:{}', 0));
             UPDATE sessions SET revoked_at = now() - interval '1 hour',
                    access_expires_at = now() - interval '1 hour',
                    revoke_reason = 'tenant revoked on another replica'
              WHERE tenant_id = '{}';",
            user.tenant_id, user.tenant_id
        ))
        .await
        .expect("a revocation in progress");
    let unchanged = h.count("users WHERE update_time = create_time").await;
    let change = tokio::spawn({
        let (mut auth, request) = (h.auth.clone(), new_password(&h, &me));
        async move { auth.change_password(request).await }
    });
    // The change waits on the tenant's access once its hashing is done.
    let mut watcher = h.database.admin_connection().await;
    let started = std::time::Instant::now();
    loop {
        #[derive(diesel::QueryableByName)]
        struct Waiting {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let waiting = diesel::sql_query(format!(
            "SELECT count(*) AS n FROM pg_stat_activity
              WHERE datname = '{}' AND wait_event = 'advisory'",
            h.database.name
        ))
        .get_result::<Waiting>(&mut watcher)
        .await
        .expect("pg_stat_activity");
        if waiting.n > 0 {
            break;
        }
        assert!(!change.is_finished(), "the change did not wait: {change:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the change never reached the tenant's access"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    revoking.batch_execute("COMMIT").await.expect("commit");
    refused_as_revoked(&h, change.await.expect("task"), unchanged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_sessions_and_switch_tenant_report_their_bad_fields() {
    let h = spawn_service().await;
    assert_eq!(
        violated_fields(
            h.auth
                .clone()
                .revoke_sessions(h.request(
                    &Caller::Service,
                    pb::RevokeSessionsRequest {
                        user_id: "nope".into(),
                        tenant_id: Some("nope".into()),
                        reason: String::new(),
                    },
                ))
                .await
        ),
        ["tenant_id", "user_id"]
    );
    assert_eq!(
        violated_fields(
            h.auth
                .clone()
                .revoke_sessions(h.request(&Caller::Service, pb::RevokeSessionsRequest::default()))
                .await
        ),
        ["user_id"]
    );
    let me = h.root().await;
    assert_eq!(
        violated_fields(
            h.auth
                .clone()
                .switch_tenant(h.request(&me, pb::SwitchTenantRequest { tenant: None }))
                .await
        ),
        ["tenant"]
    );
}

/// One user's logout, even of all their sessions, leaves another's alone; and
/// WhoAmI answers for the token's user only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reaches_only_their_own_identity_and_sessions() {
    let h = spawn_service().await;
    let root = h.user("root@example.com").await;
    let rootland = h.tenant("rootland", root).await;
    let admin = Caller::User(acting(
        root,
        &rootland,
        TenantRole::Owner,
        PlatformRole::SuperAdmin,
    ));
    let alice = create_user(&h, &admin, "alice@example.com").await;
    let bob = create_user(&h, &admin, "bob@example.com").await;
    h.tenant("alices", alice).await;
    h.tenant("bobs", bob).await;
    let alice_tokens = login(&h, "alice@example.com").await.tokens.expect("tokens");
    let bob_tokens = login(&h, "bob@example.com").await.tokens.expect("tokens");
    let bearer = |token: &str| {
        let mut request = tonic::Request::new(pb::LogoutRequest { all_sessions: true });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        request
    };
    let ended = h
        .auth
        .clone()
        .logout(bearer(&bob_tokens.access_token))
        .await
        .expect("logout")
        .into_inner()
        .revoked_count;
    assert_eq!(ended, 1, "bob's one session");
    let refreshed = h
        .auth
        .clone()
        .refresh(pb::RefreshRequest {
            refresh_token: alice_tokens.refresh_token,
        })
        .await
        .expect("alice's session is untouched")
        .into_inner();
    let mut whoami = tonic::Request::new(pb::WhoAmIRequest {});
    whoami.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", refreshed.tokens.expect("tokens").access_token)
            .parse()
            .expect("ascii"),
    );
    let me = h
        .auth
        .clone()
        .who_am_i(whoami)
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me.user_id, alice.to_string());
    assert_eq!(me.email, "alice@example.com");
    let slugs: Vec<&str> = me
        .switchable_tenants
        .iter()
        .map(|t| t.slug.as_str())
        .collect();
    assert_eq!(slugs, ["alices"], "bob's tenant is not among alice's");
}

/// One refresh token yields one new token pair, however many calls race with
/// it (16 at once, 50 times): the rest are a second use of a rotated token, so
/// the family ends and even the winner's new refresh token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_is_spent_once_under_concurrency() {
    let h = std::sync::Arc::new(spawn_service().await);
    h.root().await;
    for trial in 0..50 {
        let refresh_token = login(&h, "root@example.com")
            .await
            .tokens
            .expect("tokens")
            .refresh_token;
        let racers: Vec<_> = (0..16)
            .map(|_| {
                let (h, refresh_token) = (h.clone(), refresh_token.clone());
                tokio::spawn(async move {
                    h.auth
                        .clone()
                        .refresh(pb::RefreshRequest { refresh_token })
                        .await
                })
            })
            .collect();
        let mut issued = Vec::new();
        for racer in racers {
            match racer.await.expect("racer") {
                Ok(response) => issued.push(response.into_inner()),
                Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "trial {trial}"),
            }
        }
        assert_eq!(
            issued.len(),
            1,
            "trial {trial}: one new pair per refresh token"
        );
        let winner = issued.pop().and_then(|r| r.tokens).expect("tokens");
        assert_code(
            h.auth
                .clone()
                .refresh(pb::RefreshRequest {
                    refresh_token: winner.refresh_token,
                })
                .await,
            Code::Unauthenticated,
        );
    }
}

/// Many logins of one account at once, from one network, each with the
/// right password: every one succeeds (3 × 16, under the live-session cap).
/// Each takes the account's counters in one order (a success deletes the
/// account × network row, and the next attempts insert it again), and a
/// success touches only the rows it holds: no two of them deadlock. (Deleting
/// a pair row inserted again after the success took its locks deadlocked
/// about one run in sixty on a loaded machine; see `throttle::succeeded`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_of_one_account_all_succeed() {
    let h = std::sync::Arc::new(spawn_service().await);
    h.root().await;
    // 48 logins: under the live-session cap (50), so this hammers the login
    // counters alone. Past the cap, a rare INTERNAL is still unexplained
    // (issue #13's note, session 11).
    for wave in 0..3 {
        let logins: Vec<_> = (0..16)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move {
                    h.auth
                        .clone()
                        .login(pb::LoginRequest {
                            email: "root@example.com".into(),
                            password: PASSWORD.into(),
                            tenant_slug: String::new(),
                        })
                        .await
                })
            })
            .collect();
        for login in logins {
            let answer = login.await.expect("task");
            assert!(answer.is_ok(), "wave {wave}: {answer:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_long_expired_are_purged_and_nothing_else() {
    use diesel_async::SimpleAsyncConnection as _;
    let h = spawn_service().await;
    let root = h.user("root@example.com").await;
    h.tenant("rootland", root).await;
    login(&h, "root@example.com").await;
    login(&h, "root@example.com").await;
    let live = h.count("sessions").await;
    assert!(live >= 2);
    // Two sessions whose refresh token expired two days ago, one with a
    // rotated token's hash, and one that expired an hour ago (kept a day).
    let mut admin = h.database.admin_connection().await;
    admin
        .batch_execute(
            "INSERT INTO sessions (id, user_id, tenant_id, refresh_hash, refresh_expires_at, access_expires_at)
             SELECT gen_random_uuid(), id, gen_random_uuid(), '\\x01', now() - interval '2 days', now() - interval '3 days'
               FROM users LIMIT 1;
             INSERT INTO sessions (id, user_id, tenant_id, refresh_hash, refresh_expires_at, access_expires_at)
             SELECT gen_random_uuid(), id, gen_random_uuid(), '\\x02', now() - interval '2 days', now() - interval '3 days'
               FROM users LIMIT 1;
             INSERT INTO refresh_tokens (hash, session_id)
             SELECT '\\x03', id FROM sessions WHERE refresh_hash = '\\x01';
             INSERT INTO sessions (id, user_id, tenant_id, refresh_hash, refresh_expires_at, access_expires_at)
             SELECT gen_random_uuid(), id, gen_random_uuid(), '\\x04', now() - interval '1 hour', now() - interval '2 hours'
               FROM users LIMIT 1;
             INSERT INTO break_glass_sessions (id, access_expires_at)
             VALUES (gen_random_uuid(), now() - interval '2 days'),
                    (gen_random_uuid(), now() - interval '1 hour');",
        )
        .await
        .expect("seed");
    let tokens = h.count("refresh_tokens").await;
    // The platform role cannot delete a session still within its day.
    let platform = h.database.app_db(2).await;
    let mut as_platform = bulkhead_db::schema::connect_once(&h.database.platform_url)
        .await
        .expect("connect");
    as_platform
        .batch_execute("DELETE FROM sessions WHERE refresh_hash IN ('\\x04')")
        .await
        .expect("allowed, deletes nothing");
    assert_eq!(h.count("sessions").await, live + 3);
    let purged = bulkhead_auth::purge_expired(&platform)
        .await
        .expect("purge");
    assert_eq!(purged, 2);
    assert_eq!(
        h.count("sessions").await,
        live + 1,
        "live and recent sessions kept"
    );
    assert_eq!(h.count("refresh_tokens").await, tokens - 1);
    assert_eq!(
        h.count("break_glass_sessions").await,
        1,
        "the break-glass session of a day ago went, the recent one stays"
    );
    assert_eq!(
        bulkhead_auth::purge_expired(&platform)
            .await
            .expect("again"),
        0
    );
}

/// Stale login counters (past their window and wait) and networks unseen for
/// 90 days are purged; fresh ones stay, and rows a login holds are skipped,
/// not waited for (the purge never stalls logins behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_login_counters_are_purged_and_rows_in_use_skipped() {
    use diesel_async::SimpleAsyncConnection as _;
    let h = spawn_service().await;
    let mut admin = h.database.admin_connection().await;
    admin
        .batch_execute(
            "INSERT INTO login_attempts (key, failures, window_start, last_failure) VALUES
                 ('\\x01', 3, now() - interval '3 hours', now() - interval '3 hours'),
                 ('\\x02', 3, now() - interval '3 hours', now() - interval '3 hours'),
                 ('\\x03', 3, now(), now());
             INSERT INTO login_known_networks (key, last_success) VALUES
                 ('\\x11', now() - interval '100 days'),
                 ('\\x12', now() - interval '100 days'),
                 ('\\x13', now());",
        )
        .await
        .expect("seed");
    // A login holds one stale row of each.
    let mut login = h.database.admin_connection().await;
    login
        .batch_execute(
            "BEGIN;
             SELECT 1 FROM login_attempts WHERE key = '\\x02' FOR UPDATE;
             SELECT 1 FROM login_known_networks WHERE key = '\\x12' FOR UPDATE;",
        )
        .await
        .expect("hold");
    let platform = h.database.app_db(2).await;
    let throttle = bulkhead_auth::ThrottleConfig::default();
    let purge = async || {
        tokio::time::timeout(
            std::time::Duration::from_secs(3),
            platform.platform_tx(async |tx| throttle.purge(tx).await),
        )
        .await
        .expect("the purge waits for no login")
        .expect("purge")
    };
    assert_eq!(purge().await, 2, "the stale rows not in use");
    assert_eq!(h.count("login_attempts").await, 2);
    assert_eq!(h.count("login_known_networks").await, 2);
    login.batch_execute("ROLLBACK").await.expect("release");
    assert_eq!(purge().await, 2, "the rest of the stale rows");
    assert_eq!(h.count("login_attempts WHERE key = '\\x03'").await, 1);
    assert_eq!(h.count("login_known_networks WHERE key = '\\x13'").await, 1);
    assert_eq!(
        h.count("login_attempts").await + h.count("login_known_networks").await,
        2
    );
}

/// The revocation feed is served while its subscriber's token is valid: the
/// stream beats (it caught up) and then, once the token has expired (1 s,
/// and the guard's 5 s leeway), ends UNAUTHENTICATED; its subscriber comes
/// back with a fresh token and reloads (shared/clients: a stream that caught
/// up starts its backoff afresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_feed_ends_when_its_token_expires() {
    let h = spawn_service().await;
    let token = h
        .tokens
        .service_valid_for("tenant", std::time::Duration::from_secs(1));
    let mut request = tonic::Request::new(pb::WatchRevocationsRequest {});
    request.metadata_mut().insert(
        "x-service-authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let mut feed = h
        .auth
        .clone()
        .watch_revocations(request)
        .await
        .expect("subscribed")
        .into_inner();
    let started = std::time::Instant::now();
    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut beats = 0;
    let ended = loop {
        match tokio::time::timeout_at(give_up, feed.message())
            .await
            .expect("the feed ends by itself")
        {
            Ok(Some(item)) => beats += usize::from(item.heartbeat),
            Ok(None) => panic!("ended without a status after {beats} beats"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert_eq!(ended.message(), "token expired or not yet valid");
    assert!(beats >= 2, "it beat while the token was valid: {beats}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "ended within a beat of the token's expiry: {:?}",
        started.elapsed()
    );
}

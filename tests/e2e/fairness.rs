//! Noisy neighbours: one tenant flooding Task at ten times its rate while
//! another works normally. The quiet tenant gets no errors; the noisy one is
//! refused past its share with RESOURCE_EXHAUSTED and a RetryInfo, and nothing
//! else.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_guard::FairnessOverrides;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_testkit::bearer;
use tonic::Code;
use tonic_types::StatusExt as _;

use super::support::spawn_suite_with_task_fairness;

const RATE: u32 = 20;
const FLOOD_EVERY: Duration = Duration::from_millis(5); // 200/s: 10x the rate
const QUIET_EVERY: Duration = Duration::from_millis(100); // 10/s: half of it
const PHASE: Duration = Duration::from_secs(3);

fn member_of(tenant: TenantId, slug: &str) -> TenantUser {
    TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: tenant,
        tenant_slug: slug.into(),
        tenant_role: TenantRole::Admin,
        platform_role: PlatformRole::User,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_task_at_ten_times_its_rate_costs_a_quiet_tenant_nothing() {
    let suite = spawn_suite_with_task_fairness(FairnessOverrides {
        tenant_rate_per_second: NonZeroU32::new(RATE),
        tenant_burst: NonZeroU32::new(RATE),
        tenant_concurrency: Some(2),
        tenant_queue: Some(8),
        max_in_flight: Some(256),
        service_reserve: Some(32),
        public_in_flight: None,
    })
    .await;
    let tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    let (noisy, quiet) = (TenantId::new_v7(), TenantId::new_v7());
    let noisy_token = suite.token(&member_of(noisy, "noisy"));
    let quiet_token = suite.token(&member_of(quiet, "quiet"));

    let until = Instant::now() + PHASE;
    let flood = tokio::spawn({
        let tasks = tasks.clone();
        async move {
            // Open loop: a call every 5 ms whether or not the last answered.
            let mut ticks = tokio::time::interval(FLOOD_EVERY);
            let mut calls = tokio::task::JoinSet::new();
            while Instant::now() < until {
                ticks.tick().await;
                let (mut tasks, token) = (tasks.clone(), noisy_token.clone());
                calls.spawn(async move {
                    tasks
                        .list_tasks(bearer(&token, task::ListTasksRequest::default()))
                        .await
                        .map(|_| ())
                });
            }
            calls.join_all().await
        }
    });
    let mut quiet_results = Vec::new();
    let mut created = Vec::new();
    let mut ticks = tokio::time::interval(QUIET_EVERY);
    let mut n = 0;
    while Instant::now() < until {
        ticks.tick().await;
        let mut tasks = tasks.clone();
        n += 1;
        if n % 2 == 0 {
            let result = tasks
                .create_task(bearer(
                    &quiet_token,
                    task::CreateTaskRequest {
                        title: format!("quiet {n}"),
                        ..Default::default()
                    },
                ))
                .await;
            if let Ok(reply) = &result {
                created.push(reply.get_ref().task.clone().expect("task").id);
            }
            quiet_results.push(result.map(|_| ()));
        } else {
            let result = tasks
                .list_tasks(bearer(&quiet_token, task::ListTasksRequest::default()))
                .await;
            if let Ok(reply) = &result {
                // Only its own tasks, whatever the other tenant does.
                for found in &reply.get_ref().tasks {
                    assert!(created.contains(&found.id), "a task it did not create");
                }
            }
            quiet_results.push(result.map(|_| ()));
        }
    }
    let noisy_results = flood.await.expect("flood");

    let quiet_errors: Vec<_> = quiet_results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(
        quiet_errors.is_empty(),
        "the quiet tenant got errors: {quiet_errors:?}"
    );
    assert!(
        quiet_results.len() >= 25,
        "{} quiet calls",
        quiet_results.len()
    );

    let served = noisy_results.iter().filter(|r| r.is_ok()).count();
    let mut refused = 0;
    for status in noisy_results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let retry = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .expect("a RetryInfo");
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "{retry:?}"
        );
        refused += 1;
    }
    // Its burst and its rate over the phase, give or take the phase's edges.
    let allowed = RATE as usize + RATE as usize * PHASE.as_secs() as usize;
    assert!(
        served <= allowed + RATE as usize,
        "{served} noisy calls served, its share is about {allowed}"
    );
    assert!(
        refused >= noisy_results.len() / 2,
        "{refused} of {} noisy calls refused",
        noisy_results.len()
    );
}

/// A caller that sends a call's headers and holds its message back keeps
/// the tenant's place only until `MESSAGE_WITHIN` (10 s from its admission),
/// not the handler timeout (60 s): the held call fails DEADLINE_EXCEEDED,
/// creates nothing, and the tenant's next call, queued behind it for its
/// one place, is then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_message_never_comes_gives_its_place_back_in_ten_seconds() {
    let suite = spawn_suite_with_task_fairness(FairnessOverrides {
        tenant_concurrency: Some(1),
        tenant_queue: Some(4),
        ..FairnessOverrides::default()
    })
    .await;
    let tenant = TenantId::new_v7();
    let token = suite.token(&member_of(tenant, "held"));
    let started = Instant::now();
    let held = headers_alone::<task::CreateTaskRequest, task::CreateTaskResponse>(
        suite.channel(ServiceKind::Task),
        "/bulkhead.task.v1.TaskService/CreateTask",
        Some(&token),
    );
    let mut tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    // The held call has the place once a short call must wait for it past
    // its deadline (a ListTasks answers in a few ms otherwise).
    loop {
        let mut probe = bearer(&token, task::ListTasksRequest::default());
        probe.set_timeout(Duration::from_secs(1));
        match tasks.list_tasks(probe).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::Cancelled => break,
            Err(status) => panic!("the probe waits or is served: {status:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the held call never took the place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut list = bearer(&token, task::ListTasksRequest::default());
    list.set_timeout(Duration::from_secs(30));
    let listed = tasks
        .list_tasks(list)
        .await
        .expect("served once the place is free");
    let waited = started.elapsed();
    assert!(
        listed.into_inner().tasks.is_empty(),
        "the held call created nothing"
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(20)).contains(&waited),
        "queued behind the held call until its message was due: {waited:?}"
    );
    let status = held
        .await
        .expect("task")
        .expect_err("its message never came");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "request message not received in time");
}

/// A call to `path` whose headers go out at once and its message never.
fn headers_alone<Req, Res>(
    channel: tonic::transport::Channel,
    path: &'static str,
    token: Option<&str>,
) -> tokio::task::JoinHandle<Result<tonic::Response<Res>, tonic::Status>>
where
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    let mut request = tonic::Request::new(tokio_stream::pending::<Req>());
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    tokio::spawn(async move {
        grpc.ready().await.expect("ready");
        grpc.client_streaming(
            request,
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<Req, Res>::default(),
        )
        .await
    })
}

/// Anyone may call Login: one that sends its headers alone (holding no
/// place) ends after 2 s (`PUBLIC_MESSAGE_WITHIN`), not 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_call_whose_message_never_comes_ends_in_two_seconds() {
    use bulkhead_proto::auth::v1 as auth;
    let suite = super::support::spawn_suite().await;
    let started = Instant::now();
    let status = headers_alone::<auth::LoginRequest, auth::LoginResponse>(
        suite.channel(ServiceKind::Auth),
        "/bulkhead.auth.v1.AuthService/Login",
        None,
    )
    .await
    .expect("task")
    .expect_err("its message never came");
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "request message not received in time");
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(8)).contains(&waited),
        "the public bound, not the 10 s one: {waited:?}"
    );
}

/// Auth with a public share of `places`: public calls past it are shed.
async fn auth_with_public_share(places: usize) -> super::support::TestSuite {
    super::support::spawn_suite_with_fairness(
        "auth",
        FairnessOverrides {
            max_in_flight: Some(64),
            service_reserve: Some(8),
            public_in_flight: Some(places),
            ..FairnessOverrides::default()
        },
    )
    .await
}

/// A Login for an account nobody has (it still costs one Argon2 check).
fn nobodys_login() -> bulkhead_proto::auth::v1::LoginRequest {
    bulkhead_proto::auth::v1::LoginRequest {
        email: "nobody@example.com".into(),
        password: "a password long enough".into(),
        tenant_slug: String::new(),
    }
}

/// Whether `answer` is what a Login that ran answers for `nobodys_login`:
/// refused, or throttled once its free failures are spent.
fn ran(
    answer: &Result<tonic::Response<bulkhead_proto::auth::v1::LoginResponse>, tonic::Status>,
) -> bool {
    answer.as_ref().is_err_and(|status| {
        status.code() == Code::Unauthenticated
            || (status.code() == Code::ResourceExhausted
                && status.message().starts_with("too many login attempts"))
    })
}

/// A tenant's user's WhoAmI on Auth runs (never shed): NOT_FOUND, for a user
/// only the token knows.
async fn whoami_is_answered(
    client: &bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient<
        tonic::transport::Channel,
    >,
    token: &str,
) {
    let mut who = bearer(token, bulkhead_proto::auth::v1::WhoAmIRequest::default());
    who.set_timeout(Duration::from_secs(5));
    let status = client
        .clone()
        .who_am_i(who)
        .await
        .expect_err("no such user");
    assert_eq!(status.code(), Code::NotFound, "never shed: {status:?}");
}

/// An anonymous flood of Logins that send their headers alone holds no
/// place: a public call is admitted once its message has come. With a public
/// share of 3 and three times as many held calls always open, other callers'
/// Logins all run, and a tenant's user reaches Auth all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_sending_their_headers_alone_hold_no_place() {
    use bulkhead_proto::auth::v1 as auth;
    use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
    const FLOODERS: usize = 9;
    let suite = auth_with_public_share(3).await;
    let channel = suite.channel(ServiceKind::Auth);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (channel, stop) = (channel.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = headers_alone::<auth::LoginRequest, auth::LoginResponse>(
                        channel.clone(),
                        "/bulkhead.auth.v1.AuthService/Login",
                        None,
                    )
                    .await;
                }
            })
        })
        .collect();
    let mut client = AuthServiceClient::new(channel);
    let token = suite.token(&member_of(TenantId::new_v7(), "member"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut logins, mut served) = (0, 0);
    let until = Instant::now() + PHASE;
    while Instant::now() < until {
        whoami_is_answered(&client, &token).await;
        served += 1;
        let login = client.login(nobodys_login()).await;
        assert!(ran(&login), "the Login ran, never shed: {login:?}");
        logins += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for flooder in flood {
        flooder.await.expect("flooder");
    }
    assert!(
        logins > 10 && served > 10,
        "{logins} logins, {served} WhoAmI"
    );
}

/// Logins whose messages come in full are admitted up to the public share
/// (here one): those past it are shed (UNAVAILABLE with RetryInfo) while a
/// tenant's user still reaches Auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_past_the_public_share_are_shed_and_the_tenants_users_go_on() {
    use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
    let suite = auth_with_public_share(1).await;
    let client = AuthServiceClient::new(suite.channel(ServiceKind::Auth));
    let token = suite.token(&member_of(TenantId::new_v7(), "member"));
    let (mut shed, mut ran_through) = (0, 0);
    for _ in 0..5 {
        let logins: Vec<_> = (0..8)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move { client.login(nobodys_login()).await })
            })
            .collect();
        whoami_is_answered(&client, &token).await;
        for login in logins {
            match login.await.expect("task") {
                Err(status) if status.code() == Code::Unavailable => {
                    assert!(status.get_details_retry_info().is_some(), "{status:?}");
                    shed += 1;
                }
                answer => {
                    assert!(ran(&answer), "shed or ran: {answer:?}");
                    ran_through += 1;
                }
            }
        }
    }
    assert!(shed > 0, "past the public share: {shed} shed");
    assert!(ran_through > 0, "within it: {ran_through} ran");
}

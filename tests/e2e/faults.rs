//! Faults (issue #13, item 4):
//!
//! * a hung dependency costs a caller its own deadline, or a bounded wait
//!   when it set none, never a hang, and a call that failed so wrote nothing
//!   (Task checks an assignee with Tenant on every assignment; here a Task
//!   replica reaches Tenant through a proxy that holds every reply for 30 s);
//! * Audit away during a stream of writes, and back in the middle of it,
//!   loses none of their events and duplicates none;
//! * Task's connections to Postgres killed or frozen, and its link to
//!   Postgres (a TCP fault proxy in front of the cluster's Unix socket) cut
//!   mid-reply, blackholed and slowed, under a stream of writes: no
//!   acknowledged write lost or stored twice, no call past its deadline, and
//!   the service serving again by itself.

use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use bulkhead_testkit::bearer;
use tonic::Code;

use super::support::{socket_of, spawn_suite, spawn_suite_connecting, start_replicas_wired};

const PASSWORD: &str = "a long enough password";

/// One call of a stream of writes: its title, when it went out (from the
/// stream's start), and the id of the task it created or its code.
struct Sent {
    title: String,
    at: Duration,
    result: Result<String, Code>,
}

/// `calls` CreateTask calls with `token`, one every 20 ms whether or not the
/// last answered (open loop), titled `{prefix} {n}`, each with `deadline`.
fn task_stream(
    tasks: &TaskServiceClient<tonic::transport::Channel>,
    token: &str,
    prefix: &'static str,
    calls: u32,
    deadline: Option<Duration>,
) -> tokio::task::JoinHandle<Vec<Sent>> {
    let (tasks, token) = (tasks.clone(), token.to_owned());
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut sent = tokio::task::JoinSet::new();
        for n in 0..calls {
            tokio::time::sleep_until(start + Duration::from_millis(20) * n).await;
            let (mut tasks, token) = (tasks.clone(), token.clone());
            sent.spawn(async move {
                let title = format!("{prefix} {n}");
                let mut request = bearer(
                    &token,
                    task::CreateTaskRequest {
                        title: title.clone(),
                        ..Default::default()
                    },
                );
                if let Some(deadline) = deadline {
                    request.set_timeout(deadline);
                }
                let result = tasks
                    .create_task(request)
                    .await
                    .map(|r| r.into_inner().task.expect("task").id)
                    .map_err(|s| s.code());
                Sent {
                    title,
                    at: start.elapsed(),
                    result,
                }
            });
        }
        sent.join_all().await
    })
}

/// A minted ADMIN token of a new tenant (Task needs no more).
fn tenant_admin(suite: &super::support::TestSuite, slug: &str) -> (TenantId, String) {
    let tenant = TenantId::new_v7();
    let token = suite.token(&TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: tenant,
        tenant_slug: slug.into(),
        tenant_role: TenantRole::Admin,
        platform_role: PlatformRole::User,
    });
    (tenant, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_tenant_costs_a_task_caller_its_deadline_or_a_bounded_wait() {
    let suite = spawn_suite().await;
    let operator = suite.operator_token();
    let mut users = Vec::new();
    for email in ["owner@hung.example", "member@hung.example"] {
        users.push(
            AuthServiceClient::new(suite.channel(ServiceKind::Auth))
                .create_user(bearer(
                    &operator,
                    auth::CreateUserRequest {
                        email: email.into(),
                        password: PASSWORD.into(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("user")
                .into_inner()
                .user
                .expect("user")
                .id,
        );
    }
    let mut tenants = TenantServiceClient::new(suite.channel(ServiceKind::Tenant));
    tenants
        .create_tenant(bearer(
            &operator,
            tenant::CreateTenantRequest {
                slug: "hung".into(),
                name: "Hung".into(),
                domain: String::new(),
                owner_user_id: users[0].clone(),
            },
        ))
        .await
        .expect("tenant");
    let owner = AuthServiceClient::new(suite.channel(ServiceKind::Auth))
        .login(auth::LoginRequest {
            email: "owner@hung.example".into(),
            password: PASSWORD.into(),
            tenant_slug: String::new(),
        })
        .await
        .expect("login")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token;
    tenants
        .add_member(bearer(
            &owner,
            tenant::AddMemberRequest {
                user_id: users[1].clone(),
                role: tenant::TenantRole::Member.into(),
            },
        ))
        .await
        .expect("member");

    // A Task replica that reaches Tenant through a proxy.
    let proxy = bulkhead_testkit::proxy::TcpProxy::start(suite.addr(ServiceKind::Tenant)).await;
    let through_proxy = format!("http://{}", proxy.addr());
    let replica = start_replicas_wired(
        &suite,
        &[ServiceKind::Task],
        &[],
        suite.channel(ServiceKind::Auth),
        bulkhead_clients::REVOCATION_FEED_BOUND,
        &move |peers| peers.tenant = Some(through_proxy.clone()),
    )
    .await;
    let mut tasks = TaskServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            replica.addr(ServiceKind::Task).expect("replica")
        ))
        .expect("endpoint")
        .connect_lazy(),
    );
    let assign = |title: &str, timeout: Option<Duration>| {
        let mut request = bearer(
            &owner,
            task::CreateTaskRequest {
                title: title.into(),
                assignee_user_id: users[1].clone(),
                ..Default::default()
            },
        );
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    };
    tasks
        .create_task(assign("assigned while Tenant answers", None))
        .await
        .expect("through the proxy, unheld, assigning works");

    proxy.delay_replies(Duration::from_secs(30));
    // The caller's deadline: over when it is, not 30 s later.
    let started = Instant::now();
    let status = tasks
        .create_task(assign("with a deadline", Some(Duration::from_secs(1))))
        .await
        .expect_err("Tenant holds its answer");
    let took = started.elapsed();
    // (tonic's client reports its own deadline as CANCELLED "Timeout expired".)
    assert!(
        matches!(
            status.code(),
            Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
        ),
        "{status:?}"
    );
    assert!(took < Duration::from_millis(1_800), "{took:?}");
    // No deadline: Task bounds its own wait (5 s) and says Tenant is out of reach.
    let started = Instant::now();
    let status = tasks
        .create_task(assign("without a deadline", None))
        .await
        .expect_err("Tenant holds its answer");
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        took >= Duration::from_millis(4_500) && took < Duration::from_secs(8),
        "bounded by the cap, not by Tenant: {took:?}"
    );

    // What failed wrote nothing; once Tenant answers again, assigning works.
    proxy.delay_replies(Duration::ZERO);
    let listed = TaskServiceClient::new(suite.channel(ServiceKind::Task))
        .list_tasks(bearer(&owner, task::ListTasksRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .tasks;
    let titles: Vec<&str> = listed.iter().map(|t| t.title.as_str()).collect();
    assert_eq!(titles, ["assigned while Tenant answers"]);
    replica.stop().await;
}

#[derive(diesel::QueryableByName)]
struct EventCount {
    #[diesel(sql_type = diesel::sql_types::Text)]
    resource_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Audit is away while a stream of writes runs and comes back in the middle
/// of it: every acknowledged CreateTask's event arrives once (none lost, none
/// twice), and the tenant's chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_back_in_the_middle_of_a_stream_receives_every_acknowledged_write_once() {
    use bulkhead_proto::audit::v1 as audit;
    use diesel_async::RunQueryDsl as _;

    let mut suite =
        super::support::spawn_suite_holding(bulkhead_auth::LimitsConfig::default(), &["audit"])
            .await;
    let (tenant, admin) = tenant_admin(&suite, "stream");
    let tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    // 50 CreateTask calls a second for 6 s, open loop; Audit starts after 2 s.
    let load = task_stream(&tasks, &admin, "stream", 300, None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audit_started = suite.start_held().await;
    let history = load.await.expect("load");
    let acknowledged: Vec<String> = history
        .iter()
        .filter_map(|s| s.result.clone().ok())
        .collect();
    let failed: Vec<Code> = history
        .iter()
        .filter_map(|s| s.result.clone().err())
        .collect();
    assert!(
        failed.is_empty(),
        "Audit's absence fails no write: {failed:?}"
    );

    // Every acknowledged task's event, once.
    let mut audit_db = suite.databases["audit"].admin_connection().await;
    let started = Instant::now();
    let counts = loop {
        let counts: Vec<EventCount> = diesel::sql_query(format!(
            "SELECT resource_id, count(*) AS n FROM events
              WHERE tenant_id = '{tenant}' AND action = 'task.created' GROUP BY resource_id"
        ))
        .load(&mut audit_db)
        .await
        .expect("events");
        if counts.len() >= acknowledged.len() {
            break counts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {} events arrived",
            counts.len(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A moment more: a duplicate would show now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived: std::collections::BTreeMap<String, i64> =
        counts.into_iter().map(|c| (c.resource_id, c.n)).collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !arrived.contains_key(*id))
        .collect();
    let twice: Vec<(&String, &i64)> = arrived.iter().filter(|(_, n)| **n != 1).collect();
    let unknown: Vec<&String> = arrived
        .keys()
        .filter(|id| !acknowledged.contains(id))
        .collect();
    println!(
        "{} writes acknowledged, {} events arrived within {:?} of the last write (Audit back 4 s before it); lost {}, twice {}, unasked {}",
        acknowledged.len(),
        arrived.len(),
        started.elapsed(),
        lost.len(),
        twice.len(),
        unknown.len()
    );
    assert!(lost.is_empty(), "events lost: {lost:?}");
    assert!(twice.is_empty(), "events twice: {twice:?}");
    assert!(
        unknown.is_empty(),
        "events of no acknowledged write: {unknown:?}"
    );
    assert_eq!(acknowledged.len(), 300);

    // The chain holds.
    let verified = bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient::new(
        bulkhead_testkit::channel(&format!("http://{}", audit_started.addrs["audit"])),
    )
    .verify_chain(bearer(&admin, audit::VerifyChainRequest::default()))
    .await
    .expect("verify")
    .into_inner();
    assert!(verified.ok, "{}", verified.detail);
    assert!(verified.checked_count >= 300, "{}", verified.checked_count);
}

#[derive(diesel::QueryableByName)]
struct Pid {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

/// Task's database connections are killed (`pg_terminate_backend`) and one
/// is frozen (SIGSTOP, then SIGCONT 2 s later) under a stream of writes: the
/// service replaces the dead connections by itself, a frozen one costs the
/// calls on it their deadline and nothing more, and no acknowledged write is
/// lost or stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, in order")]
async fn backends_killed_or_frozen_under_load_lose_no_acknowledged_write() {
    use diesel_async::RunQueryDsl as _;

    let suite = spawn_suite().await;
    let (_, admin) = tenant_admin(&suite, "backends");
    let tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    // 50 CreateTask calls a second for 8 s, open loop, a 2 s deadline each.
    let load = task_stream(&tasks, &admin, "backend", 400, Some(Duration::from_secs(2)));
    let database = suite.databases["task"].name.clone();
    let mut admin_db = suite.databases["task"].admin_connection().await;
    let backends = async |conn: &mut diesel_async::AsyncPgConnection| -> Vec<i32> {
        diesel::sql_query(format!(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = '{database}' AND usename = 'task_app' AND pid <> pg_backend_pid()"
        ))
        .load::<Pid>(conn)
        .await
        .expect("backends")
        .into_iter()
        .map(|p| p.pid)
        .collect()
    };

    // At 2 s, every runtime connection of Task is killed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = backends(&mut admin_db).await;
    assert!(!killed.is_empty(), "Task holds connections");
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = '{database}' AND usename = 'task_app'"
    ))
    .execute(&mut admin_db)
    .await
    .expect("terminate");
    // At 4 s, one of the new ones is frozen for 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frozen = backends(&mut admin_db).await;
    let frozen = *frozen
        .as_slice()
        .first()
        .expect("Task opened new connections");
    let pid = nix::unistd::Pid::from_raw(frozen);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");

    let history = load.await.expect("load");
    let stored = stored_titles(&mut admin_db).await;
    let Tally {
        ok,
        lost,
        twice,
        codes,
    } = tally(&history, &stored);
    let after = history
        .iter()
        .filter(|s| s.result.is_ok() && s.at > Duration::from_secs(7))
        .count();
    println!(
        "{} calls, {} ok, errors {codes:?}; {} connections killed, one frozen 2 s; {after} ok in the last second; lost {}, stored twice {}",
        history.len(),
        ok,
        killed.len(),
        lost.len(),
        twice
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(twice, 0, "no write stored twice");
    assert!(after > 20, "calls succeed again by themselves: {after}");
    assert!(
        ok > history.len() / 2,
        "the service kept serving: {} of {}",
        ok,
        history.len()
    );
}

/// What a stream of writes left: the acknowledged ones, those of them not
/// stored, how many were stored twice, and the failures by code.
struct Tally {
    ok: usize,
    lost: Vec<String>,
    twice: usize,
    codes: std::collections::BTreeMap<String, usize>,
}

fn tally(history: &[Sent], stored: &[String]) -> Tally {
    let unique: std::collections::BTreeSet<&String> = stored.iter().collect();
    let acknowledged: Vec<&String> = history
        .iter()
        .filter(|s| s.result.is_ok())
        .map(|s| &s.title)
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for sent in history {
        if let Err(code) = &sent.result {
            *codes.entry(format!("{code:?}")).or_insert(0) += 1;
        }
    }
    Tally {
        ok: acknowledged.len(),
        lost: acknowledged
            .iter()
            .filter(|t| !unique.contains(**t))
            .map(|t| (*t).clone())
            .collect(),
        twice: stored.len() - unique.len(),
        codes,
    }
}

/// The titles of Task's stored tasks, read as the cluster's superuser.
async fn stored_titles(admin_db: &mut diesel_async::AsyncPgConnection) -> Vec<String> {
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Title {
        #[diesel(sql_type = diesel::sql_types::Text)]
        title: String,
    }
    diesel::sql_query("SELECT title FROM tasks")
        .load::<Title>(admin_db)
        .await
        .expect("tasks")
        .into_iter()
        .map(|t| t.title)
        .collect()
}

/// Task reaches Postgres through a fault proxy (TCP in front of the test
/// cluster's Unix socket), its runtime and platform pools alike, under a
/// stream of writes with a 2 s deadline each: every connection's replies cut
/// after 200 more bytes (mid-message) for 0.5 s, then nothing passing either
/// way for 2 s (a blackhole: connections held open), then every reply 150 ms
/// late for 1 s. No acknowledged write is lost or stored twice, every call
/// answers within its deadline (and a little for the answer to travel) with
/// OK or a retryable status, and calls succeed again by themselves once the
/// link heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, in order")]
async fn a_database_link_cut_mid_reply_blackholed_or_slow_loses_no_acknowledged_write() {
    let probe = bulkhead_postgres::testing::test_database(ServiceKind::Task.schema()).await;
    let (socket, port) = socket_of(&probe.app_url);
    let proxy =
        bulkhead_testkit::proxy::TcpProxy::start_unix(socket.join(format!(".s.PGSQL.{port}")))
            .await;
    let through = |url: &str| {
        let (role, rest) = url
            .trim_start_matches("postgresql://")
            .split_once('@')
            .expect("role@host");
        let database = rest.rsplit_once('/').expect("/database").1;
        format!("postgresql://{role}@{}/{database}", proxy.addr())
    };
    let suite = spawn_suite_connecting(bulkhead_auth::LimitsConfig::default(), &[], &|database| {
        if database.app_url.contains("task_app@") {
            bulkhead_server::DbUrls::new(
                through(&database.app_url),
                through(&database.platform_url),
            )
        } else {
            bulkhead_server::DbUrls::new(database.app_url.clone(), database.platform_url.clone())
        }
    })
    .await;
    let (_, admin) = tenant_admin(&suite, "link");
    let tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
    let deadline = Duration::from_secs(2);
    // 50 CreateTask calls a second for 9 s, open loop.
    let load = task_stream(&tasks, &admin, "link", 450, Some(deadline));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut_replies_after(200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.heal();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.blackhole();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.heal();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.delay_replies(Duration::from_millis(150));
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.delay_replies(Duration::ZERO);

    let history = load.await.expect("load");
    let stored = stored_titles(&mut suite.databases["task"].admin_connection().await).await;
    let Tally {
        ok,
        lost,
        twice,
        codes,
    } = tally(&history, &stored);
    // How long each call took: it went out at n × 20 ms.
    let slowest = history
        .iter()
        .map(|s| {
            let n: u32 = s
                .title
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("n");
            s.at.saturating_sub(Duration::from_millis(20) * n)
        })
        .max()
        .expect("calls");
    let after = history
        .iter()
        .filter(|s| s.result.is_ok() && s.at > Duration::from_secs(8))
        .count();
    println!(
        "{} calls, {} ok, errors {codes:?}; slowest answer {slowest:?}; {after} ok after 8 s; lost {}, stored twice {}",
        history.len(),
        ok,
        lost.len(),
        twice
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(twice, 0, "no write stored twice");
    assert!(
        slowest < deadline + Duration::from_millis(500),
        "a call outlived its deadline: {slowest:?}"
    );
    // UNAVAILABLE (a connection lost or not had in time), the deadline
    // (tonic's client reports it as CANCELLED), or RESOURCE_EXHAUSTED: the
    // tenant's calls held by the blackhole fill its share, and the guard
    // sheds the rest before they queue for the database.
    let unexpected: Vec<&String> = codes
        .keys()
        .filter(|code| {
            ![
                "Unavailable",
                "DeadlineExceeded",
                "Cancelled",
                "ResourceExhausted",
            ]
            .contains(&code.as_str())
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "only UNAVAILABLE, the deadline or shedding while the link fails: {codes:?}"
    );
    assert!(
        codes.values().sum::<usize>() > 0,
        "the faults reached the calls: {codes:?}"
    );
    assert!(after > 20, "calls succeed again by themselves: {after}");
}

/// A task whose row the database owner holds locked (`SELECT … FOR UPDATE`
/// in an open transaction), so Task's `UPDATE` of it waits.
struct LockedTask {
    admin: String,
    tasks: TaskServiceClient<tonic::transport::Channel>,
    id: String,
    database: bulkhead_postgres::testing::TestDatabase,
    holder: diesel_async::AsyncPgConnection,
}

impl LockedTask {
    async fn new(suite: &super::support::TestSuite, tenant: &str) -> Self {
        use diesel_async::SimpleAsyncConnection as _;
        let (_, admin) = tenant_admin(suite, tenant);
        let mut tasks = TaskServiceClient::new(suite.channel(ServiceKind::Task));
        let id = tasks
            .create_task(bearer(
                &admin,
                task::CreateTaskRequest {
                    title: "before".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("create")
            .into_inner()
            .task
            .expect("task")
            .id;
        let database = suite.databases["task"].clone();
        let mut holder = database.admin_connection().await;
        holder
            .batch_execute(&format!(
                "BEGIN; SELECT 1 FROM tasks WHERE id = '{id}' FOR UPDATE"
            ))
            .await
            .expect("lock the row");
        Self {
            admin,
            tasks,
            id,
            database,
            holder,
        }
    }

    /// Renames the task, waiting up to 20 s.
    fn rename(&self, title: &str) -> tonic::Request<task::UpdateTaskRequest> {
        let mut request = bearer(
            &self.admin,
            task::UpdateTaskRequest {
                task: Some(task::Task {
                    id: self.id.clone(),
                    title: title.into(),
                    ..Default::default()
                }),
                update_mask: bulkhead_testkit::mask(&["title"]),
            },
        );
        request.set_timeout(Duration::from_secs(20));
        request
    }

    /// The backend of Task's runtime role that waits on a lock, once it does.
    async fn waiting_backend(&self) -> i32 {
        use diesel_async::RunQueryDsl as _;
        let mut watcher = self.database.admin_connection().await;
        let waiting = format!(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = '{}' AND usename = 'task_app' AND wait_event_type = 'Lock'",
            self.database.name
        );
        let started = Instant::now();
        loop {
            let found = diesel::sql_query(&waiting)
                .load::<Pid>(&mut watcher)
                .await
                .expect("pg_stat_activity");
            if let Some(backend) = found.as_slice().first() {
                return backend.pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "Task's UPDATE never waited on the lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Releases the lock, then checks that the failed call changed nothing
    /// and that the same call is served now.
    async fn release_and_rename(mut self) {
        use diesel_async::SimpleAsyncConnection as _;
        self.holder
            .batch_execute("ROLLBACK")
            .await
            .expect("release");
        let stored = self
            .tasks
            .get_task(bearer(
                &self.admin,
                task::GetTaskRequest {
                    task_id: self.id.clone(),
                },
            ))
            .await
            .expect("get")
            .into_inner()
            .task
            .expect("task");
        assert_eq!(stored.title, "before", "the failed call changed nothing");
        let request = self.rename("after");
        let renamed = self
            .tasks
            .update_task(request)
            .await
            .expect("served again")
            .into_inner()
            .task
            .expect("task");
        assert_eq!(renamed.title, "after");
    }
}

/// A call whose database session the server ends under it (here
/// `pg_terminate_backend` while its `UPDATE` waits on a row lock; an
/// administrator's shutdown or an idle timeout end one the same way) answers
/// UNAVAILABLE, which a client may retry, not INTERNAL; it changed nothing,
/// and the service serves the same call on a new connection afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_database_session_is_terminated_answers_unavailable() {
    use diesel_async::RunQueryDsl as _;

    let suite = spawn_suite().await;
    let locked = LockedTask::new(&suite, "terminated").await;
    let call = {
        let (mut tasks, request) = (locked.tasks.clone(), locked.rename("after"));
        tokio::spawn(async move { tasks.update_task(request).await })
    };
    let pid = locked.waiting_backend().await;
    let mut watcher = locked.database.admin_connection().await;
    diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
        .execute(&mut watcher)
        .await
        .expect("terminate");
    let status = call
        .await
        .expect("call task")
        .expect_err("its session was ended");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "database unavailable, retry later");
    locked.release_and_rename().await;
}

/// A write blocked behind a transaction that does not end (an operator's
/// open `psql`, a stopped process) gives up after the pool's `lock_timeout`
/// (5 s) with UNAVAILABLE, well within the caller's 20 s deadline, instead
/// of holding its connection and its place until that deadline; it changed
/// nothing, and the same call is served once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_blocked_on_a_stuck_lock_gives_up_unavailable() {
    let suite = spawn_suite().await;
    let mut locked = LockedTask::new(&suite, "stuck").await;
    let started = Instant::now();
    let request = locked.rename("after");
    let status = locked
        .tasks
        .update_task(request)
        .await
        .expect_err("the row stayed locked");
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "busy, retry later");
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(15)).contains(&waited),
        "gave up after the lock timeout, not the deadline: {waited:?}"
    );
    locked.release_and_rename().await;
}

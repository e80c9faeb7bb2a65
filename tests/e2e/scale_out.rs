//! Scale-out on real parts (feature `scale-out`: `cargo test -p bulkhead-e2e
//! --features scale-out -- scale_out`; needs `apt-get install pgbouncer`):
//! the whole suite through a real PgBouncer in transaction pooling mode.
//!
//! PgBouncer 1.18 (Debian 12) does not track named prepared statements, and
//! in transaction mode the next transaction may land on a server connection
//! that never saw the `Parse`: the services run with their statement cache
//! off (`--db-statement-cache=false`), so every statement is prepared inside
//! the transaction that runs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_auth::Existing;
use bulkhead_context::UserId;
use bulkhead_proto::audit::v1 as audit;
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_server::DbUrls;
use bulkhead_testkit::bearer;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{TestSuite, socket_of, spawn_suite_connecting};

/// A PgBouncer of the test's own, in front of the test cluster.
struct PgBouncer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pgbouncer_binary() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect(
            "PgBouncer is not installed: `apt-get install pgbouncer` (the scale-out tests need it)",
        )
}

impl PgBouncer {
    /// Transaction pooling in front of the Unix socket `socket_dir:pg_port`,
    /// admitting the four services' runtime and platform roles.
    fn start(socket_dir: &Path, pg_port: u16) -> Self {
        let binary = pgbouncer_binary();
        let dir = tempfile::Builder::new()
            .prefix("bulkhead-pgbouncer")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let users: String = ServiceKind::ALL
            .iter()
            .flat_map(|k| [k.schema().app_role(), k.schema().platform_role()])
            .map(|role| format!("\"{role}\" \"\"\n"))
            .collect();
        std::fs::write(dir.path().join("userlist.txt"), users).expect("userlist");
        let ini = format!(
            "[databases]\n* = host={socket} port={pg_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
             max_client_conn = 1000\ndefault_pool_size = 8\nserver_reset_query =\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            socket = socket_dir.display(),
            dir = dir.path().display(),
        );
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(&config, ini).expect("pgbouncer.ini");
        let mut command = Command::new(binary);
        command
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // PgBouncer refuses to run as root: as root, it runs as the cluster's
        // OS user.
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt as _;
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("the postgres OS user");
            for path in [dir.path().to_path_buf(), config.clone()] {
                std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                    .expect("chown");
            }
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let child = command.spawn().expect("pgbouncer starts");
        let bouncer = Self { child, port, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "PgBouncer did not listen: {}",
                std::fs::read_to_string(bouncer.dir.path().join("pgbouncer.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    /// `url` (a test database's, on the Unix socket) through this PgBouncer.
    fn route(&self, url: &str) -> String {
        let (scheme_user, rest) = url.split_once('@').expect("user@host");
        let database = rest.rsplit_once('/').expect("/database").1;
        format!("{scheme_user}@127.0.0.1:{}/{database}", self.port)
    }
}

async fn suite_through_pgbouncer() -> (TestSuite, PgBouncer) {
    let probe = bulkhead_postgres::testing::test_database(ServiceKind::Tenant.schema()).await;
    let (socket, port) = socket_of(&probe.app_url);
    let bouncer = PgBouncer::start(&socket, port);
    let suite = spawn_suite_connecting(bulkhead_auth::LimitsConfig::default(), &[], &|database| {
        DbUrls {
            app: bouncer.route(&database.app_url),
            platform: bouncer.route(&database.platform_url),
            statement_cache: false,
        }
    })
    .await;
    (suite, bouncer)
}

const PASSWORD: &str = "correct horse battery staple";

/// What the scenario leaves: two tenants' owners and their tasks.
struct Worked {
    alice_token: String,
    bob_token: String,
    acme_tasks: Vec<String>,
    globex_tasks: Vec<String>,
    globex_id: String,
}

/// The isolation scenario, every call through `channel`: every service, users
/// of two tenants working at once (logins, tasks with assignees, audit
/// queries), a viewer, a service token where a user is needed, and each
/// tenant's reads and writes of the other's rows.
async fn isolation_scenario(suite: &TestSuite, channel: &dyn Fn(ServiceKind) -> Channel) -> Worked {
    // The users, on Auth's system path.
    let auth_db = suite.databases["auth"].app_db(2).await;
    let mut users = Vec::new();
    for email in ["alice@acme.test", "bob@globex.test", "vera@acme.test"] {
        users.push(
            bulkhead_auth::bootstrap_admin(&auth_db, email, PASSWORD, Existing::Verify)
                .await
                .expect("user")
                .user_id(),
        );
    }
    let (alice, bob, vera) = (users[0], users[1], users[2]);
    let mut tenants =
        tenant::tenant_service_client::TenantServiceClient::new(channel(ServiceKind::Tenant));
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
    tenants
        .create_tenant(create("acme", alice))
        .await
        .expect("acme");
    let globex_id = tenants
        .create_tenant(create("globex", bob))
        .await
        .expect("globex")
        .into_inner()
        .tenant
        .expect("tenant")
        .id;

    let mut auth = auth::auth_service_client::AuthServiceClient::new(channel(ServiceKind::Auth));
    let login = |email: &'static str| {
        let mut auth = auth.clone();
        async move {
            auth.login(auth::LoginRequest {
                email: email.into(),
                password: PASSWORD.into(),
                tenant_slug: String::new(),
            })
            .await
            .expect("login")
            .into_inner()
            .tokens
            .expect("tokens")
            .access_token
        }
    };
    let (alice_token, bob_token) = (
        login("alice@acme.test").await,
        login("bob@globex.test").await,
    );
    tenants
        .add_member(bearer(
            &alice_token,
            tenant::AddMemberRequest {
                user_id: vera.to_string(),
                role: tenant::TenantRole::Viewer as i32,
            },
        ))
        .await
        .expect("vera joins acme as a viewer");
    let vera_token = auth
        .login(auth::LoginRequest {
            email: "vera@acme.test".into(),
            password: PASSWORD.into(),
            tenant_slug: "acme".into(),
        })
        .await
        .expect("vera logs in")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token;

    // Both tenants work at once: tasks with assignees (Task asks Tenant).
    let tasks = task::task_service_client::TaskServiceClient::new(channel(ServiceKind::Task));
    let mut work = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (token, assignee) = if i % 2 == 0 {
            (alice_token.clone(), alice)
        } else {
            (bob_token.clone(), bob)
        };
        let mut tasks = tasks.clone();
        work.spawn(async move {
            let created = tasks
                .create_task(bearer(
                    &token,
                    task::CreateTaskRequest {
                        title: format!("task {i}"),
                        assignee_user_id: assignee.to_string(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| r.into_inner().task.expect("task").id);
            (i % 2 == 0, created)
        });
    }
    let (mut acme_tasks, mut globex_tasks) = (Vec::new(), Vec::new());
    while let Some(done) = work.join_next().await {
        let (is_acme, created) = done.expect("join");
        let id = created.expect("every task is created through PgBouncer");
        if is_acme {
            acme_tasks.push(id);
        } else {
            globex_tasks.push(id);
        }
    }

    // Each sees its own, and the other's rows do not exist for it.
    let list = |token: &str| {
        let mut tasks = tasks.clone();
        let request = bearer(
            token,
            task::ListTasksRequest {
                page_size: 100,
                ..Default::default()
            },
        );
        async move {
            let mut ids: Vec<String> = tasks
                .list_tasks(request)
                .await
                .expect("list")
                .into_inner()
                .tasks
                .into_iter()
                .map(|t| t.id)
                .collect();
            ids.sort();
            ids
        }
    };
    acme_tasks.sort();
    globex_tasks.sort();
    assert_eq!(list(&alice_token).await, acme_tasks);
    assert_eq!(list(&bob_token).await, globex_tasks);
    assert_eq!(list(&vera_token).await, acme_tasks, "a viewer reads");
    let mut t = tasks.clone();
    let foreign = t
        .get_task(bearer(
            &alice_token,
            task::GetTaskRequest {
                task_id: globex_tasks[0].clone(),
            },
        ))
        .await
        .expect_err("another tenant's task");
    assert_eq!(foreign.code(), Code::NotFound);
    let foreign_write = t
        .update_task(bearer(
            &bob_token,
            task::UpdateTaskRequest {
                task: Some(task::Task {
                    id: acme_tasks[0].clone(),
                    title: "taken over".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .expect_err("another tenant's task");
    assert_eq!(foreign_write.code(), Code::NotFound);
    let viewer_write = t
        .create_task(bearer(
            &vera_token,
            task::CreateTaskRequest {
                title: "viewer".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a viewer writes nothing");
    assert_eq!(viewer_write.code(), Code::PermissionDenied);
    let service_as_user = t
        .list_tasks(bearer(
            &suite.service_token("task"),
            task::ListTasksRequest::default(),
        ))
        .await
        .expect_err("a service token where a user is needed");
    assert_eq!(
        service_as_user.code(),
        Code::Unauthenticated,
        "a service token is not an access token"
    );

    // The relays (platform pools, through PgBouncer too) bring every task's
    // event to Audit, each in its own tenant's trail.
    let mut audit =
        audit::audit_service_client::AuditServiceClient::new(channel(ServiceKind::Audit));
    for (token, own, other) in [
        (&alice_token, &acme_tasks, &globex_tasks),
        (&bob_token, &globex_tasks, &acme_tasks),
    ] {
        let started = Instant::now();
        loop {
            let events = audit
                .query_events(bearer(
                    token,
                    audit::QueryEventsRequest {
                        filter: Some(audit::AuditEventFilter {
                            action: "task.created".into(),
                            ..Default::default()
                        }),
                        page_size: 100,
                        ..Default::default()
                    },
                ))
                .await
                .expect("query")
                .into_inner()
                .events;
            let mut seen: Vec<String> = events.into_iter().map(|e| e.resource_id).collect();
            seen.sort();
            assert!(
                seen.iter().all(|id| !other.contains(id)),
                "another tenant's event in the trail"
            );
            if &seen == own {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} of {} events arrived",
                seen.len(),
                own.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Worked {
        alice_token,
        bob_token,
        acme_tasks,
        globex_tasks,
        globex_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_isolation_holds_through_pgbouncer_in_transaction_mode() {
    let (suite, bouncer) = suite_through_pgbouncer().await;
    isolation_scenario(&suite, &|kind| suite.channel(kind)).await;
    // Every service went through PgBouncer.
    let log = std::fs::read_to_string(bouncer.dir.path().join("pgbouncer.log")).unwrap_or_default();
    for kind in ServiceKind::ALL {
        let role = kind.schema().app_role();
        assert!(
            log.contains(&format!("{role}@")),
            "{role} never connected through PgBouncer:\n{log}"
        );
    }
}

/// A channel balancing calls over `endpoints` (client side, round robin).
fn balanced(endpoints: &[String]) -> Channel {
    Channel::balance_list(
        endpoints
            .iter()
            .map(|e| tonic::transport::Endpoint::from_shared(e.clone()).expect("endpoint")),
    )
}

/// Polls `call` until it answers one of `expected` (`Ok` as `None`), for 2 s.
async fn within_two_seconds<F, Fut>(what: &str, expected: &[Option<Code>], mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let started = Instant::now();
    loop {
        let got = call().await.err().map(|s| s.code());
        if expected.contains(&got) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: still {got:?} after 2 s, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two replicas of every service on one database each (the second set wired
/// as another process is: its own guard, its own relays), behind one
/// client-side balanced channel: the isolation scenario holds, and a
/// deactivation made by one Tenant, the reactivation made by the other, and
/// a logout on the second Auth reach every replica within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_two_replicas_behind_one_balanced_channel() {
    let first = crate::support::spawn_suite().await;
    let second = crate::support::start_replicas(&first, &ServiceKind::ALL, &[]).await;
    let endpoints = |kind: ServiceKind| {
        let mut endpoints = vec![first.endpoint(kind)];
        if let Some(addr) = second.addr(kind) {
            endpoints.push(format!("http://{addr}"));
        }
        endpoints
    };
    let worked = isolation_scenario(&first, &|kind| balanced(&endpoints(kind))).await;

    // Each replica of Task, on its own.
    let task_replicas: Vec<_> = endpoints(ServiceKind::Task)
        .iter()
        .map(|e| {
            task::task_service_client::TaskServiceClient::new(
                tonic::transport::Endpoint::from_shared(e.clone())
                    .expect("endpoint")
                    .connect_lazy(),
            )
        })
        .collect();
    assert_eq!(task_replicas.len(), 2);
    let get = |token: &str, id: &str, replica: usize| {
        let mut client = task_replicas[replica].clone();
        let request = bearer(
            token,
            task::GetTaskRequest {
                task_id: id.to_owned(),
            },
        );
        async move { client.get_task(request).await.map(drop) }
    };
    for replica in 0..2 {
        get(&worked.bob_token, &worked.globex_tasks[0], replica)
            .await
            .expect("both replicas serve bob");
    }

    // A deactivation made by the first Tenant, then the reactivation made by
    // the second, reach both replicas (the other services' guards follow
    // Tenant; each Tenant re-reads the database, for the other's changes).
    let tenant_replica = |replica: usize| {
        tenant::tenant_service_client::TenantServiceClient::new(
            tonic::transport::Endpoint::from_shared(
                endpoints(ServiceKind::Tenant)[replica].clone(),
            )
            .expect("endpoint")
            .connect_lazy(),
        )
    };
    let operator = first.operator_token();
    let set_active = |active: bool| {
        bearer(
            &operator,
            tenant::SetTenantActiveRequest {
                tenant_id: worked.globex_id.clone(),
                is_active: active,
            },
        )
    };
    tenant_replica(0)
        .set_tenant_active(set_active(false))
        .await
        .expect("deactivate globex");
    // Refused: the tenant is inactive, and its members' sessions were ended
    // (whichever a replica learns first).
    for replica in 0..2 {
        within_two_seconds(
            &format!("deactivation on replica {replica}"),
            &[Some(Code::FailedPrecondition), Some(Code::Unauthenticated)],
            || get(&worked.bob_token, &worked.globex_tasks[0], replica),
        )
        .await;
    }
    tenant_replica(1)
        .set_tenant_active(set_active(true))
        .await
        .expect("reactivate globex");
    let bob_again =
        auth::auth_service_client::AuthServiceClient::new(first.channel(ServiceKind::Auth))
            .login(auth::LoginRequest {
                email: "bob@globex.test".into(),
                password: PASSWORD.into(),
                tenant_slug: String::new(),
            })
            .await
            .expect("bob logs in again")
            .into_inner()
            .tokens
            .expect("tokens")
            .access_token;
    for replica in 0..2 {
        within_two_seconds(
            &format!("reactivation on replica {replica}"),
            &[None],
            || get(&bob_again, &worked.globex_tasks[0], replica),
        )
        .await;
    }

    // A logout on the second Auth reaches both (the first Auth reads it from
    // the database, and streams it to the guards that follow it).
    auth::auth_service_client::AuthServiceClient::new(
        tonic::transport::Endpoint::from_shared(endpoints(ServiceKind::Auth)[1].clone())
            .expect("endpoint")
            .connect_lazy(),
    )
    .logout(bearer(
        &worked.alice_token,
        auth::LogoutRequest {
            all_sessions: false,
        },
    ))
    .await
    .expect("logout");
    for replica in 0..2 {
        within_two_seconds(
            &format!("revocation on replica {replica}"),
            &[Some(Code::Unauthenticated)],
            || get(&worked.alice_token, &worked.acme_tasks[0], replica),
        )
        .await;
    }
    second.stop().await;
}

/// A sink that counts every message handed to it.
#[derive(Default)]
struct CountingSink(std::sync::Mutex<Vec<uuid::Uuid>>);

impl bulkhead_outbox::Sink for CountingSink {
    fn deliver<'a>(
        &'a self,
        messages: &'a [bulkhead_outbox::Message],
    ) -> bulkhead_outbox::SinkFuture<'a> {
        Box::pin(async move {
            self.0
                .lock()
                .expect("lock")
                .extend(messages.iter().map(|m| m.id));
            Ok(())
        })
    }
}

/// Two relays on one outbox (two replicas of a writer), no faults: the sink
/// is handed each message exactly once — the lease is the mechanism, the
/// receiver's idempotency only the safety net.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_two_relays_send_each_message_once() {
    use bulkhead_outbox::{OnRejection, Relay};
    let database = bulkhead_postgres::testing::test_database(ServiceKind::Task.schema()).await;
    let db = database.app_db(8).await;
    let tenants: Vec<bulkhead_context::TenantId> = (0..10)
        .map(|_| bulkhead_context::TenantId::new_v7())
        .collect();
    let per_tenant = 60;
    let sink = std::sync::Arc::new(CountingSink::default());
    let config = bulkhead_outbox::RelayConfig {
        batch_size: 25,
        ..crate::support::fast_relay()
    };
    let relays: Vec<std::sync::Arc<Relay>> = (0..2)
        .map(|_| {
            std::sync::Arc::new(Relay::new(db.clone(), config.clone()).route(
                "audit",
                sink.clone(),
                OnRejection::DeadLetter,
            ))
        })
        .collect();
    // Writers and both relays at once.
    let mut writers = tokio::task::JoinSet::new();
    for tenant in tenants.clone() {
        let db = db.clone();
        writers.spawn(async move {
            for n in 0..per_tenant {
                db.tenant_tx(tenant, async |tx| {
                    bulkhead_outbox::enqueue(tx, "audit", &serde_json::json!({ "n": n })).await
                })
                .await
                .expect("enqueue");
            }
        });
    }
    let total = tenants.len() * per_tenant;
    let mut rounds = tokio::task::JoinSet::new();
    for relay in relays {
        let sink = sink.clone();
        rounds.spawn(async move {
            let started = Instant::now();
            while sink.0.lock().expect("lock").len() < total {
                relay.run_once().await.expect("round");
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the relays did not drain"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    while let Some(done) = rounds.join_next().await {
        done.expect("relay");
    }
    let sent = sink.0.lock().expect("lock").clone();
    let distinct: std::collections::BTreeSet<_> = sent.iter().collect();
    assert_eq!(distinct.len(), total, "every message arrived");
    assert_eq!(sent.len(), total, "and none was sent twice");
}

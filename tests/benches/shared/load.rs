//! A load generator with a leak check (issue #13, item 3): many tenants with
//! several users each, logged in through the real Login RPC, calling a mix of
//! RPCs of all four services open loop at a fixed rate; every answer is
//! checked for what another tenant created.
//!
//! **Open loop.** Call `i` is due at `start + i / rate` and starts then,
//! whether or not the calls before it have answered; its latency counts from
//! when it was due, not from when it went out. A stall of the suite (or of the
//! generator, which shares the machine) shows in the percentiles instead of
//! quietly slowing the generator down (no coordinated omission).
//!
//! **The leak check** knows what the generator created: every user id (at
//! set-up) and every task id a CreateTask answered, each with the tenant that
//! created it (a ledger from id to tenant: the per-tenant sets of created ids,
//! which never overlap, kept as one map). An answer to tenant A counts one leak
//! per item that:
//! * is a task whose id the ledger holds for another tenant, or whose creator
//!   or assignee is another tenant's user (users are all entered before the
//!   first call, so a task of B is caught by its creator even while B's
//!   CreateTask is still in flight and its id not yet entered);
//! * is a task other than the one GetTask or UpdateTask asked for;
//! * is a membership whose `tenant_id` is not A's, or whose user is another
//!   tenant's;
//! * is an audit event whose `tenant_id` is not A's, or whose actor or
//!   resource id is another tenant's user or task.
//!
//! An id the ledger does not know is never counted: a task of A's own may be
//! listed before the answer of the CreateTask that made it is entered. So the
//! check has no false positives, and in the world [`setup`] builds it misses
//! nothing: every task is created by one of the generated users, all entered
//! before the first call, and memberships and events carry their tenant.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bulkhead_proto::audit::v1 as audit;
use bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient;
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Every generated user's password (long enough for Auth's rule).
const PASSWORD: &str = "a load-test password";

/// How long one call may take before it counts as an error: long enough that
/// only a stuck call gets there, short enough that a run always ends.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long set-up keeps retrying a call that is told to wait
/// (RESOURCE_EXHAUSTED) before it gives up.
const SETUP_PATIENCE: Duration = Duration::from_secs(300);

/// The highest latency the histograms tell apart (µs); above it they saturate.
const HIGHEST_MICROS: u64 = 120_000_000;

/// Leak descriptions kept in [`LoadReport::leak_examples`].
const LEAK_EXAMPLES: usize = 10;

/// The operations of the mix, by name: the keys of [`LoadReport::per_op`].
pub const OPERATIONS: [&str; 6] = [
    "CreateTask",
    "GetTask",
    "ListTasks",
    "UpdateTask",
    "ListMembers",
    "QueryEvents",
];

/// How much load, from how many tenants.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Tenants created.
    pub tenants: usize,
    /// Users of each tenant (the first its OWNER, the second an ADMIN, the
    /// others MEMBERs).
    pub users_per_tenant: usize,
    /// Calls started per second.
    pub rate_per_second: u32,
    /// Calls in all.
    pub requests: usize,
    /// Seeds the choice of tenant, user, operation and target of every call:
    /// a run with the same seed sends the same calls (their interleaving is
    /// the machine's).
    pub seed: u64,
}

/// Where the four services are.
#[derive(Debug, Clone)]
pub struct Channels {
    /// Auth.
    pub auth: Channel,
    /// Tenant.
    pub tenant: Channel,
    /// Task.
    pub task: Channel,
    /// Audit.
    pub audit: Channel,
}

/// What a run measured and found.
#[derive(Debug)]
pub struct LoadReport {
    /// Calls started.
    pub sent: usize,
    /// Calls answered OK.
    pub ok: usize,
    /// Calls that failed, by gRPC code name (`"Unavailable"`).
    pub errors: BTreeMap<String, usize>,
    /// Items of answers that belonged to another tenant (see the module doc).
    pub leaks: usize,
    /// The first few leaks, described.
    pub leak_examples: Vec<String>,
    /// Latency of every answer, errors included (µs, from the intended send time).
    pub latency: Histogram<u64>,
    /// The same, per operation ([`OPERATIONS`]).
    pub per_op: BTreeMap<&'static str, Histogram<u64>>,
    /// From the first call due to the last answer.
    pub elapsed: Duration,
    /// From the first call due to the last one started: `requests / rate`
    /// when the generator kept up with its schedule.
    pub sending: Duration,
}

/// The tenants and users a run calls as, built by [`setup`].
pub struct World {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("World")
            .field("tenants", &self.inner.tenants.len())
            .finish_non_exhaustive()
    }
}

/// What every call of a run shares.
struct Inner {
    channels: Channels,
    tenants: Vec<LoadTenant>,
    ledger: Mutex<Ledger>,
}

/// One tenant of the world.
struct LoadTenant {
    /// Its id, as Tenant answered it.
    id: String,
    /// Its users' `Bearer …` values, the OWNER first.
    users: Vec<AsciiMetadataValue>,
    /// The index in `users` of an OWNER or ADMIN (Audit's reads need one).
    auditor: usize,
}

/// Which tenant created each id the generator made.
#[derive(Debug, Default)]
struct Ledger {
    /// Task and user ids, each with the index of the tenant that created it.
    creator: HashMap<String, usize>,
    /// Each tenant's task ids (the targets of its GetTask and UpdateTask).
    tasks: Vec<Vec<String>>,
}

impl Ledger {
    /// The tenant that created `id`, when the generator made it for a tenant
    /// other than `me`.
    fn foreign(&self, id: &str, me: usize) -> Option<usize> {
        self.creator
            .get(id)
            .copied()
            .filter(|creator| *creator != me)
    }

    /// Why `task`, answered to tenant `me`, is another tenant's (empty: it is not
    /// known to be).
    fn task_reasons(&self, task: &task::Task, me: usize) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(other) = self.foreign(&task.id, me) {
            reasons.push(format!("created by tenant {other}"));
        }
        for (role, user) in [
            ("creator", &task.creator_user_id),
            ("assignee", &task.assignee_user_id),
        ] {
            if let Some(other) = self.foreign(user, me) {
                reasons.push(format!("its {role} {user} is a user of tenant {other}"));
            }
        }
        reasons
    }

    fn enter_task(&mut self, tenant: usize, id: String) {
        self.creator.insert(id.clone(), tenant);
        if let Some(tasks) = self.tasks.get_mut(tenant) {
            tasks.push(id);
        }
    }
}

/// The calls of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateTask,
    GetTask,
    ListTasks,
    UpdateTask,
    ListMembers,
    QueryEvents,
}

impl Op {
    /// Each operation's share of the calls, in percent.
    const MIX: [(Self, u32); 6] = [
        (Self::CreateTask, 30),
        (Self::GetTask, 20),
        (Self::ListTasks, 20),
        (Self::UpdateTask, 10),
        (Self::ListMembers, 10),
        (Self::QueryEvents, 10),
    ];

    fn name(self) -> &'static str {
        match self {
            Self::CreateTask => OPERATIONS[0],
            Self::GetTask => OPERATIONS[1],
            Self::ListTasks => OPERATIONS[2],
            Self::UpdateTask => OPERATIONS[3],
            Self::ListMembers => OPERATIONS[4],
            Self::QueryEvents => OPERATIONS[5],
        }
    }

    fn draw(rng: &mut StdRng) -> Self {
        let mut roll = rng.gen_range(0..100);
        for (op, share) in Self::MIX {
            if roll < share {
                return op;
            }
            roll -= share;
        }
        Self::QueryEvents
    }
}

/// One call, as drawn.
#[derive(Debug)]
struct Pick {
    /// Its number in the run (names what it creates).
    n: usize,
    op: Op,
    tenant: usize,
    user: usize,
    /// The task GetTask and UpdateTask ask for.
    target: Option<String>,
}

/// What a call answered, reduced to what the leak check reads.
enum Answer {
    Tasks(Vec<task::Task>),
    Members(Vec<tenant::Membership>),
    Events(Vec<audit::AuditEvent>),
}

/// One call's result.
#[derive(Debug)]
struct Outcome {
    op: Op,
    micros: u64,
    result: Result<(), Code>,
    leaks: Vec<String>,
}

/// `authorization: Bearer <token>`, made once per user rather than per call.
fn bearer_value(token: &str) -> AsciiMetadataValue {
    format!("Bearer {token}")
        .parse()
        .expect("an access token is ASCII")
}

/// `message` as a call with `bearer` and the call timeout.
fn authorized<T>(bearer: &AsciiMetadataValue, message: T) -> tonic::Request<T> {
    let mut request = timed(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

/// `message` as a call with the call timeout.
fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// The answer of `call`, retried for as long as it is told to wait
/// (RESOURCE_EXHAUSTED, after the wait its RetryInfo names): the login limits
/// stay on while set-up logs in, and the password hashers' queue may be full.
///
/// # Panics
/// On any other error, or after [`SETUP_PATIENCE`].
async fn patiently<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let started = Instant::now();
    loop {
        match call().await {
            Ok(response) => return response.into_inner(),
            Err(status)
                if status.code() == Code::ResourceExhausted
                    && started.elapsed() < SETUP_PATIENCE =>
            {
                let wait = status
                    .get_details_retry_info()
                    .and_then(|info| info.retry_delay)
                    .unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(wait).await;
            }
            Err(status) => panic!("set-up, {what}: {status:?}"),
        }
    }
}

/// Logs `email` in to `slug` with the real Login RPC; its `Bearer …` value.
async fn login(auth: &AuthServiceClient<Channel>, email: &str, slug: &str) -> AsciiMetadataValue {
    let answer = patiently(&format!("Login {email}"), || {
        let mut auth = auth.clone();
        let request = timed(auth::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            tenant_slug: slug.into(),
        });
        async move { auth.login(request).await }
    })
    .await;
    bearer_value(&answer.tokens.expect("Login answers tokens").access_token)
}

/// Creates `config.tenants` tenants through the API as `operator` (a
/// SUPER_ADMIN's access token), each with `config.users_per_tenant` users:
/// the first its OWNER (at CreateTenant), the second an ADMIN, the others
/// MEMBERs (AddMember by the OWNER). Every user logs in with the real Login
/// RPC, one after another (the login limits stay as the suite was started
/// with; a wait they ask for is waited). Each tenant's OWNER creates one task,
/// so GetTask and UpdateTask always have a target.
///
/// # Panics
/// When a call of the set-up fails, or there is no tenant or no user to make.
pub async fn setup(channels: &Channels, operator: &str, config: &LoadConfig) -> World {
    assert!(
        config.tenants > 0 && config.users_per_tenant > 0,
        "a load needs at least one tenant with one user"
    );
    let operator = bearer_value(operator);
    let auth = AuthServiceClient::new(channels.auth.clone());
    let tenants = TenantServiceClient::new(channels.tenant.clone());
    let tasks = TaskServiceClient::new(channels.task.clone());
    // Names of their own on every run: set-up may run twice on one suite.
    let run = format!("{:08x}", rand::random::<u32>());
    // The second user is the ADMIN; a tenant of one has only its OWNER.
    let auditor = usize::from(config.users_per_tenant > 1);
    let mut ledger = Ledger::default();
    let mut prepared = Vec::with_capacity(config.tenants);
    for t in 0..config.tenants {
        let slug = format!("load-{run}-{t}");
        let emails: Vec<String> = (0..config.users_per_tenant)
            .map(|u| format!("user{u}.{slug}@load.example"))
            .collect();
        let mut user_ids = Vec::with_capacity(emails.len());
        for email in &emails {
            let user = patiently("CreateUser", || {
                let mut auth = auth.clone();
                let request = authorized(
                    &operator,
                    auth::CreateUserRequest {
                        email: email.clone(),
                        password: PASSWORD.into(),
                        display_name: String::new(),
                        platform_role: auth::PlatformRole::User.into(),
                    },
                );
                async move { auth.create_user(request).await }
            })
            .await
            .user
            .expect("CreateUser answers the user")
            .id;
            ledger.creator.insert(user.clone(), t);
            user_ids.push(user);
        }
        let id = patiently("CreateTenant", || {
            let mut tenants = tenants.clone();
            let request = authorized(
                &operator,
                tenant::CreateTenantRequest {
                    slug: slug.clone(),
                    name: format!("Load tenant {t}"),
                    domain: String::new(),
                    owner_user_id: user_ids[0].clone(),
                },
            );
            async move { tenants.create_tenant(request).await }
        })
        .await
        .tenant
        .expect("CreateTenant answers the tenant")
        .id;
        let owner = login(&auth, &emails[0], &slug).await;
        for (u, user) in user_ids.iter().enumerate().skip(1) {
            let role = if u == auditor {
                tenant::TenantRole::Admin
            } else {
                tenant::TenantRole::Member
            };
            patiently("AddMember", || {
                let mut tenants = tenants.clone();
                let request = authorized(
                    &owner,
                    tenant::AddMemberRequest {
                        user_id: user.clone(),
                        role: role.into(),
                    },
                );
                async move { tenants.add_member(request).await }
            })
            .await;
        }
        let mut users = vec![owner];
        for email in &emails[1..] {
            users.push(login(&auth, email, &slug).await);
        }
        let first = patiently("CreateTask", || {
            let mut tasks = tasks.clone();
            let request = authorized(
                &users[0],
                task::CreateTaskRequest {
                    title: format!("load tenant {t}'s first task"),
                    ..Default::default()
                },
            );
            async move { tasks.create_task(request).await }
        })
        .await
        .task
        .expect("CreateTask answers the task")
        .id;
        ledger.tasks.push(Vec::new());
        ledger.enter_task(t, first);
        prepared.push(LoadTenant { id, users, auditor });
    }
    World {
        inner: Arc::new(Inner {
            channels: channels.clone(),
            tenants: prepared,
            ledger: Mutex::new(ledger),
        }),
    }
}

/// Sends `config.requests` calls at `config.rate_per_second`, open loop (see
/// the module doc), as the users of `world`, and checks every answer for
/// leaks. Each call is to a tenant and a user drawn at random, and is one of:
/// CreateTask 30%, GetTask of one of the tenant's tasks 20%, ListTasks of 20
/// 20%, UpdateTask of the title of one of the tenant's tasks 10%, ListMembers
/// 10%, QueryEvents of 20 (as the tenant's ADMIN) 10%.
///
/// Access tokens last 15 minutes: a run longer than that answers
/// UNAUTHENTICATED from then on.
///
/// # Panics
/// When a call's task panics (a bug of the generator).
pub async fn run(world: &World, config: &LoadConfig) -> LoadReport {
    let inner = &world.inner;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let nanos_per_call = 1_000_000_000 / u64::from(config.rate_per_second.max(1));
    let mut report = LoadReport::empty();
    let mut calls = JoinSet::new();
    let start = Instant::now();
    for n in 0..config.requests {
        let offset = u64::try_from(n)
            .unwrap_or(u64::MAX)
            .saturating_mul(nanos_per_call);
        let due = start + Duration::from_nanos(offset);
        // Late already (the generator was held up): goes at once, its
        // latency still counted from `due`.
        tokio::time::sleep_until(due).await;
        let pick = inner.pick(&mut rng, n);
        calls.spawn(Arc::clone(inner).call(pick, due));
        report.sent += 1;
        // Answers are taken as they come: a long run holds only the calls
        // in flight.
        while let Some(done) = calls.try_join_next() {
            report.record(done.expect("a call of the load"));
        }
    }
    report.sending = start.elapsed();
    while let Some(done) = calls.join_next().await {
        report.record(done.expect("a call of the load"));
    }
    report.elapsed = start.elapsed();
    report
}

impl Inner {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic elsewhere while holding it leaves the ledger whole (every
        // change is one insert): keep reading it.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next call: a tenant, a user, an operation and its target.
    fn pick(&self, rng: &mut StdRng, n: usize) -> Pick {
        let tenant = rng.gen_range(0..self.tenants.len());
        let mut op = Op::draw(rng);
        let user = if op == Op::QueryEvents {
            self.tenants[tenant].auditor
        } else {
            rng.gen_range(0..self.tenants[tenant].users.len())
        };
        let mut target = None;
        if matches!(op, Op::GetTask | Op::UpdateTask) {
            if let Some(own) = self
                .ledger()
                .tasks
                .get(tenant)
                .filter(|own| !own.is_empty())
            {
                target = Some(own[rng.gen_range(0..own.len())].clone());
            }
            // Never: set-up gave every tenant a task.
            if target.is_none() {
                op = Op::CreateTask;
            }
        }
        Pick {
            n,
            op,
            tenant,
            user,
            target,
        }
    }

    /// Makes the call `pick`, due at `due`, and checks its answer.
    async fn call(self: Arc<Self>, pick: Pick, due: Instant) -> Outcome {
        let answer = self.send(&pick).await;
        let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (result, leaks) = match answer {
            Ok(answer) => (Ok(()), self.check(&pick, answer)),
            Err(status) => (Err(status.code()), Vec::new()),
        };
        Outcome {
            op: pick.op,
            micros,
            result,
            leaks,
        }
    }

    async fn send(&self, pick: &Pick) -> Result<Answer, Status> {
        let bearer = &self.tenants[pick.tenant].users[pick.user];
        let target = pick.target.clone().unwrap_or_default();
        let mut tasks = TaskServiceClient::new(self.channels.task.clone());
        let one = |task: Option<task::Task>| {
            task.map(|task| Answer::Tasks(vec![task]))
                .ok_or_else(|| Status::internal("an answer without its task"))
        };
        match pick.op {
            Op::CreateTask => {
                let request = authorized(
                    bearer,
                    task::CreateTaskRequest {
                        title: format!("load task {}", pick.n),
                        ..Default::default()
                    },
                );
                one(tasks.create_task(request).await?.into_inner().task)
            }
            Op::GetTask => {
                let request = authorized(bearer, task::GetTaskRequest { task_id: target });
                one(tasks.get_task(request).await?.into_inner().task)
            }
            Op::UpdateTask => {
                // No etag: concurrent renames of one task all apply, in turn.
                let request = authorized(
                    bearer,
                    task::UpdateTaskRequest {
                        task: Some(task::Task {
                            id: target,
                            title: format!("load task renamed by call {}", pick.n),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["title".into()],
                        }),
                    },
                );
                one(tasks.update_task(request).await?.into_inner().task)
            }
            Op::ListTasks => {
                let request = authorized(
                    bearer,
                    task::ListTasksRequest {
                        page_size: 20,
                        ..Default::default()
                    },
                );
                Ok(Answer::Tasks(
                    tasks.list_tasks(request).await?.into_inner().tasks,
                ))
            }
            Op::ListMembers => {
                let request = authorized(bearer, tenant::ListMembersRequest::default());
                let answer = TenantServiceClient::new(self.channels.tenant.clone())
                    .list_members(request)
                    .await?;
                Ok(Answer::Members(answer.into_inner().memberships))
            }
            Op::QueryEvents => {
                let request = authorized(
                    bearer,
                    audit::QueryEventsRequest {
                        page_size: 20,
                        ..Default::default()
                    },
                );
                let answer = AuditServiceClient::new(self.channels.audit.clone())
                    .query_events(request)
                    .await?;
                Ok(Answer::Events(answer.into_inner().events))
            }
        }
    }

    /// The leaks in `answer` to `pick` (see the module doc); enters the task a
    /// CreateTask made.
    fn check(&self, pick: &Pick, answer: Answer) -> Vec<String> {
        let me = pick.tenant;
        let mine = &self.tenants[me].id;
        let op = pick.op.name();
        let mut leaks = Vec::new();
        let mut ledger = self.ledger();
        match answer {
            Answer::Tasks(tasks) => {
                for task in tasks {
                    let mut reasons = ledger.task_reasons(&task, me);
                    if let Some(target) = pick.target.as_ref().filter(|t| **t != task.id) {
                        reasons.push(format!("{target} was asked for"));
                    }
                    if reasons.is_empty() {
                        if pick.op == Op::CreateTask {
                            ledger.enter_task(me, task.id);
                        }
                    } else {
                        leaks.push(format!(
                            "{op} for tenant {me}: task {}: {}",
                            task.id,
                            reasons.join("; ")
                        ));
                    }
                }
            }
            Answer::Members(members) => {
                for member in members {
                    let other = ledger.foreign(&member.user_id, me);
                    if other.is_some() || !member.tenant_id.eq_ignore_ascii_case(mine) {
                        leaks.push(format!(
                            "{op} for tenant {me} ({mine}): user {} in tenant {} (a user of tenant {other:?})",
                            member.user_id, member.tenant_id
                        ));
                    }
                }
            }
            Answer::Events(events) => {
                for event in events {
                    let actor = ledger.foreign(&event.actor_user_id, me);
                    let resource = ledger.foreign(&event.resource_id, me);
                    if actor.is_some()
                        || resource.is_some()
                        || !event.tenant_id.eq_ignore_ascii_case(mine)
                    {
                        leaks.push(format!(
                            "{op} for tenant {me} ({mine}): event {} ({}) of tenant {}, actor of tenant {actor:?}, resource {} of tenant {resource:?}",
                            event.id, event.action, event.tenant_id, event.resource_id
                        ));
                    }
                }
            }
        }
        leaks
    }
}

/// A latency histogram in microseconds, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds")
}

/// `micros` as milliseconds, to the microsecond.
fn ms(micros: u64) -> String {
    format!("{}.{:03}", micros / 1000, micros % 1000)
}

/// One line of the latency table.
fn row(label: &str, latency: &Histogram<u64>) -> String {
    format!(
        "    {label:<12} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        latency.len(),
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.9)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.value_at_quantile(0.999)),
        ms(latency.max()),
    )
}

impl LoadReport {
    fn empty() -> Self {
        Self {
            sent: 0,
            ok: 0,
            errors: BTreeMap::new(),
            leaks: 0,
            leak_examples: Vec::new(),
            latency: histogram(),
            per_op: BTreeMap::new(),
            elapsed: Duration::ZERO,
            sending: Duration::ZERO,
        }
    }

    fn record(&mut self, outcome: Outcome) {
        self.latency.saturating_record(outcome.micros);
        self.per_op
            .entry(outcome.op.name())
            .or_insert_with(histogram)
            .saturating_record(outcome.micros);
        match outcome.result {
            Ok(()) => self.ok += 1,
            Err(code) => *self.errors.entry(format!("{code:?}")).or_default() += 1,
        }
        self.leaks += outcome.leaks.len();
        let room = LEAK_EXAMPLES.saturating_sub(self.leak_examples.len());
        self.leak_examples
            .extend(outcome.leaks.into_iter().take(room));
    }

    /// Prints the counts, the rates, the errors by code, the leaks and the
    /// latency percentiles per operation and overall.
    pub fn print(&self) {
        let answered = self.ok + self.errors.values().sum::<usize>();
        #[expect(clippy::cast_precision_loss, reason = "rates")]
        let (sent_rate, answer_rate) = (
            self.sent as f64 / self.sending.as_secs_f64().max(1e-9),
            answered as f64 / self.elapsed.as_secs_f64().max(1e-9),
        );
        println!(
            "{} calls sent in {:.2} s ({sent_rate:.1}/s); {answered} answered ({} OK) in {:.2} s ({answer_rate:.1}/s)",
            self.sent,
            self.sending.as_secs_f64(),
            self.ok,
            self.elapsed.as_secs_f64(),
        );
        if self.errors.is_empty() {
            println!("  errors: none");
        } else {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            println!("  errors: {}", errors.join(", "));
        }
        println!("  leaks: {}", self.leaks);
        for example in &self.leak_examples {
            println!("    {example}");
        }
        println!("  latency from the intended send time (ms), every answer:");
        println!(
            "    {:<12} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for op in OPERATIONS {
            if let Some(latency) = self.per_op.get(op) {
                println!("{}", row(op, latency));
            }
        }
        println!("{}", row("all", &self.latency));
    }
}

#[cfg(test)]
mod tests {
    // Paths, not imports: a bench target builds this module without its tests.
    /// The check counts what it should: another tenant's task, by its id or
    /// by its creator, and nothing of the caller's own or unknown.
    #[test]
    fn the_ledger_knows_another_tenants_tasks() {
        let mut ledger = super::Ledger {
            tasks: vec![Vec::new(), Vec::new()],
            ..super::Ledger::default()
        };
        ledger.creator.insert("user-of-1".into(), 1);
        ledger.creator.insert("user-of-0".into(), 0);
        ledger.enter_task(1, "task-of-1".into());
        ledger.enter_task(0, "task-of-0".into());
        let task = |id: &str, creator: &str| super::task::Task {
            id: id.into(),
            creator_user_id: creator.into(),
            ..super::task::Task::default()
        };
        assert_eq!(
            ledger
                .task_reasons(&task("task-of-1", "user-of-0"), 0)
                .len(),
            1
        );
        assert_eq!(
            ledger.task_reasons(&task("unknown", "user-of-1"), 0).len(),
            1
        );
        assert!(
            ledger
                .task_reasons(&task("task-of-0", "user-of-0"), 0)
                .is_empty()
        );
        assert!(
            ledger
                .task_reasons(&task("unknown", "someone"), 0)
                .is_empty()
        );
    }
}

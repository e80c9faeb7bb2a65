//! Row-level security through the shared db layer and the `<svc>_app` role, on a
//! sample schema written like every tenant table must be. Real Postgres: an
//! ephemeral cluster per test process, a fresh database per test.

use std::time::Duration;

use bulkhead_context::TenantId;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_db::{Db, DbError, TenantConn};
use bulkhead_postgres::testing::{TestDatabase, test_database};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use uuid::Uuid;

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("tests/sample_migrations");
static SAMPLE: ServiceSchema = ServiceSchema::new("sample", &MIGRATIONS);

diesel::table! {
    projects (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        name -> Text,
    }
}

diesel::table! {
    notes (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        project_id -> Uuid,
        body -> Text,
    }
}

// --- a sample repository: functions take the scoped connection -----------------

async fn insert_project(tx: TenantConn<'_>, id: Uuid, name: &str) -> Result<(), DbError> {
    insert_project_for(tx, *tx.tenant_id().as_uuid(), id, name).await
}

/// Deliberately lets the caller pick the tenant column, to prove `WITH CHECK`.
async fn insert_project_for(
    tx: TenantConn<'_>,
    tenant: Uuid,
    id: Uuid,
    name: &str,
) -> Result<(), DbError> {
    diesel::insert_into(projects::table)
        .values((
            projects::tenant_id.eq(tenant),
            projects::id.eq(id),
            projects::name.eq(name),
        ))
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

/// A project's tenant and name: a row a one-flight read can check.
#[derive(Queryable, Debug, PartialEq, Eq)]
struct Project {
    tenant_id: Uuid,
    name: String,
}

impl bulkhead_db::TenantRow for Project {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
}

/// All projects the scope shows, deliberately *without* a tenant filter.
async fn all_projects(tx: TenantConn<'_>) -> Result<Vec<Project>, DbError> {
    Ok(projects::table
        .select((projects::tenant_id, projects::name))
        .order(projects::name)
        .load(&mut tx.pg())
        .await?)
}

/// Deliberately *without* a tenant filter: RLS alone must hide other tenants.
async fn all_project_names(tx: TenantConn<'_>) -> Result<Vec<String>, DbError> {
    Ok(projects::table
        .select(projects::name)
        .order(projects::name)
        .load(&mut tx.pg())
        .await?)
}

async fn rename_any_project(tx: TenantConn<'_>, id: Uuid, name: &str) -> Result<usize, DbError> {
    Ok(diesel::update(projects::table.filter(projects::id.eq(id)))
        .set(projects::name.eq(name))
        .execute(&mut tx.pg())
        .await?)
}

async fn delete_any_project(tx: TenantConn<'_>, id: Uuid) -> Result<usize, DbError> {
    Ok(diesel::delete(projects::table.filter(projects::id.eq(id)))
        .execute(&mut tx.pg())
        .await?)
}

async fn insert_note(tx: TenantConn<'_>, project_id: Uuid) -> Result<(), DbError> {
    diesel::insert_into(notes::table)
        .values((
            notes::tenant_id.eq(tx.tenant_id().as_uuid()),
            notes::id.eq(Uuid::now_v7()),
            notes::project_id.eq(project_id),
            notes::body.eq("hello"),
        ))
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

#[derive(QueryableByName, Debug)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    value: Option<String>,
}

async fn tenant_setting(conn: &mut bulkhead_db::AsyncPgConnection) -> Option<String> {
    let row: Setting = diesel::sql_query("SELECT current_setting('app.tenant_id', true) AS value")
        .get_result(conn)
        .await
        .expect("reading the setting");
    row.value.filter(|v| !v.is_empty())
}

async fn setting_in_scope(tx: TenantConn<'_>) -> Result<Option<String>, DbError> {
    let row: Setting = diesel::sql_query("SELECT current_setting('app.tenant_id', true) AS value")
        .get_result(&mut tx.pg())
        .await?;
    Ok(row.value)
}

// --- helpers ---------------------------------------------------------------------

/// The projects a connection outside any scope sees (none, unless a tenant
/// setting leaked onto it).
async fn visible_projects(conn: &mut bulkhead_db::SystemConn) -> i64 {
    projects::table
        .count()
        .get_result(conn.pg())
        .await
        .expect("count")
}

/// The server process behind the pool's next connection.
async fn backend_pid(db: &Db) -> i32 {
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let mut conn = db.system().await.expect("system");
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn.pg())
        .await
        .expect("pid")
        .pid
}

struct World {
    db: Db,
    database: TestDatabase,
    a: TenantId,
    b: TenantId,
    a_project: Uuid,
    b_project: Uuid,
}

async fn world(pool_size: u32) -> World {
    let database = test_database(&SAMPLE).await;
    let db = database.app_db(pool_size).await;
    let (a, b) = (TenantId::new_v7(), TenantId::new_v7());
    let (a_project, b_project) = (Uuid::now_v7(), Uuid::now_v7());
    db.tenant_tx(a, async |tx| {
        insert_project(tx, a_project, "a-project").await
    })
    .await
    .expect("A inserts its project");
    db.tenant_tx(b, async |tx| {
        insert_project(tx, b_project, "b-project").await
    })
    .await
    .expect("B inserts its project");
    World {
        db,
        database,
        a,
        b,
        a_project,
        b_project,
    }
}

fn is_rls_violation(err: &DbError) -> bool {
    err.to_string()
        .contains("violates row-level security policy")
}

/// Eight more tenants, the `i`th holding one project named `t{i}`.
async fn eight_tenants(world: &World) -> Vec<TenantId> {
    let tenants: Vec<TenantId> = (0..8).map(|_| TenantId::new_v7()).collect();
    for (i, t) in tenants.iter().enumerate() {
        world
            .db
            .tenant_tx(*t, async |tx| {
                insert_project(tx, Uuid::now_v7(), &format!("t{i}")).await
            })
            .await
            .expect("insert");
    }
    tenants
}

async fn names_of(world: &World, tenant: TenantId) -> Vec<String> {
    world
        .db
        .tenant_read(tenant, async |tx| all_project_names(tx).await)
        .await
        .expect("reading names")
}

// --- tests -----------------------------------------------------------------------

#[tokio::test]
async fn tenant_sees_only_its_own_rows() {
    let w = world(4).await;
    assert_eq!(names_of(&w, w.a).await, vec!["a-project"]);
    assert_eq!(names_of(&w, w.b).await, vec!["b-project"]);
    assert!(names_of(&w, TenantId::new_v7()).await.is_empty());
}

#[tokio::test]
async fn tenant_cannot_update_or_delete_another_tenants_rows() {
    let w = world(4).await;
    let b_project = w.b_project;
    let renamed =
        w.db.tenant_tx(w.a, async |tx| {
            rename_any_project(tx, b_project, "stolen").await
        })
        .await
        .expect("update runs");
    assert_eq!(renamed, 0, "A's update must not reach B's row");
    let deleted =
        w.db.tenant_tx(w.a, async |tx| delete_any_project(tx, b_project).await)
            .await
            .expect("delete runs");
    assert_eq!(deleted, 0, "A's delete must not reach B's row");
    assert_eq!(
        names_of(&w, w.b).await,
        vec!["b-project"],
        "B's row unchanged"
    );
}

#[tokio::test]
async fn insert_with_another_tenants_id_fails_with_check() {
    let w = world(4).await;
    let b = *w.b.as_uuid();
    let err =
        w.db.tenant_tx(w.a, async |tx| {
            insert_project_for(tx, b, Uuid::now_v7(), "planted").await
        })
        .await
        .expect_err("WITH CHECK must refuse a row for another tenant");
    assert!(is_rls_violation(&err), "unexpected error: {err}");
    assert_eq!(
        names_of(&w, w.b).await,
        vec!["b-project"],
        "nothing planted in B"
    );
}

#[tokio::test]
async fn without_a_tenant_nothing_is_visible_and_inserts_fail() {
    let w = world(2).await;
    let mut conn = w.db.system().await.expect("system connection");
    let visible: i64 = projects::table
        .count()
        .get_result(conn.pg())
        .await
        .expect("count runs");
    assert_eq!(visible, 0, "no tenant set: no rows");
    let err = diesel::insert_into(projects::table)
        .values((
            projects::tenant_id.eq(w.a.as_uuid()),
            projects::id.eq(Uuid::now_v7()),
            projects::name.eq("orphan"),
        ))
        .execute(conn.pg())
        .await
        .expect_err("no tenant set: insert refused");
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn first_statement_of_the_scope_already_sees_the_tenant() {
    let w = world(1).await;
    for _ in 0..3 {
        let in_tx =
            w.db.tenant_tx(w.a, async |tx| setting_in_scope(tx).await)
                .await
                .expect("scoped read");
        assert_eq!(in_tx, Some(w.a.to_string()));
        let in_read =
            w.db.tenant_read(w.b, async |tx| setting_in_scope(tx).await)
                .await
                .expect("scoped read-only");
        assert_eq!(in_read, Some(w.b.to_string()));
    }
}

#[tokio::test]
async fn tenant_setting_does_not_leak_to_the_next_use_of_the_connection() {
    // Pool of one: every step below gets the very same connection (or, after a
    // cancellation, a new one, never the half-finished transaction).
    let w = world(1).await;
    let a_project = w.a_project;

    // After a committed read-write scope.
    w.db.tenant_tx(w.a, async |tx| all_project_names(tx).await)
        .await
        .expect("scope");
    let mut conn = w.db.system().await.expect("system");
    assert_eq!(tenant_setting(conn.pg()).await, None);
    drop(conn);

    // After a read-only scope whose COMMIT runs in the background.
    w.db.tenant_read(w.a, async |tx| all_project_names(tx).await)
        .await
        .expect("read scope");
    let mut conn = w.db.system().await.expect("system");
    assert_eq!(tenant_setting(conn.pg()).await, None);
    drop(conn);

    // After a scope that failed and rolled back.
    let failed =
        w.db.tenant_tx(w.a, async |tx| {
            insert_project(tx, a_project, "duplicate key").await
        })
        .await;
    assert!(failed.is_err());
    let mut conn = w.db.system().await.expect("system");
    assert_eq!(tenant_setting(conn.pg()).await, None);
    drop(conn);

    // After a scope whose future was dropped midway (a cancelled request).
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        w.db.tenant_tx(w.a, async |tx| {
            let names = all_project_names(tx).await?;
            diesel::sql_query("SELECT pg_sleep(5)")
                .execute(&mut tx.pg())
                .await?;
            Ok::<_, DbError>(names)
        }),
    )
    .await;
    assert!(cancelled.is_err(), "the scope was cancelled");
    let mut conn = w.db.system().await.expect("system");
    assert_eq!(tenant_setting(conn.pg()).await, None);
    assert_eq!(
        visible_projects(&mut conn).await,
        0,
        "no tenant leaked into the next user of the pool"
    );
}

#[tokio::test]
async fn read_scope_refuses_writes() {
    let w = world(2).await;
    let err =
        w.db.tenant_read(w.a, async |tx| {
            insert_project(tx, Uuid::now_v7(), "write in read").await
        })
        .await
        .expect_err("read-only");
    assert!(err.to_string().contains("read-only transaction"), "{err}");
}

#[tokio::test]
async fn concurrent_scopes_of_many_tenants_never_mix() {
    let w = world(4).await;
    let tenants = eight_tenants(&w).await;
    let mut tasks = Vec::new();
    for round in 0..25 {
        for (i, t) in tenants.iter().enumerate() {
            let db = w.db.clone();
            let t = *t;
            tasks.push(tokio::spawn(async move {
                let names = if round % 2 == 0 {
                    db.tenant_read(t, async |tx| all_project_names(tx).await)
                        .await
                } else {
                    db.tenant_tx(t, async |tx| all_project_names(tx).await)
                        .await
                };
                (i, names.expect("read"))
            }));
        }
    }
    for task in tasks {
        let (i, names) = task.await.expect("task");
        assert_eq!(names, vec![format!("t{i}")]);
    }
}

#[tokio::test]
async fn compound_foreign_key_rejects_a_reference_to_another_tenants_row() {
    let w = world(2).await;
    let (a_project, b_project) = (w.a_project, w.b_project);
    w.db.tenant_tx(w.a, async |tx| insert_note(tx, a_project).await)
        .await
        .expect("a note on A's own project is fine");
    let err =
        w.db.tenant_tx(w.a, async |tx| insert_note(tx, b_project).await)
            .await
            .expect_err("a note pointing at B's project must be refused");
    assert!(err.is_foreign_key_violation(), "unexpected error: {err}");
}

#[tokio::test]
async fn app_role_cannot_switch_off_row_level_security() {
    let w = world(1).await;
    let mut conn = w.database.app_connection().await;
    for statement in [
        "ALTER TABLE projects DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE projects NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON projects",
        "SET ROLE sample_owner",
        "SET SESSION AUTHORIZATION sample_owner",
        "CREATE TABLE sneaky (id int)",
    ] {
        let result = diesel::sql_query(statement).execute(&mut conn).await;
        assert!(result.is_err(), "the app role must not run: {statement}");
    }

    #[derive(QueryableByName)]
    struct Flags {
        #[diesel(sql_type = Bool)]
        rolsuper: bool,
        #[diesel(sql_type = Bool)]
        rolbypassrls: bool,
        #[diesel(sql_type = Bool)]
        member_of_owner: bool,
    }
    let flags: Flags = diesel::sql_query(
        "SELECT rolsuper, rolbypassrls,
                pg_has_role(current_user, 'sample_owner', 'MEMBER') AS member_of_owner
           FROM pg_roles WHERE rolname = current_user",
    )
    .get_result(&mut conn)
    .await
    .expect("role flags");
    assert!(!flags.rolsuper && !flags.rolbypassrls && !flags.member_of_owner);
}

#[test]
fn repository_functions_refuse_unscoped_connections() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

#[tokio::test]
async fn platform_transactions_reach_only_what_platform_policies_allow() {
    let w = world(2).await;
    // sample_platform was granted nothing on the sample tables: refused outright.
    let err =
        w.db.platform_tx(async |tx| {
            Ok::<i64, DbError>(projects::table.count().get_result(&mut tx.pg()).await?)
        })
        .await
        .expect_err("no grant, no access");
    assert!(err.to_string().contains("permission denied"), "{err}");
    // A pool without the platform pool refuses platform transactions.
    let runtime_only = w.database.runtime_only_db(1).await;
    let err = runtime_only
        .platform_tx(async |_tx| Ok::<_, DbError>(()))
        .await
        .expect_err("no platform pool");
    assert!(err.to_string().contains("no platform pool"), "{err}");
    // Platform transactions run as their own login role; the runtime pool stays
    // the runtime role.
    #[derive(QueryableByName)]
    struct Who {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let platform: Who =
        w.db.platform_tx(async |tx| {
            Ok::<_, DbError>(
                diesel::sql_query("SELECT current_user::text AS name")
                    .get_result(&mut tx.pg())
                    .await?,
            )
        })
        .await
        .expect("who");
    assert_eq!(platform.name, "sample_platform");
    let mut conn = w.db.system().await.expect("system");
    let who: Who = diesel::sql_query("SELECT current_user::text AS name")
        .get_result(conn.pg())
        .await
        .expect("who");
    assert_eq!(who.name, "sample_app");
}

#[tokio::test]
async fn neither_role_can_set_role_to_any_other() {
    let w = world(1).await;
    for (url, me) in [
        (&w.database.app_url, "sample_app"),
        (&w.database.platform_url, "sample_platform"),
    ] {
        let mut conn = bulkhead_db::schema::connect_once(url)
            .await
            .expect("connect");
        #[derive(QueryableByName)]
        struct Role {
            #[diesel(sql_type = Text)]
            rolname: String,
        }
        let roles: Vec<Role> = diesel::sql_query(
            "SELECT rolname::text AS rolname FROM pg_roles WHERE rolname <> current_user",
        )
        .load(&mut conn)
        .await
        .expect("roles");
        assert!(roles.iter().any(|r| r.rolname == "sample_owner"));
        for role in roles {
            let result = diesel::sql_query(format!("SET ROLE \"{}\"", role.rolname))
                .execute(&mut conn)
                .await;
            assert!(result.is_err(), "{me} must not become {}", role.rolname);
        }
    }
}

/// Any role may `SET` a custom setting for its session: on a pool of one,
/// the next user of the connection (the system path too) starts without it.
#[tokio::test]
async fn a_session_level_setting_never_reaches_the_next_user_of_the_connection() {
    use diesel_async::RunQueryDsl as _;
    let w = world(1).await;
    let mut conn = w.db.system().await.expect("connection");
    for setting in ["app.tenant_id", "app.user_id"] {
        diesel::sql_query(format!("SET {setting} = '{}'", w.a.as_uuid()))
            .execute(conn.pg())
            .await
            .expect("a session-level SET");
    }
    drop(conn);
    let mut next = w.db.system().await.expect("the same connection");
    assert_eq!(tenant_setting(next.pg()).await, None);
    let user: Setting =
        diesel::sql_query("SELECT nullif(current_setting('app.user_id', true), '') AS value")
            .get_result(next.pg())
            .await
            .expect("setting");
    assert_eq!(user.value, None);
    let visible: i64 = projects::table
        .count()
        .get_result(next.pg())
        .await
        .expect("count runs");
    assert_eq!(visible, 0, "no tenant, no rows");
}

#[tokio::test]
async fn a_session_level_tenant_setting_reaches_no_scoped_transaction() {
    use diesel_async::RunQueryDsl as _;
    let w = world(1).await;
    let mut conn = w.db.system().await.expect("connection");
    diesel::sql_query(format!("SET app.tenant_id = '{}'", w.a.as_uuid()))
        .execute(conn.pg())
        .await
        .expect("a session-level SET");
    drop(conn);
    let in_b =
        w.db.tenant_tx(w.b, async |tx| setting_in_scope(tx).await)
            .await
            .expect("tenant transaction");
    assert_eq!(in_b, Some(w.b.as_uuid().to_string()));
    let in_user =
        w.db.user_tx(bulkhead_context::UserId::new_v7(), async |tx| {
            let row: Setting =
                diesel::sql_query("SELECT current_setting('app.tenant_id', true) AS value")
                    .get_result(&mut tx.pg())
                    .await?;
            Ok::<_, DbError>(row.value.filter(|v| !v.is_empty()))
        })
        .await
        .expect("user transaction");
    assert_eq!(in_user, None, "a user transaction runs under no tenant");
    assert_eq!(names_of(&w, w.b).await, ["b-project"]);
}

/// The names of `projects`, with their tenants checked against `tenant`.
fn names(tenant: TenantId, projects: Vec<Project>) -> Vec<String> {
    projects
        .into_iter()
        .map(|p| {
            assert_eq!(p.tenant_id, *tenant.as_uuid(), "another tenant's row");
            p.name
        })
        .collect()
}

/// A one-flight read on a connection that has never run its statement: the
/// statement is prepared in a round trip of its own, the `COMMIT` overtakes
/// it, and it runs with no tenant: nothing found, so the read is asked again
/// the ordinary way and answers from inside the scope. Once prepared, the
/// statement keeps its place and the answer comes in one flight.
#[tokio::test]
async fn a_one_flight_read_answers_from_inside_the_scope_even_on_first_use() {
    let w = world(1).await;
    let read = async |tenant| {
        let rows =
            w.db.tenant_read_rows(tenant, async |tx| all_projects(tx).await)
                .await
                .expect("read");
        names(tenant, rows)
    };
    assert_eq!(read(w.a).await, vec!["a-project"]);
    assert_eq!(
        w.db.one_flight_retries(),
        1,
        "the first use was overtaken and asked again"
    );
    assert_eq!(read(w.a).await, vec!["a-project"]);
    assert_eq!(read(w.b).await, vec!["b-project"]);
    assert_eq!(
        w.db.one_flight_retries(),
        1,
        "a prepared statement is answered in one flight"
    );
    // Nothing found is always asked again: another tenant's row reads as no
    // row the same way.
    let missing =
        w.db.tenant_read_rows(w.b, async |tx| {
            Ok::<_, DbError>(
                projects::table
                    .filter(projects::id.eq(w.a_project))
                    .select((projects::tenant_id, projects::name))
                    .first::<Project>(&mut tx.pg())
                    .await
                    .optional()?,
            )
        })
        .await
        .expect("read");
    assert_eq!(missing, None);
}

/// A session-level `SET app.tenant_id` left on the connection (any role may
/// set it outside a transaction; behind a transaction pooler, another
/// client's session) reaches a statement the `COMMIT` overtook: it sees that
/// tenant's rows, and the answer is discarded because they are not the
/// scope's, then read again inside the scope.
#[tokio::test]
async fn an_overtaken_statement_seeing_another_tenant_is_discarded() {
    let w = world(1).await;
    {
        use diesel_async::SimpleAsyncConnection as _;
        let mut conn = w.db.system().await.expect("system");
        conn.pg()
            .batch_execute(&format!("SET app.tenant_id = '{}'", w.b))
            .await
            .expect("a session-level set");
    }
    // A statement this connection never ran: the COMMIT overtakes it.
    let rows =
        w.db.tenant_read_rows(w.a, async |tx| all_projects(tx).await)
            .await
            .expect("read");
    assert_eq!(names(w.a, rows), vec!["a-project"], "never B's rows");
    assert_eq!(w.db.one_flight_retries(), 1);
}

/// One-flight reads of many tenants at once, over few connections, some
/// statements new to their connection: each answer is its tenant's own.
#[tokio::test]
async fn one_flight_reads_of_many_tenants_at_once_never_mix() {
    let w = world(4).await;
    let tenants = eight_tenants(&w).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..25 {
        for (i, t) in tenants.iter().enumerate() {
            let (db, t) = (w.db.clone(), *t);
            tasks.spawn(async move {
                let rows = db
                    .tenant_read_rows(t, async |tx| all_projects(tx).await)
                    .await
                    .expect("read");
                (i, names(t, rows))
            });
        }
    }
    while let Some(task) = tasks.join_next().await {
        let (i, names) = task.expect("task");
        assert_eq!(names, vec![format!("t{i}")]);
    }
}

/// A one-flight read cancelled while its statement waits (its `BEGIN`
/// answered, the `SELECT` blocked on a lock, the `COMMIT` queued behind it):
/// the connection goes back marked and is discarded (its COMMIT, queued, would
/// end the transaction anyway: two guards), and the pool's next user
/// (a pool of one) gets a fresh connection with no tenant and no open
/// transaction; the next one-flight read answers its own tenant's rows.
#[tokio::test]
async fn a_cancelled_one_flight_read_leaves_no_tenant_to_the_next_user() {
    use diesel_async::SimpleAsyncConnection as _;

    let w = world(1).await;
    // Prepared on the connection, so the whole read leaves in one flight.
    for _ in 0..2 {
        w.db.tenant_read_rows(w.a, async |tx| all_projects(tx).await)
            .await
            .expect("read");
    }
    let before = backend_pid(&w.db).await;
    let mut holder = w.database.admin_connection().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE projects IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        w.db.tenant_read_rows(w.a, async |tx| all_projects(tx).await),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the read waited on the lock and was cancelled"
    );
    holder.batch_execute("ROLLBACK").await.expect("unlock");
    assert_ne!(
        backend_pid(&w.db).await,
        before,
        "the cancelled read's connection was discarded, not handed on"
    );

    let mut conn = w.db.system().await.expect("system");
    assert_eq!(tenant_setting(conn.pg()).await, None);
    // SAVEPOINT works only inside a transaction block.
    let savepoint = conn.pg().batch_execute("SAVEPOINT probe").await;
    assert!(savepoint.is_err(), "no transaction left open");
    assert_eq!(
        visible_projects(&mut conn).await,
        0,
        "no tenant leaked into the next user of the pool"
    );
    drop(conn);
    let rows =
        w.db.tenant_read_rows(w.b, async |tx| all_projects(tx).await)
            .await
            .expect("read");
    assert_eq!(names(w.b, rows), vec!["b-project"]);
}

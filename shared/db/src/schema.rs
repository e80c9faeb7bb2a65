//! The migrating side: each service's three roles, its database, its embedded
//! migrations, and the start-up check that neither the runtime role nor the
//! platform role can bypass row-level security or reach another role.
//!
//! Role and database names are built only from a service name checked at
//! construction (`[a-z][a-z0-9_]*`), never from request data.

use diesel::QueryableByName;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sql_types::{Array, BigInt, Bool, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::{Db, DbError};

/// What a service owns in Postgres: a name and its embedded migrations.
#[derive(Clone, Copy)]
pub struct ServiceSchema {
    service: &'static str,
    migrations: &'static EmbeddedMigrations,
    shared: &'static [&'static EmbeddedMigrations],
    jobs: &'static [&'static str],
}

impl std::fmt::Debug for ServiceSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSchema")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Lends the `'static` embedded migrations to diesel's harness, which takes its
/// source by value.
struct StaticMigrations(&'static EmbeddedMigrations);

impl MigrationSource<Pg> for StaticMigrations {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        MigrationSource::<Pg>::migrations(self.0)
    }
}

impl ServiceSchema {
    /// # Panics
    /// When `service` is not a lowercase identifier: a programming error, caught by
    /// the first test that builds the schema.
    #[must_use]
    pub const fn new(service: &'static str, migrations: &'static EmbeddedMigrations) -> Self {
        let bytes = service.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= 40,
            "service name length"
        );
        assert!(
            bytes[0].is_ascii_lowercase(),
            "service name must start with a-z"
        );
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_',
                "service name must be [a-z0-9_]"
            );
            i += 1;
        }
        Self {
            service,
            migrations,
            shared: &[],
            jobs: &[],
        }
    }

    /// Adds job roles `<svc>_<job>`: login roles of their own for jobs that run
    /// outside the service (Audit's retention job), with their own credentials
    /// and grants, and the same limits as the runtime role. The service's
    /// migrations grant them what the job needs; nothing else reaches them.
    ///
    /// # Panics
    /// When a job name is not `[a-z]+`: a programming error.
    #[must_use]
    pub const fn with_jobs(mut self, jobs: &'static [&'static str]) -> Self {
        let mut j = 0;
        while j < jobs.len() {
            let bytes = jobs[j].as_bytes();
            assert!(!bytes.is_empty(), "job name");
            let mut i = 0;
            while i < bytes.len() {
                assert!(bytes[i].is_ascii_lowercase(), "job name must be [a-z]+");
                i += 1;
            }
            j += 1;
        }
        self.jobs = jobs;
        self
    }

    /// The login role of job `job` (`audit_retention`).
    #[must_use]
    pub fn job_role(&self, job: &str) -> String {
        format!("{}_{job}", self.service)
    }

    /// Every job role.
    #[must_use]
    pub fn job_roles(&self) -> Vec<String> {
        self.jobs.iter().map(|job| self.job_role(job)).collect()
    }

    /// Adds migrations of shared crates (e.g. the outbox), run after the service's
    /// own. They are written for any service: they find the role names from
    /// `current_user` (`<svc>_owner`), so their versions must not clash with the
    /// service's.
    #[must_use]
    pub const fn with_shared(mut self, shared: &'static [&'static EmbeddedMigrations]) -> Self {
        self.shared = shared;
        self
    }

    /// The service name (`tenant`).
    #[must_use]
    pub const fn service(&self) -> &'static str {
        self.service
    }

    /// The role that owns the tables and runs migrations (`tenant_owner`).
    #[must_use]
    pub fn owner_role(&self) -> String {
        format!("{}_owner", self.service)
    }

    /// The runtime role (`tenant_app`): `NOSUPERUSER NOBYPASSRLS`, DML grants only.
    #[must_use]
    pub fn app_role(&self) -> String {
        format!("{}_app", self.service)
    }

    /// The platform role (`tenant_platform`): a login role of its own, with its
    /// own pool and credentials, for platform operations (SUPER_ADMIN RPCs,
    /// internal cross-tenant lookups, the outbox relay). Its own policies
    /// (`TO <svc>_platform`) say what it may reach across tenants. The runtime
    /// role is *not* a member of it.
    #[must_use]
    pub fn platform_role(&self) -> String {
        format!("{}_platform", self.service)
    }

    /// Pool settings for this service (runtime and platform pools alike).
    #[must_use]
    pub fn pool_config(&self) -> crate::PoolConfig {
        crate::PoolConfig::default()
    }

    /// The service's database in a shared cluster (`bulkhead_tenant`).
    #[must_use]
    pub fn database(&self) -> String {
        format!("bulkhead_{}", self.service)
    }

    /// Creates the three roles if missing and (re)asserts their limits: the
    /// runtime and platform roles may log in, bypass nothing, and are members of
    /// no role at all (memberships found are revoked). Needs a connection with
    /// `CREATEROLE` (the cluster's admin).
    ///
    /// A cluster made before the platform split has a `<svc>_support` role that
    /// the runtime role could `SET ROLE` to: it is renamed to `<svc>_platform`
    /// (its policies and grants follow the role) and the membership revoked.
    ///
    /// # Errors
    /// [`DbError::Query`] when a statement fails.
    pub async fn ensure_roles(&self, admin: &mut AsyncPgConnection) -> Result<(), DbError> {
        let owner = self.owner_role();
        let app = self.app_role();
        let platform = self.platform_role();
        let legacy = format!("{}_support", self.service);
        let limits = "NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION";
        let job_roles = self.job_roles();
        let jobs: String = job_roles
            .iter()
            .map(|role| {
                format!(
                    "DO $$ BEGIN
                       IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                         CREATE ROLE {role} LOGIN NOINHERIT {limits};
                       END IF;
                     END $$;
                     ALTER ROLE {role} LOGIN NOINHERIT {limits};"
                )
            })
            .collect();
        let job_list: String = job_roles.iter().map(|r| format!(", '{r}'")).collect();
        // One advisory lock serialises concurrent test processes creating roles.
        admin
            .batch_execute(&format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock(7305241);
                 DO $$ BEGIN
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner}') THEN
                     CREATE ROLE {owner} LOGIN {limits};
                   END IF;
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}') THEN
                     CREATE ROLE {app} LOGIN NOINHERIT {limits};
                   END IF;
                   IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{legacy}')
                      AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{platform}') THEN
                     ALTER ROLE {legacy} RENAME TO {platform};
                   END IF;
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{platform}') THEN
                     CREATE ROLE {platform} LOGIN NOINHERIT {limits};
                   END IF;
                 END $$;
                 ALTER ROLE {app} LOGIN NOINHERIT {limits};
                 ALTER ROLE {platform} LOGIN NOINHERIT {limits};
                 {jobs}
                 DO $$ DECLARE m record; BEGIN
                   FOR m IN SELECT r.rolname AS role, u.rolname AS member
                              FROM pg_auth_members am
                              JOIN pg_roles r ON r.oid = am.roleid
                              JOIN pg_roles u ON u.oid = am.member
                             WHERE u.rolname IN ('{app}', '{platform}'{job_list})
                   LOOP
                     EXECUTE format('REVOKE %I FROM %I', m.role, m.member);
                   END LOOP;
                 END $$;
                 COMMIT;"
            ))
            .await?;
        Ok(())
    }

    /// Creates database `name` owned by the owner role (from `template` if given)
    /// and lets only the owner, the runtime role and the platform role connect.
    ///
    /// # Errors
    /// [`DbError::Query`] when a statement fails.
    pub async fn create_database(
        &self,
        admin: &mut AsyncPgConnection,
        name: &str,
        template: Option<&str>,
    ) -> Result<(), DbError> {
        check_identifier(name)?;
        let owner = self.owner_role();
        let app = self.app_role();
        let platform = self.platform_role();
        let template = match template {
            Some(t) => {
                check_identifier(t)?;
                format!(" TEMPLATE {t} STRATEGY FILE_COPY")
            }
            None => String::new(),
        };
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}{template}"))
            .await?;
        admin
            .batch_execute(&format!(
                "REVOKE ALL ON DATABASE {name} FROM PUBLIC;
                 GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {owner};
                 GRANT CONNECT ON DATABASE {name} TO {app}, {platform}{jobs};",
                jobs = self
                    .job_roles()
                    .iter()
                    .map(|r| format!(", {r}"))
                    .collect::<String>()
            ))
            .await?;
        Ok(())
    }

    /// Whether database `name` exists.
    ///
    /// # Errors
    /// [`DbError::Query`] when the lookup fails.
    pub async fn database_exists(
        admin: &mut AsyncPgConnection,
        name: &str,
    ) -> Result<bool, DbError> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let found: Count =
            diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
                .bind::<Text, _>(name)
                .get_result(admin)
                .await?;
        Ok(found.n > 0)
    }

    /// Runs the pending embedded migrations over `owner_url` (a connection as the
    /// owner role, so the tables are the owner's).
    ///
    /// # Errors
    /// [`DbError::Migration`] when a migration fails.
    pub async fn migrate(&self, owner_url: &str) -> Result<(), DbError> {
        let url = owner_url.to_owned();
        let sources: Vec<&'static EmbeddedMigrations> = std::iter::once(self.migrations)
            .chain(self.shared.iter().copied())
            .collect();
        tokio::task::spawn_blocking(move || {
            // Diesel's migration harness is synchronous; the wrapper drives the async
            // connection from this blocking thread (no libpq needed).
            let mut conn: AsyncConnectionWrapper<AsyncPgConnection> =
                diesel::Connection::establish(&url)?;
            for source in sources {
                conn.run_pending_migrations(StaticMigrations(source))
                    .map_err(|e| DbError::Migration(e.to_string()))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| DbError::Migration(e.to_string()))?
    }
}

pub(crate) fn check_identifier(name: &str) -> Result<(), DbError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DbError::UnsafeSchema(format!(
            "{name:?} is not a plain identifier"
        )))
    }
}

/// What the start-up check found: the roles and the tenant tables it verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsReport {
    /// The runtime role the pool connects as.
    pub role: String,
    /// The platform role the platform pool connects as, when there is one.
    pub platform_role: Option<String>,
    /// Every table with a `tenant_id` column, each verified protected.
    pub tenant_tables: Vec<String>,
}

#[derive(QueryableByName)]
struct RoleRow {
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Bool)]
    rolsuper: bool,
    #[diesel(sql_type = Bool)]
    rolbypassrls: bool,
    /// The roles it is a member of (`pg_auth_members`): each one a `SET ROLE` away.
    #[diesel(sql_type = Array<Text>)]
    member_of: Vec<String>,
    /// The tables with a `tenant_id` column it owns or acts as the owner of.
    #[diesel(sql_type = Array<Text>)]
    owns: Vec<String>,
}

#[derive(QueryableByName)]
struct TableRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    enabled: bool,
    #[diesel(sql_type = Bool)]
    forced: bool,
    #[diesel(sql_type = BigInt)]
    policies: i64,
}

/// Tables with a `tenant_id` column, in any schema but the system's.
const TENANT_TABLES: &str = "FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'p')
        AND EXISTS (SELECT 1 FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                       AND NOT a.attisdropped)";

/// The connected role, what it can become, and which tenant tables it owns.
async fn role_of(conn: &mut AsyncPgConnection) -> Result<RoleRow, DbError> {
    Ok(diesel::sql_query(format!(
        "SELECT current_user::text AS role, r.rolsuper, r.rolbypassrls,
                ARRAY(SELECT g.rolname::text FROM pg_auth_members m
                        JOIN pg_roles g ON g.oid = m.roleid
                       WHERE m.member = r.oid ORDER BY 1) AS member_of,
                ARRAY(SELECT c.oid::regclass::text {TENANT_TABLES}
                         AND pg_has_role(current_user, c.relowner, 'MEMBER')
                       ORDER BY 1) AS owns
           FROM pg_roles r WHERE r.rolname = current_user"
    ))
    .get_result(conn)
    .await?)
}

/// What makes `role` unsafe to serve requests with.
fn role_problems(role: &RoleRow, problems: &mut Vec<String>) {
    let name = &role.role;
    if role.rolsuper {
        problems.push(format!("role {name} is a superuser"));
    }
    if role.rolbypassrls {
        problems.push(format!("role {name} has BYPASSRLS"));
    }
    if !role.member_of.is_empty() {
        problems.push(format!(
            "role {name} is a member of {} (SET ROLE would leave its policies)",
            role.member_of.join(", ")
        ));
    }
    for table in &role.owns {
        problems.push(format!("role {name} owns table {table}"));
    }
}

#[derive(QueryableByName)]
struct PolicyRow {
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    public: bool,
    #[diesel(sql_type = Bool)]
    for_runtime_role: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    using: Option<String>,
}

impl Db {
    /// Checks that the pools' roles really cannot bypass row-level security:
    ///
    /// * they are the roles `schema` names (`<svc>_app` for the runtime pool,
    ///   `<svc>_platform` for the platform pool): URLs swapped or pointing at
    ///   another role are refused;
    /// * each is not a superuser, not `BYPASSRLS`, a member of no role at all
    ///   (`pg_auth_members`: no `SET ROLE` leads anywhere), and owns no tenant
    ///   table;
    /// * every table with a `tenant_id` column, in any schema, has RLS enabled
    ///   *and* forced and at least one policy;
    /// * no policy applies to every role (`PUBLIC`), and none lets the runtime
    ///   role see every row (`USING (true)`).
    ///
    /// A service refuses to start when this fails.
    ///
    /// # Errors
    /// [`DbError::UnsafeSchema`] listing every problem found.
    pub async fn verify_rls(&self, schema: &ServiceSchema) -> Result<RlsReport, DbError> {
        use diesel_async::AsyncConnection as _;
        let mut conn = self.system().await?;
        // One transaction: read in one snapshot, and on one server connection
        // behind a transaction-mode pooler (statements are prepared where
        // they run).
        let (role, tables, policies) = conn
            .pg()
            .transaction(async |pg| {
                    let role = role_of(pg).await?;
                    let tables: Vec<TableRow> = diesel::sql_query(format!(
                        "SELECT c.oid::regclass::text AS name,
                                c.relrowsecurity AS enabled,
                                c.relforcerowsecurity AS forced,
                                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
                           {TENANT_TABLES}
                          ORDER BY 1"
                    ))
                    .load(pg)
                    .await?;
                    let policies: Vec<PolicyRow> = diesel::sql_query(
                        "SELECT p.polrelid::regclass::text AS table, p.polname::text AS name,
                                0::oid = ANY (p.polroles) AS public,
                                (SELECT oid FROM pg_roles WHERE rolname = current_user) = ANY (p.polroles)
                                    AS for_runtime_role,
                                pg_get_expr(p.polqual, p.polrelid) AS using
                           FROM pg_policy p ORDER BY 1, 2",
                    )
                    .load(pg)
                    .await?;
                    Ok::<_, DbError>((role, tables, policies))
            })
            .await?;
        let platform = match self.platform_system().await? {
            Some(mut conn) => Some(conn.pg().transaction(async |pg| role_of(pg).await).await?),
            None => None,
        };

        let mut problems = Vec::new();
        if role.role != schema.app_role() {
            problems.push(format!(
                "the runtime pool connects as {}, not {}",
                role.role,
                schema.app_role()
            ));
        }
        role_problems(&role, &mut problems);
        if let Some(platform) = &platform {
            if platform.role != schema.platform_role() {
                problems.push(format!(
                    "the platform pool connects as {}, not {}",
                    platform.role,
                    schema.platform_role()
                ));
            }
            role_problems(platform, &mut problems);
        }
        for t in &tables {
            if !t.enabled {
                problems.push(format!("table {} has row-level security disabled", t.name));
            }
            if !t.forced {
                problems.push(format!(
                    "table {} does not FORCE row-level security",
                    t.name
                ));
            }
            if t.policies == 0 {
                problems.push(format!("table {} has no policy", t.name));
            }
        }
        for p in &policies {
            if p.public {
                problems.push(format!(
                    "policy {} on {} applies to every role (PUBLIC)",
                    p.name, p.table
                ));
            }
            if p.for_runtime_role && p.using.as_deref() == Some("true") {
                problems.push(format!(
                    "policy {} on {} lets {} see every row",
                    p.name, p.table, role.role
                ));
            }
        }
        if problems.is_empty() {
            Ok(RlsReport {
                role: role.role,
                platform_role: platform.map(|p| p.role),
                tenant_tables: tables.into_iter().map(|t| t.name).collect(),
            })
        } else {
            Err(DbError::UnsafeSchema(problems.join("; ")))
        }
    }
}

/// Opens one connection (for admin and migration work; services use [`Db`]).
///
/// # Errors
/// [`DbError::Connect`] when the connection fails.
pub async fn connect_once(url: &str) -> Result<AsyncPgConnection, DbError> {
    Ok(AsyncPgConnection::establish(url).await?)
}

//! The migrating side: each service's three roles, its database, its embedded
//! migrations, and the start-up check that neither the runtime role nor the
//! platform role can bypass row-level security or reach another role.
//!
//! Role and database names are built only from a service name checked at
//! construction (`[a-z][a-z0-9_]*`), never from request data.

use diesel::QueryableByName;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Text};
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
        self.secure_database(admin, name).await
    }

    /// Lets only the owner, the runtime role, the platform role and the job
    /// roles connect to database `name`, and only the owner create temporary
    /// objects (a temporary table is searched before the real one of the same
    /// name: on a pooled connection it would catch the next tenant's rows).
    /// Also run on a database someone else created, whose PUBLIC may still
    /// connect and create temporary objects.
    ///
    /// # Errors
    /// [`DbError::Query`] when a statement fails.
    pub async fn secure_database(
        &self,
        admin: &mut AsyncPgConnection,
        name: &str,
    ) -> Result<(), DbError> {
        check_identifier(name)?;
        let owner = self.owner_role();
        let app = self.app_role();
        let platform = self.platform_role();
        admin
            .batch_execute(&format!(
                "REVOKE ALL ON DATABASE {name} FROM PUBLIC;
                 REVOKE TEMPORARY ON DATABASE {name} FROM {app}, {platform}{jobs};
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

/// The roles a service's pools connect as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedRoles {
    /// The runtime pool's role.
    pub runtime: String,
    /// The platform pool's role, when there is one.
    pub platform: Option<String>,
}

#[derive(QueryableByName)]
struct CurrentUser {
    #[diesel(sql_type = Text)]
    role: String,
}

async fn current_user(conn: &mut AsyncPgConnection) -> Result<String, DbError> {
    let row: CurrentUser = diesel::sql_query("SELECT current_user::text AS role")
        .get_result(conn)
        .await?;
    Ok(row.role)
}

impl Db {
    /// The roles the pools really connect as (a URL may name any role): the
    /// start-up check compares them with the ones the schema names before
    /// checking those roles' rules (`bulkhead_validate::verify_runtime`).
    ///
    /// # Errors
    /// When a pool cannot be reached.
    pub async fn connected_roles(&self) -> Result<ConnectedRoles, DbError> {
        let runtime = current_user(self.system().await?.pg()).await?;
        let platform = match self.platform_system().await? {
            Some(mut conn) => Some(current_user(conn.pg()).await?),
            None => None,
        };
        Ok(ConnectedRoles { runtime, platform })
    }
}

/// Opens one connection (for admin and migration work; services use [`Db`]).
///
/// # Errors
/// [`DbError::Connect`] when the connection fails.
pub async fn connect_once(url: &str) -> Result<AsyncPgConnection, DbError> {
    Ok(AsyncPgConnection::establish(url).await?)
}

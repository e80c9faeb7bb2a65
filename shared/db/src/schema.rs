//! The migrating side: each service's two roles, its database, its embedded
//! migrations, and the start-up check that the runtime role cannot bypass
//! row-level security.
//!
//! Role and database names are built only from a service name checked at
//! construction (`[a-z][a-z0-9_]*`), never from request data.

use diesel::QueryableByName;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Bool, Text};
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
        }
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

    /// The role of platform transactions (`tenant_support`): `NOLOGIN`, not
    /// `BYPASSRLS`; the runtime role may `SET ROLE` to it, and its own policies
    /// (`TO <svc>_support`) say what it may reach across tenants.
    #[must_use]
    pub fn support_role(&self) -> String {
        format!("{}_support", self.service)
    }

    /// Pool settings for this service's runtime role.
    #[must_use]
    pub fn pool_config(&self) -> crate::PoolConfig {
        crate::PoolConfig {
            support_role: Some(self.support_role()),
            ..crate::PoolConfig::default()
        }
    }

    /// The service's database in a shared cluster (`bulkhead_tenant`).
    #[must_use]
    pub fn database(&self) -> String {
        format!("bulkhead_{}", self.service)
    }

    /// Creates the two roles if missing and (re)asserts the runtime role's limits.
    /// Needs a connection with `CREATEROLE` (the cluster's admin).
    ///
    /// # Errors
    /// [`DbError::Query`] when a statement fails.
    pub async fn ensure_roles(&self, admin: &mut AsyncPgConnection) -> Result<(), DbError> {
        let owner = self.owner_role();
        let app = self.app_role();
        let support = self.support_role();
        // One advisory lock serialises concurrent test processes creating roles.
        admin
            .batch_execute(&format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock(7305241);
                 DO $$ BEGIN
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner}') THEN
                     CREATE ROLE {owner} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
                   END IF;
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}') THEN
                     CREATE ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
                   END IF;
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{support}') THEN
                     CREATE ROLE {support} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
                   END IF;
                 END $$;
                 ALTER ROLE {app} NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
                 ALTER ROLE {support} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
                 GRANT {support} TO {app};
                 COMMIT;"
            ))
            .await?;
        Ok(())
    }

    /// Creates database `name` owned by the owner role (from `template` if given)
    /// and lets only the runtime role and the owner connect.
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
                 GRANT CONNECT ON DATABASE {name} TO {app};"
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

/// What the start-up check found: the tenant tables it verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsReport {
    /// The runtime role the pool connects as.
    pub role: String,
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
}

#[derive(QueryableByName)]
struct TableRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    enabled: bool,
    #[diesel(sql_type = Bool)]
    forced: bool,
    #[diesel(sql_type = Bool)]
    acts_as_owner: bool,
    #[diesel(sql_type = BigInt)]
    policies: i64,
}

impl Db {
    /// Checks that the pool's role really cannot bypass row-level security: not a
    /// superuser, not `BYPASSRLS`, not (a member of) any tenant table's owner, and
    /// every table with a `tenant_id` column, in any schema, has RLS enabled *and*
    /// forced and at least one policy. A service refuses to start when this fails.
    ///
    /// # Errors
    /// [`DbError::UnsafeSchema`] listing every problem found.
    pub async fn verify_rls(&self) -> Result<RlsReport, DbError> {
        let mut conn = self.system().await?;
        // The runtime role and every role it can SET ROLE to (its support role).
        let role: RoleRow = diesel::sql_query(
            "SELECT current_user::text AS role,
                    bool_or(rolsuper) AS rolsuper, bool_or(rolbypassrls) AS rolbypassrls
               FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER')",
        )
        .get_result(conn.pg())
        .await?;
        let tables: Vec<TableRow> = diesel::sql_query(
            "SELECT c.oid::regclass::text AS name,
                    c.relrowsecurity AS enabled,
                    c.relforcerowsecurity AS forced,
                    pg_has_role(current_user, c.relowner, 'MEMBER') AS acts_as_owner,
                    (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'p')
                AND EXISTS (SELECT 1 FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                               AND NOT a.attisdropped)
              ORDER BY 1",
        )
        .load(conn.pg())
        .await?;

        let mut problems = Vec::new();
        if role.rolsuper {
            problems.push(format!("role {} is (or can become) a superuser", role.role));
        }
        if role.rolbypassrls {
            problems.push(format!(
                "role {} has (or can become a role with) BYPASSRLS",
                role.role
            ));
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
            if t.acts_as_owner {
                problems.push(format!("role {} owns table {}", role.role, t.name));
            }
            if t.policies == 0 {
                problems.push(format!("table {} has no policy", t.name));
            }
        }
        if problems.is_empty() {
            Ok(RlsReport {
                role: role.role,
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

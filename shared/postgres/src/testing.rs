//! A real Postgres for every test: one private cluster per test process, one
//! migrated template database per service schema, and a fresh copy of it for each
//! test (`CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`, ~0.1 s).
//!
//! With zero configuration the cluster is started from the system's binaries and
//! removed when the test process exits (even if it is killed). Set
//! `BULKHEAD_TEST_DATABASE_URL` to a superuser URL to use an existing server instead.
//! No Postgres at all is a loud failure that says what to install: never a skip.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use bulkhead_db::schema::{ServiceSchema, connect_once};
use bulkhead_db::{Db, PoolConfig};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use crate::{Cluster, ClusterOptions};

/// The environment variable naming an existing server's superuser URL.
pub const DATABASE_URL_ENV: &str = "BULKHEAD_TEST_DATABASE_URL";

/// The environment variable naming the folder test clusters are made in
/// (default: the system's temporary folder).
pub const CLUSTER_DIR_ENV: &str = "BULKHEAD_TEST_CLUSTER_DIR";

enum Server {
    Private(Cluster),
    External(String),
}

impl Server {
    fn url(&self, role: &str, database: &str) -> String {
        match self {
            Self::Private(cluster) => cluster.url(role, database),
            // External servers need passwords; test roles get their name as one.
            Self::External(admin) => replace_user_and_database(admin, Some((role, role)), database),
        }
    }

    fn admin_url(&self, database: &str) -> String {
        match self {
            Self::Private(cluster) => cluster.admin_url(database),
            Self::External(admin) => replace_user_and_database(admin, None, database),
        }
    }
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            return Ok(Server::External(url));
        }
        // CI names a folder of its own (so it can stop exactly the clusters of its
        // run, by their pid files); otherwise the system's temporary folder.
        let parent = std::env::var_os(CLUSTER_DIR_ENV)
            .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
        // Short: the server's Unix socket path must fit in ~107 bytes.
        let root = parent.join(format!(
            "bulkhead-test-pg-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let options = ClusterOptions {
            ephemeral: true,
            max_connections: 300,
        };
        let cluster = Cluster::start(&root, &options).map_err(|e| e.to_string())?;
        cluster
            .remove_when_process_exits(std::process::id())
            .map_err(|e| e.to_string())?;
        Ok(Server::Private(cluster))
    });
    match server {
        Ok(server) => server,
        Err(why) => panic!("tests need PostgreSQL and could not get it: {why}"),
    }
}

/// One test's own database, migrated like the service's.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// The database's name.
    pub name: String,
    /// URL as the runtime role `<svc>_app`: what the service connects with.
    pub app_url: String,
    /// URL as the platform role `<svc>_platform`: the service's platform pool.
    pub platform_url: String,
    /// URL as the owner role `<svc>_owner`.
    pub owner_url: String,
    /// URLs as the job roles `<svc>_<job>`, by role name.
    pub job_urls: std::collections::BTreeMap<String, String>,
    /// URL as the cluster's superuser.
    pub admin_url: String,
}

impl TestDatabase {
    /// The service's pools: the runtime role's and the platform role's.
    ///
    /// # Panics
    /// When a pool cannot connect: the test cannot go on.
    pub async fn app_db(&self, max_size: u32) -> Db {
        let config = PoolConfig {
            max_size,
            ..PoolConfig::default()
        };
        self.runtime_only_db(max_size)
            .await
            .with_platform(&self.platform_url, &config)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test database as the platform role: {e}"))
    }

    /// A pool as the runtime role only (no platform transactions).
    ///
    /// # Panics
    /// When the pool cannot connect.
    pub async fn runtime_only_db(&self, max_size: u32) -> Db {
        let config = PoolConfig {
            max_size,
            ..PoolConfig::default()
        };
        Db::connect(&self.app_url, &config)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test database as the app role: {e}"))
    }

    /// One connection as the runtime role.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn app_connection(&self) -> AsyncPgConnection {
        connect(&self.app_url).await
    }

    /// One connection as the owner role.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn owner_connection(&self) -> AsyncPgConnection {
        connect(&self.owner_url).await
    }

    /// One connection as the superuser.
    ///
    /// # Panics
    /// When the connection fails.
    pub async fn admin_connection(&self) -> AsyncPgConnection {
        connect(&self.admin_url).await
    }
}

async fn connect(url: &str) -> AsyncPgConnection {
    connect_once(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"))
}

/// A fresh database for one test, with `schema`'s roles and migrations.
///
/// # Panics
/// When no Postgres can be had (the message says what to install) or the schema
/// cannot be set up.
pub async fn test_database(schema: &ServiceSchema) -> TestDatabase {
    let server = server();
    let template = template(server, schema).await;
    let name = format!(
        "t_{}_{}",
        schema.service(),
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    let mut admin = connect(&server.admin_url("postgres")).await;
    schema
        .create_database(&mut admin, &name, Some(&template))
        .await
        .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
    TestDatabase {
        app_url: server.url(&schema.app_role(), &name),
        platform_url: server.url(&schema.platform_role(), &name),
        owner_url: server.url(&schema.owner_role(), &name),
        job_urls: schema
            .job_roles()
            .into_iter()
            .map(|role| {
                let url = server.url(&role, &name);
                (role, url)
            })
            .collect(),
        admin_url: server.admin_url(&name),
        name,
    }
}

/// The migrated template of `schema`, made once per test process.
async fn template(server: &Server, schema: &ServiceSchema) -> String {
    static TEMPLATES: LazyLock<tokio::sync::Mutex<HashMap<&'static str, String>>> =
        LazyLock::new(Default::default);
    let mut templates = TEMPLATES.lock().await;
    if let Some(name) = templates.get(schema.service()) {
        return name.clone();
    }
    let name = format!(
        "tpl_{}_{}_{}",
        schema.service(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut admin = connect(&server.admin_url("postgres")).await;
    let setup = async {
        schema.ensure_roles(&mut admin).await?;
        if matches!(server, Server::External(_)) {
            for role in [
                schema.owner_role(),
                schema.app_role(),
                schema.platform_role(),
            ]
            .into_iter()
            .chain(schema.job_roles())
            {
                admin
                    .batch_execute(&format!("ALTER ROLE {role} PASSWORD '{role}'"))
                    .await?;
            }
        }
        schema.create_database(&mut admin, &name, None).await?;
        schema
            .migrate(&server.url(&schema.owner_role(), &name))
            .await
    };
    setup
        .await
        .unwrap_or_else(|e| panic!("preparing the {} schema: {e}", schema.service()));
    templates.insert(schema.service(), name.clone());
    name
}

/// `postgres://user:pass@host/db?x` with another user (and password) and database.
fn replace_user_and_database(url: &str, user: Option<(&str, &str)>, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgresql", url));
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = authority_and_path
        .split_once('/')
        .map_or(authority_and_path, |(a, _)| a);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let userinfo = match user {
        Some((name, password)) => format!("{name}:{password}@"),
        None => userinfo.map(|u| format!("{u}@")).unwrap_or_default(),
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{userinfo}{host}/{database}{query}")
}

#[cfg(test)]
mod tests {
    use super::replace_user_and_database;

    #[test]
    fn urls_get_another_user_and_database() {
        assert_eq!(
            replace_user_and_database(
                "postgres://root:secret@db.local:5433/postgres?sslmode=disable",
                Some(("x_app", "x_app")),
                "t1"
            ),
            "postgres://x_app:x_app@db.local:5433/t1?sslmode=disable"
        );
        assert_eq!(
            replace_user_and_database("postgres://root@h/postgres", None, "t2"),
            "postgres://root@h/t2"
        );
    }
}

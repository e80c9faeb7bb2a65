//! The connection pool and the system path.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};

use diesel_async::AsyncConnection as _;

use crate::DbError;
use crate::observe::StatementObserver;

/// Pool settings, with defaults sized for a 2-core service.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most connections open at once.
    pub max_size: u32,
    /// How long a caller waits for a connection before `UNAVAILABLE`.
    pub connection_timeout: Duration,
    /// Whether each connection keeps its prepared statements (named, one
    /// prepare per statement text). Off behind a pooler in transaction mode
    /// that does not track them (PgBouncer before 1.21): every statement is
    /// then prepared where it runs, inside its transaction, and closed after.
    pub statement_cache: bool,
    /// How long a statement waits for a lock (a row another transaction is
    /// changing, say) before it fails; `Db` errors then say
    /// [`DbError::is_lock_timeout`], which services answer `UNAVAILABLE`.
    /// Without it a call blocked behind a stuck transaction would wait for
    /// its caller's deadline, and its server session, whose client dropped
    /// it, would go on waiting with the transaction's other locks held.
    /// Whole milliseconds; zero (or less than 1 ms) waits for ever, as in
    /// Postgres.
    pub lock_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_size: 16,
            connection_timeout: Duration::from_secs(5),
            statement_cache: true,
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// A service's connections: a pool as its runtime role `<svc>_app` for request
/// handlers, and optionally a second pool as its platform role `<svc>_platform`
/// (its own login and credentials) for [`Db::platform_tx`]. The runtime role is a
/// member of no other role, so nothing it runs can `SET ROLE` its way across
/// tenants; only code holding this type and calling `platform_tx` can.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: Pool<AsyncPgConnection>,
    pub(crate) platform: Option<Pool<AsyncPgConnection>>,
    /// Whether [`Db::tenant_read_rows`] sends its statement and `COMMIT` in
    /// one flight: only with the statement cache (without it, every
    /// statement is prepared in a round trip of its own first, and the
    /// `COMMIT` would always overtake it).
    pub(crate) one_flight: bool,
    /// One-flight reads asked again the ordinary way (nothing found, another
    /// tenant's rows, an error).
    pub(crate) one_flight_retries: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("state", &self.pool.state())
            .field("platform", &self.platform.as_ref().map(Pool::state))
            .finish()
    }
}

/// Opens a pool to `url` and checks that one connection can be made.
async fn open(url: &str, config: &PoolConfig) -> Result<Pool<AsyncPgConnection>, DbError> {
    let mut manager_config = ManagerConfig::default();
    // The default check costs a `SELECT 1` round trip per checkout; broken
    // connections are still detected and dropped (../shared/STACK.md).
    manager_config.recycling_method = RecyclingMethod::Fast;
    // Spans and timings per statement (observe.rs).
    let statement_cache = config.statement_cache;
    // A session setting, made once per connection: it costs no statement
    // anything (the timer starts only when a lock is waited for). Behind a
    // pooler in transaction mode it does not follow the client: set it on
    // the database there (`ALTER DATABASE … SET lock_timeout`).
    let set_lock_timeout = format!("SET lock_timeout = {}", config.lock_timeout.as_millis());
    manager_config.custom_setup = Box::new(move |url| {
        let set_lock_timeout = set_lock_timeout.clone();
        Box::pin(async move {
            use diesel_async::SimpleAsyncConnection as _;
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.batch_execute(&set_lock_timeout)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(StatementObserver::default());
            if !statement_cache {
                conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
            }
            Ok(conn)
        })
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, manager_config);
    let pool = Pool::builder()
        .max_size(config.max_size)
        .connection_timeout(config.connection_timeout)
        .build(manager)
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    drop(pool.get().await?);
    Ok(pool)
}

/// The settings row-level security reads, set to unset (`''`, as the policies
/// read it; not `RESET`, which would restore a role's or database's default),
/// in one round trip of the simple protocol. Behind a pooler in transaction
/// mode, a session-level setting can still reach another client's server
/// connection: only the scoped transactions, which `SET LOCAL` both
/// settings, are safe there (and they are all that reads tenant tables).
const RESET_SESSION: &str = "SET app.tenant_id = ''; SET app.user_id = ''";

impl Db {
    /// Opens the runtime pool to `url` (which names the `<svc>_app` role) and
    /// checks that one connection can be made. Platform transactions need
    /// [`Db::with_platform`] as well.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when no connection can be opened.
    pub async fn connect(url: &str, config: &PoolConfig) -> Result<Self, DbError> {
        Ok(Self {
            pool: open(url, config).await?,
            platform: None,
            one_flight: config.statement_cache,
            one_flight_retries: std::sync::Arc::default(),
        })
    }

    /// Adds the platform pool, opened to `url` (which names the `<svc>_platform`
    /// role), for [`Db::platform_tx`].
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when no connection can be opened.
    pub async fn with_platform(mut self, url: &str, config: &PoolConfig) -> Result<Self, DbError> {
        self.platform = Some(open(url, config).await?);
        Ok(self)
    }

    /// Whether the database answers: a `SELECT 1` as the runtime role, within
    /// `within` (a pooled connection the server dropped is found broken here,
    /// and replaced on the next try).
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when no answer comes in time; the query's
    /// error when it fails.
    pub async fn ping(&self, within: Duration) -> Result<(), DbError> {
        use diesel_async::SimpleAsyncConnection as _;
        let ping = async {
            let mut conn = self.system().await?;
            // The simple protocol: nothing prepared (so it works through any
            // pooler), one round trip.
            conn.pg().batch_execute("SELECT 1").await?;
            Ok::<_, DbError>(())
        };
        match tokio::time::timeout(within, ping).await {
            Ok(result) => result,
            Err(_) => Err(DbError::Unavailable(format!("no answer within {within:?}"))),
        }
    }

    /// A connection as the runtime role for work that is not about one tenant:
    /// global tables, health checks, start-up verification. Row-level security
    /// still applies: with no tenant set, tenant tables show no rows and refuse
    /// every insert.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when no connection comes in time.
    /// Any role may `SET` a custom setting for its whole session, so what
    /// the connection's last user set (`app.tenant_id` outside a transaction,
    /// say) is cleared before it is handed out: it never reaches the next user.
    /// Scoped transactions need no reset (they `SET LOCAL` both settings).
    pub async fn system(&self) -> Result<SystemConn, DbError> {
        use diesel_async::SimpleAsyncConnection as _;
        let mut conn = checkout(&self.pool).await?;
        conn.batch_execute(RESET_SESSION).await?;
        Ok(SystemConn { conn })
    }

    /// A connection as the platform role, for the start-up check of that role.
    pub(crate) async fn platform_system(&self) -> Result<Option<SystemConn>, DbError> {
        use diesel_async::SimpleAsyncConnection as _;
        match &self.platform {
            Some(pool) => {
                let mut conn = checkout(pool).await?;
                conn.batch_execute(RESET_SESSION).await?;
                Ok(Some(SystemConn { conn }))
            }
            None => Ok(None),
        }
    }

    /// How many one-flight reads ([`Db::tenant_read_rows`]) were asked again
    /// the ordinary way (nothing found, another tenant's rows, an error),
    /// since the pool opened.
    #[must_use]
    pub fn one_flight_retries(&self) -> u64 {
        self.one_flight_retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections open and idle, for metrics.
    #[must_use]
    pub fn state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }
}

/// A connection of `pool` for one user, with an observer of its own (see
/// observe.rs: a statement an earlier user left running never finishes, and
/// must not shift this user's spans and timings).
pub(crate) async fn checkout(
    pool: &Pool<AsyncPgConnection>,
) -> Result<PooledConnection<'static, AsyncPgConnection>, DbError> {
    let mut conn = pool.get_owned().await?;
    observe_afresh(&mut conn);
    Ok(conn)
}

/// Gives `conn` a new statement observer: statements still running on the
/// old one (their futures dropped, they never finish) are let go, their
/// spans closed as unfinished.
pub(crate) fn observe_afresh(conn: &mut AsyncPgConnection) {
    conn.set_instrumentation(StatementObserver::default());
}

/// A pooled connection on the system path (see [`Db::system`]).
pub struct SystemConn {
    conn: PooledConnection<'static, AsyncPgConnection>,
}

impl std::fmt::Debug for SystemConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemConn")
    }
}

impl SystemConn {
    /// The connection, for diesel queries.
    pub fn pg(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }
}

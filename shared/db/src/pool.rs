//! The connection pool and the system path.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};

use crate::DbError;

/// Pool settings, with defaults sized for a 2-core service.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most connections open at once.
    pub max_size: u32,
    /// How long a caller waits for a connection before `UNAVAILABLE`.
    pub connection_timeout: Duration,
    /// The service's `<svc>_support` role, for [`Db::platform_tx`]; `None` disables
    /// platform transactions.
    pub support_role: Option<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_size: 16,
            connection_timeout: Duration::from_secs(5),
            support_role: None,
        }
    }
}

/// A pool of connections opened as one service's runtime role.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: Pool<AsyncPgConnection>,
    pub(crate) support_role: Option<String>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("state", &self.pool.state())
            .finish()
    }
}

impl Db {
    /// Opens a pool to `url` (which names the `<svc>_app` role) and checks that one
    /// connection can be made.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when no connection can be opened.
    pub async fn connect(url: &str, config: &PoolConfig) -> Result<Self, DbError> {
        let mut manager_config = ManagerConfig::default();
        // The default check costs a `SELECT 1` round trip per checkout; broken
        // connections are still detected and dropped (../shared/STACK.md).
        manager_config.recycling_method = RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, manager_config);
        let pool = Pool::builder()
            .max_size(config.max_size)
            .connection_timeout(config.connection_timeout)
            .build(manager)
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        drop(pool.get().await?);
        if let Some(role) = &config.support_role {
            crate::schema::check_identifier(role)?;
        }
        Ok(Self {
            pool,
            support_role: config.support_role.clone(),
        })
    }

    /// A connection for work that is not about one tenant: global tables, health
    /// checks, start-up verification. Row-level security still applies: with no
    /// tenant set, tenant tables show no rows and refuse every insert.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when no connection comes in time.
    pub async fn system(&self) -> Result<SystemConn, DbError> {
        Ok(SystemConn {
            conn: self.pool.get_owned().await?,
        })
    }

    /// Connections open and idle, for metrics.
    #[must_use]
    pub fn state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }
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

//! Tenant-scoped transactions: the only way to reach tenant tables.
//!
//! A scoped transaction is `BEGIN; SET LOCAL app.tenant_id = '<uuid>'`, the work,
//! then `COMMIT`. The tenant is set by `SET LOCAL` (transaction-local, and what Citus
//! forwards to its workers) from an already-parsed [`TenantId`], never from client
//! text, so the statement cannot be injected into.
//!
//! Round trips are the cost of the boundary (../shared/STACK.md: four of them make a
//! point select ~3.5x slower). So the `BEGIN; SET LOCAL` batch is *pipelined* with
//! the work: it is queued on the connection first, and the work's first statement
//! follows in the same flight without waiting for its answer. Postgres runs them in
//! order, so the setting is in force before the first statement runs. For reads,
//! [`Db::tenant_read`] also takes the `COMMIT` off the caller's path: the rows are
//! final once read, and the connection goes back to the pool only after the
//! `COMMIT` has been answered.
//!
//! [`Db::tenant_read_rows`] goes one step further for a single `SELECT` of rows:
//! `BEGIN`, the statement and `COMMIT` all leave in one flight (one wait
//! instead of two; at saturation it is the wait, not the statement count,
//! that costs: see `cargo bench -p bulkhead-e2e --bench boundary`). The order
//! usually holds, but nothing in diesel-async guarantees it: a statement not
//! yet prepared on the connection is prepared in a round trip of its own,
//! and the `COMMIT` overtakes it (so may a busy task's yield). A statement so
//! overtaken runs after the transaction, not read-only, with whatever the
//! server session holds (no tenant and no user, unless a bug set one; behind
//! a transaction pooler, another client's). So the answer proves itself: it is kept only when it
//! has rows and every one of them carries the tenant's id ([`TenantRow`]);
//! anything else (no row, another tenant's row, an error) is asked again the
//! ordinary way ([`Db::tenant_read`]).
//!
//! While a scoped transaction is open its connection is marked broken in diesel's
//! transaction manager; only a clean `COMMIT`/`ROLLBACK` clears the mark. If the
//! caller's future is dropped midway, the pool discards the connection instead of
//! handing the open transaction (and its tenant) to the next caller.

use diesel::connection::TransactionManagerStatus;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, SimpleAsyncConnection, TransactionManager,
};

use bulkhead_context::{TenantId, UserId};

use crate::pool::{checkout, observe_afresh};
use crate::{Db, DbError};

/// A connection inside a transaction scoped to one tenant.
///
/// Repository functions for tenant tables take this type (never a bare
/// connection), so they cannot run outside a tenant scope. It is `Copy`: a
/// repository function may issue several statements at once and they pipeline.
#[derive(Clone, Copy)]
pub struct TenantConn<'c> {
    conn: &'c AsyncPgConnection,
    tenant_id: TenantId,
}

impl std::fmt::Debug for TenantConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConn")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl<'c> TenantConn<'c> {
    /// The tenant this transaction is scoped to. Queries still say
    /// `WHERE tenant_id = $1` with it: the planner uses the index, Citus routes to
    /// one shard, and it is a second lock on the door.
    #[must_use]
    pub const fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The connection, for diesel queries: `query.load(&mut tx.pg())`.
    #[must_use]
    pub const fn pg(&self) -> &'c AsyncPgConnection {
        self.conn
    }
}

/// A connection inside a *platform* transaction: opened as the service's
/// `<svc>_platform` login role (its own pool and credentials), whose own policies
/// span tenants (never an `OR` in the tenant policy). For SUPER_ADMIN operations,
/// internal cross-tenant lookups and the outbox relay; handlers reach it only
/// after the policy table allowed the caller, and audit what they do with it.
#[derive(Clone, Copy)]
pub struct PlatformConn<'c> {
    conn: &'c AsyncPgConnection,
}

impl std::fmt::Debug for PlatformConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformConn")
    }
}

impl<'c> PlatformConn<'c> {
    /// The connection, for diesel queries: `query.load(&mut tx.pg())`.
    #[must_use]
    pub const fn pg(&self) -> &'c AsyncPgConnection {
        self.conn
    }
}

/// A connection inside a transaction scoped to one *user* (`app.user_id`), for
/// tables protected per user rather than per tenant (Auth's sessions).
#[derive(Clone, Copy)]
pub struct UserConn<'c> {
    conn: &'c AsyncPgConnection,
    user_id: UserId,
}

impl std::fmt::Debug for UserConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConn")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl<'c> UserConn<'c> {
    /// The user this transaction is scoped to.
    #[must_use]
    pub const fn user_id(&self) -> UserId {
        self.user_id
    }

    /// The connection, for diesel queries: `query.load(&mut tx.pg())`.
    #[must_use]
    pub const fn pg(&self) -> &'c AsyncPgConnection {
        self.conn
    }
}

/// A row of a tenant table, as a one-flight read ([`Db::tenant_read_rows`])
/// answers it: it names the tenant it belongs to.
///
/// The contract: `tenant_id` is the row's own `tenant_id` column as read
/// (never a value bound by the query, such as the scope's tenant), of a table
/// whose only runtime-role policy is the tenant policy (not a per-user one:
/// a statement the `COMMIT` overtook runs with the session's `app.user_id`
/// too). The id is what proves the answer came from inside the scope.
pub trait TenantRow {
    /// The tenant the row belongs to (its `tenant_id` column).
    fn tenant_id(&self) -> uuid::Uuid;
}

mod sealed {
    pub trait Sealed {}
    impl<R: super::TenantRow> Sealed for Vec<R> {}
    impl<R: super::TenantRow> Sealed for Option<R> {}
}

/// What a one-flight read answers: a `Vec` or an `Option` of
/// [`TenantRow`]s (sealed: the check in [`Db::tenant_read_rows`] is the
/// only one).
pub trait TenantRows: sealed::Sealed {
    /// The rows' tenants, one per row.
    fn tenants(&self) -> impl Iterator<Item = uuid::Uuid>;
}

impl<R: TenantRow> TenantRows for Vec<R> {
    fn tenants(&self) -> impl Iterator<Item = uuid::Uuid> {
        self.iter().map(TenantRow::tenant_id)
    }
}

impl<R: TenantRow> TenantRows for Option<R> {
    fn tenants(&self) -> impl Iterator<Item = uuid::Uuid> {
        self.iter().map(TenantRow::tenant_id)
    }
}

/// Whether `rows` has rows, every one of them `tenant`'s.
fn all_of(rows: &impl TenantRows, tenant: TenantId) -> bool {
    let mut tenants = rows.tenants().peekable();
    tenants.peek().is_some() && tenants.all(|t| t == *tenant.as_uuid())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadWrite,
    ReadOnly,
}

impl Db {
    /// Runs `work` in a read-write transaction scoped to `tenant`, commits when it
    /// returns `Ok`, rolls back when it returns `Err`.
    ///
    /// # Errors
    /// `work`'s own error, or a [`DbError`] (converted into `E`) when no connection
    /// comes, the transaction cannot begin, or the commit fails.
    pub async fn tenant_tx<T, E>(
        &self,
        tenant: TenantId,
        work: impl AsyncFnOnce(TenantConn<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        self.tenant_scoped(tenant, Mode::ReadWrite, work).await
    }

    /// Runs `work` in a `READ ONLY` transaction scoped to `tenant`. The result is
    /// returned as soon as `work` finishes; the `COMMIT` completes in the background
    /// before the connection is reused.
    ///
    /// # Errors
    /// As [`Db::tenant_tx`]; a write inside `work` fails (read-only transaction).
    pub async fn tenant_read<T, E>(
        &self,
        tenant: TenantId,
        work: impl AsyncFnOnce(TenantConn<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        self.tenant_scoped(tenant, Mode::ReadOnly, work).await
    }

    /// As [`Db::tenant_read`], for `work` that is one `SELECT` of rows of
    /// tenant tables: `BEGIN`, the statement and `COMMIT` go out in one
    /// flight (see the module's notes). The answer is kept only when it has
    /// rows, all of them `tenant`'s; otherwise (nothing found, a row of
    /// another tenant, an error) it is asked again through [`Db::tenant_read`]
    /// (a clone of `work` runs first), so "not found" costs the ordinary read
    /// as well. A second statement in `work` would run after the `COMMIT`
    /// and find nothing: use [`Db::tenant_read`] for more than one.
    ///
    /// # Errors
    /// As [`Db::tenant_read`].
    pub async fn tenant_read_rows<T, E>(
        &self,
        tenant: TenantId,
        work: impl AsyncFnOnce(TenantConn<'_>) -> Result<T, E> + Clone,
    ) -> Result<T, E>
    where
        T: TenantRows,
        E: From<DbError>,
    {
        if self.one_flight {
            if let Some(answer) = one_flight(&self.pool, tenant, work.clone()).await {
                return answer;
            }
            self.one_flight_retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("db_one_flight_retries_total").increment(1);
        }
        self.tenant_read(tenant, work).await
    }

    async fn tenant_scoped<T, E>(
        &self,
        tenant: TenantId,
        mode: Mode,
        work: impl AsyncFnOnce(TenantConn<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        self.scoped(tenant_begin(tenant, mode), mode, async |conn| {
            work(TenantConn {
                conn,
                tenant_id: tenant,
            })
            .await
        })
        .await
    }

    /// Runs `work` in a read-write transaction scoped to `user`
    /// (`SET LOCAL app.user_id`), for per-user tables.
    ///
    /// # Errors
    /// As [`Db::tenant_tx`].
    pub async fn user_tx<T, E>(
        &self,
        user: UserId,
        work: impl AsyncFnOnce(UserConn<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        // Like the tenant id: a parsed `Uuid`, hex digits and dashes only.
        let begin = format!(
            "BEGIN; SET LOCAL app.user_id = '{}'; SET LOCAL app.tenant_id = ''",
            user.as_uuid().hyphenated()
        );
        self.scoped(begin, Mode::ReadWrite, async |conn| {
            work(UserConn {
                conn,
                user_id: user,
            })
            .await
        })
        .await
    }

    /// Runs `work` in a read-write platform transaction (see [`PlatformConn`]), on
    /// the platform pool.
    ///
    /// # Errors
    /// As [`Db::tenant_tx`]; [`DbError::UnsafeSchema`] when the pool was opened
    /// without a platform pool ([`Db::with_platform`]).
    pub async fn platform_tx<T, E>(
        &self,
        work: impl AsyncFnOnce(PlatformConn<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let pool = self.platform.as_ref().ok_or_else(|| {
            DbError::UnsafeSchema("no platform pool: platform transactions are off".into())
        })?;
        scoped(
            pool,
            "BEGIN; SET LOCAL app.tenant_id = ''; SET LOCAL app.user_id = ''".to_owned(),
            Mode::ReadWrite,
            async |conn| work(PlatformConn { conn }).await,
        )
        .await
    }

    async fn scoped<T, E>(
        &self,
        begin: String,
        mode: Mode,
        work: impl AsyncFnOnce(&AsyncPgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        scoped(&self.pool, begin, mode, work).await
    }
}

/// Runs `work` in a transaction opened by `begin` on a connection of `pool`.
async fn scoped<T, E>(
    pool: &Pool<AsyncPgConnection>,
    begin: String,
    mode: Mode,
    work: impl AsyncFnOnce(&AsyncPgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbError>,
{
    let mut conn = checkout(pool).await?;
    mark_in_transaction(&mut conn);

    let shared: &AsyncPgConnection = &conn;
    let begin = async move {
        let mut shared = shared;
        shared.batch_execute(&begin).await
    };
    // `join` polls `begin` first, so its batch is queued on the connection before
    // any statement of `work`; both go out in one flight.
    let (began, worked) = futures_util::future::join(begin, work(shared)).await;
    if let Err(err) = began {
        // The connection's state is unknown: it stays marked and is discarded.
        return Err(DbError::from(err).into());
    }
    match (worked, mode) {
        (Ok(value), Mode::ReadOnly) => {
            tokio::spawn(finish(conn, "COMMIT"));
            Ok(value)
        }
        (Ok(value), Mode::ReadWrite) => {
            finish(conn, "COMMIT").await.map_err(DbError::from)?;
            Ok(value)
        }
        (Err(err), _) => {
            // `work` may have dropped statements of its own unfinished (a
            // `try_join` whose other half failed): they are let go, so the
            // ROLLBACK's span and timing are its own.
            observe_afresh(&mut conn);
            // A failed rollback leaves the connection marked: it is discarded.
            let _ = finish(conn, "ROLLBACK").await;
            Err(err)
        }
    }
}

/// One flight of `BEGIN READ ONLY; SET LOCAL …`, `work`'s statement and
/// `COMMIT`, queued in that order before any answer (`join3` polls them in
/// order; each queues its messages on its first poll, the statement only
/// when it is already prepared and its task need not yield). `None` unless
/// the answer has rows, all of them `tenant`'s.
async fn one_flight<T, E>(
    pool: &Pool<AsyncPgConnection>,
    tenant: TenantId,
    work: impl AsyncFnOnce(TenantConn<'_>) -> Result<T, E>,
) -> Option<Result<T, E>>
where
    T: TenantRows,
    E: From<DbError>,
{
    let mut conn = match checkout(pool).await {
        Ok(conn) => conn,
        Err(err) => return Some(Err(err.into())),
    };
    mark_in_transaction(&mut conn);
    let shared: &AsyncPgConnection = &conn;
    let begin = tenant_begin(tenant, Mode::ReadOnly);
    let (began, worked, ended) = futures_util::future::join3(
        async move {
            let mut shared = shared;
            shared.batch_execute(&begin).await
        },
        work(TenantConn {
            conn: shared,
            tenant_id: tenant,
        }),
        async move {
            let mut shared = shared;
            shared.batch_execute("COMMIT").await
        },
    )
    .await;
    if let Err(err) = began.and(ended) {
        // The connection's state is unknown: it stays marked and is discarded.
        return Some(Err(DbError::from(err).into()));
    }
    // All three answered: the COMMIT ended the transaction (a statement it
    // overtook ran after it, in a transaction of its own).
    clear_in_transaction(&mut conn);
    match worked {
        Ok(rows) if all_of(&rows, tenant) => Some(Ok(rows)),
        Ok(rows) => {
            if rows.tenants().any(|t| t != *tenant.as_uuid()) {
                tracing::warn!(
                    security = true,
                    event = "one_flight_foreign_rows",
                    tenant_id = %tenant,
                    "a one-flight read's statement ran outside its transaction and saw another tenant's rows: discarded, read again"
                );
            }
            None
        }
        Err(_) => None,
    }
}

/// `BEGIN; SET LOCAL app.tenant_id = '<uuid>'`. A `Uuid`'s hyphenated form is hex
/// digits and dashes only: nothing to escape, nothing to inject.
///
/// Every scoped transaction sets both settings, the one it does not use to
/// none: a session-level `SET` on the server connection (SQL run outside any
/// scoped transaction, or another client of a transaction-mode pooler) never
/// reaches it.
fn tenant_begin(tenant: TenantId, mode: Mode) -> String {
    format!(
        "BEGIN{}; SET LOCAL app.tenant_id = '{}'; SET LOCAL app.user_id = ''",
        if mode == Mode::ReadOnly {
            " READ ONLY"
        } else {
            ""
        },
        tenant.as_uuid().hyphenated()
    )
}

/// Ends the transaction and, only if that succeeded, clears the broken mark so the
/// pool may reuse the connection.
async fn finish(
    mut conn: PooledConnection<'static, AsyncPgConnection>,
    end: &'static str,
) -> diesel::QueryResult<()> {
    conn.batch_execute(end).await?;
    clear_in_transaction(&mut conn);
    Ok(())
}

/// Marks the connection so that the pool discards it if it comes back before
/// [`finish`] ran: a dropped future must never return an open tenant transaction.
fn mark_in_transaction(conn: &mut AsyncPgConnection) {
    <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::transaction_manager_status_mut(conn)
        .set_in_error();
}

/// Clears [`mark_in_transaction`]'s mark, once the transaction has ended
/// cleanly: the pool may hand the connection out again.
fn clear_in_transaction(conn: &mut AsyncPgConnection) {
    *<AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::transaction_manager_status_mut(conn) =
        TransactionManagerStatus::default();
}

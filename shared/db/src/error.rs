//! The database layer's error type.

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No connection could be had in time (pool exhausted, server down): retryable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed (constraint, RLS `WITH CHECK`, syntax, closed connection…).
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// A connection could not be opened.
    #[error("cannot connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    /// Embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The runtime role could bypass row-level security, or a tenant table is not
    /// protected: the service must not start.
    #[error("unsafe database role or schema: {0}")]
    UnsafeSchema(String),
}

impl DbError {
    /// True when the cause is a unique-constraint violation (→ `ALREADY_EXISTS`).
    #[must_use]
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            Self::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }

    /// The violated constraint's name, for a constraint violation.
    #[must_use]
    pub fn constraint_name(&self) -> Option<&str> {
        match self {
            Self::Query(diesel::result::Error::DatabaseError(_, info)) => info.constraint_name(),
            _ => None,
        }
    }

    /// True when a statement gave up waiting for a lock (`lock_timeout`).
    #[must_use]
    pub fn is_lock_timeout(&self) -> bool {
        matches!(
            self,
            Self::Query(diesel::result::Error::DatabaseError(_, info))
                if info.message().starts_with("canceling statement due to lock timeout")
        )
    }

    /// True when the cause is a foreign-key violation (→ `FAILED_PRECONDITION`).
    #[must_use]
    pub fn is_foreign_key_violation(&self) -> bool {
        matches!(
            self,
            Self::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _
            ))
        )
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for DbError {
    fn from(err: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        Self::Unavailable(err.to_string())
    }
}

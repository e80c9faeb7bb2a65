//! What each statement costs, seen from outside the database: a child span of
//! the request's span per statement, named by its kind (`SELECT`, `INSERT`,
//! `BEGIN`…, never its text or parameters), and the histogram
//! `db_query_duration_seconds{kind}` (with `db_query_errors_total{kind}`).
//! Statements run outside any span (the relay's rounds, health pings) make no
//! span of their own: a trace is a request's.
//!
//! A query that returns rows (`load`) is reported finished by diesel-async
//! when its first answer comes, before its rows are read: an error it meets
//! while running (a lock timeout of a `SELECT … FOR UPDATE`, say) reaches its
//! caller through the rows and is not counted in `db_query_errors_total`
//! (the caller's status and log line still say it). Statements that
//! `execute`, and errors found before a query runs, are counted.
//!
//! Cheap by construction, since it runs for every statement: a statement's
//! kind is read when it finishes, from the SQL text diesel-async has built by
//! then (at its start diesel-async hands over a query that would render its
//! SQL again to be read), and its metric handles are looked up once per
//! process, not per statement.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// Statements in flight on one connection that we keep track of (a pipeline
/// is short; past this, the oldest is let go).
const MOST_IN_FLIGHT: usize = 64;

/// Installed on every connection when it is made, and afresh each time the
/// pool hands it out ([`crate::pool`]'s `checkout`): what an earlier user
/// left running (a statement whose future it dropped, which never finishes)
/// goes with the old one, so it never shifts this user's spans and timings.
#[derive(Debug, Default)]
pub(crate) struct StatementObserver {
    running: VecDeque<Running>,
}

#[derive(Debug)]
struct Running {
    started: Instant,
    span: tracing::Span,
}

impl Drop for StatementObserver {
    /// Statements let go unfinished (dropped by their caller): their spans
    /// close named as such, not as the statement after them.
    fn drop(&mut self) {
        for left in self.running.drain(..) {
            left.span.record("otel.name", "UNFINISHED");
        }
    }
}

impl Instrumentation for StatementObserver {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { .. } => {
                let parent = tracing::Span::current();
                let span = if parent.is_none() {
                    tracing::Span::none()
                } else {
                    // Named when it finishes (see the module's notes).
                    tracing::info_span!(
                        parent: &parent,
                        "db",
                        otel.name = tracing::field::Empty,
                        otel.kind = "client",
                        otel.status_code = tracing::field::Empty,
                        db.system.name = "postgresql",
                        db.operation.name = tracing::field::Empty,
                    )
                };
                if self.running.len() == MOST_IN_FLIGHT {
                    self.running.pop_front();
                }
                self.running.push_back(Running {
                    started: Instant::now(),
                    span,
                });
            }
            InstrumentationEvent::FinishQuery { query, error, .. } => {
                // A connection's statements are answered in the order they
                // were sent, and each user of a pooled connection has an
                // observer of its own: the oldest running is this one. (A
                // one-flight read's statement that must be prepared first
                // is overtaken by its COMMIT: the two spans, started
                // microseconds apart, then swap names.)
                let Some(done) = self.running.pop_front() else {
                    return;
                };
                let kind = kind_of(query);
                let metrics = KindMetrics::of(kind);
                metrics
                    .duration
                    .record(done.started.elapsed().as_secs_f64());
                if !done.span.is_none() {
                    done.span.record("otel.name", kind.name());
                    done.span.record("db.operation.name", kind.name());
                }
                if error.is_some() {
                    metrics.errors.increment(1);
                    done.span.record("otel.status_code", "ERROR");
                }
            }
            _ => {}
        }
    }
}

/// What a statement is, by its first word: one of a fixed set (a bounded
/// metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    With,
    Begin,
    Commit,
    Rollback,
    Set,
    Reset,
    Listen,
    Notify,
    Other,
}

// `KindMetrics::of` indexes by `kind as usize`: every kind is in `ALL`, in
// declaration order.
const _: () = assert!(Kind::ALL.len() == Kind::Other as usize + 1);

impl Kind {
    const ALL: [Self; 13] = [
        Self::Select,
        Self::Insert,
        Self::Update,
        Self::Delete,
        Self::With,
        Self::Begin,
        Self::Commit,
        Self::Rollback,
        Self::Set,
        Self::Reset,
        Self::Listen,
        Self::Notify,
        Self::Other,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::With => "WITH",
            Self::Begin => "BEGIN",
            Self::Commit => "COMMIT",
            Self::Rollback => "ROLLBACK",
            Self::Set => "SET",
            Self::Reset => "RESET",
            Self::Listen => "LISTEN",
            Self::Notify => "NOTIFY",
            Self::Other => "OTHER",
        }
    }

    fn of(first_word: &[u8]) -> Self {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().as_bytes() == first_word)
            .unwrap_or(Self::Other)
    }
}

/// A statement's kind, from its SQL text (the first piece either of diesel's
/// renderings writes; then, for a built query, come its parameters, which
/// are not read).
fn kind_of(query: &dyn std::fmt::Display) -> Kind {
    let mut sql = FirstWord::default();
    let _ = write!(sql, "{query}");
    Kind::of(&sql.word[..sql.len])
}

/// Reads the first word of the first piece written, then stops the
/// formatting.
#[derive(Default)]
struct FirstWord {
    word: [u8; 8],
    len: usize,
}

impl std::fmt::Write for FirstWord {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.trim_start().bytes() {
            if !b.is_ascii_alphabetic() || self.len == self.word.len() {
                break;
            }
            self.word[self.len] = b.to_ascii_uppercase();
            self.len += 1;
        }
        Err(std::fmt::Error)
    }
}

/// A kind's metric handles, looked up in the recorder once per process (the
/// first statement; `serve` and `up` install the recorder before any pool
/// opens). A lookup per statement was about 1% of a service's CPU.
struct KindMetrics {
    duration: metrics::Histogram,
    errors: metrics::Counter,
}

impl KindMetrics {
    fn of(kind: Kind) -> &'static Self {
        static ALL: OnceLock<Vec<KindMetrics>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            Kind::ALL
                .into_iter()
                .map(|kind| Self {
                    duration: metrics::histogram!("db_query_duration_seconds", "kind" => kind.name()),
                    errors: metrics::counter!("db_query_errors_total", "kind" => kind.name()),
                })
                .collect()
        });
        &all[kind as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str) -> &'static str {
        kind_of(&sql).name()
    }

    #[test]
    fn statements_are_named_by_their_first_word_only() {
        assert_eq!(of("SELECT 1"), "SELECT");
        assert_eq!(of("  insert into t values ($1)"), "INSERT");
        assert_eq!(of("\nWITH x AS (SELECT 1) UPDATE t SET a = 1"), "WITH");
        assert_eq!(of("BEGIN ISOLATION LEVEL READ COMMITTED"), "BEGIN");
        assert_eq!(of("notify x"), "NOTIFY");
        assert_eq!(of("secret_function('password')"), "OTHER");
        assert_eq!(of("SELECTED"), "OTHER");
        assert_eq!(of(""), "OTHER");
        for (at, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(Kind::of(kind.name().as_bytes()), kind);
            assert_eq!(kind as usize, at, "{kind:?}");
        }
    }

    /// Each finish closes the oldest statement still running, and a finish
    /// with nothing running (its start was before this observer) is ignored.
    #[test]
    fn statements_finish_in_the_order_they_started() {
        let mut observer = StatementObserver::default();
        let begin = diesel::connection::StrQueryHelper::new("BEGIN");
        let select = diesel::connection::StrQueryHelper::new("SELECT 1");
        observer.on_connection_event(InstrumentationEvent::finish_query(&begin, None));
        assert!(observer.running.is_empty());
        observer.on_connection_event(InstrumentationEvent::start_query(&begin));
        std::thread::sleep(std::time::Duration::from_millis(2));
        observer.on_connection_event(InstrumentationEvent::start_query(&select));
        assert_eq!(observer.running.len(), 2);
        let second = observer.running[1].started;
        observer.on_connection_event(InstrumentationEvent::finish_query(&begin, None));
        assert_eq!(observer.running.len(), 1);
        assert_eq!(observer.running[0].started, second, "the first was closed");
        observer.on_connection_event(InstrumentationEvent::finish_query(&select, None));
        assert!(observer.running.is_empty());
    }
}

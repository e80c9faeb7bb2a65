//! What each statement costs, seen from outside the database: a child span of
//! the request's span per statement, named by its kind (`SELECT`, `INSERT`,
//! `BEGIN`…, never its text or parameters), and the histogram
//! `db_query_duration_seconds{kind}` (with `db_query_errors_total{kind}`).
//! Statements run outside any span (the relay's rounds, health pings) make no
//! span of their own: a trace is a request's.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Instant;

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// Statements in flight on one connection that we keep track of (a pipeline
/// is short; past this, the oldest is let go).
const MOST_IN_FLIGHT: usize = 64;

/// Installed on every pooled connection.
#[derive(Debug, Default)]
pub(crate) struct StatementObserver {
    running: VecDeque<Running>,
}

#[derive(Debug)]
struct Running {
    statement: Statement,
    started: Instant,
    span: tracing::Span,
}

impl Instrumentation for StatementObserver {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                let statement = Statement::of(query);
                let kind = statement.kind;
                let parent = tracing::Span::current();
                let span = if parent.is_none() {
                    tracing::Span::none()
                } else {
                    tracing::info_span!(
                        parent: &parent,
                        "db",
                        otel.name = kind,
                        otel.kind = "client",
                        otel.status_code = tracing::field::Empty,
                        db.system.name = "postgresql",
                        db.operation.name = kind,
                    )
                };
                if self.running.len() == MOST_IN_FLIGHT {
                    self.running.pop_front();
                }
                self.running.push_back(Running {
                    statement,
                    started: Instant::now(),
                    span,
                });
            }
            InstrumentationEvent::FinishQuery { query, error, .. } => {
                // Pipelined statements finish in the order they started; a
                // statement whose future was dropped never finishes: with
                // more than one in flight, the finished one is found by its
                // text, and those left before it (cancelled) are let go, so
                // no span stays open. With one (the usual case) it is that
                // one: its text is not rendered again.
                if self.running.len() > 1 {
                    let statement = Statement::of(query);
                    let Some(at) = self
                        .running
                        .iter()
                        .position(|r| r.statement.fingerprint == statement.fingerprint)
                    else {
                        return;
                    };
                    self.running.drain(..at);
                }
                if let Some(done) = self.running.pop_front() {
                    let kind = done.statement.kind;
                    metrics::histogram!("db_query_duration_seconds", "kind" => kind)
                        .record(done.started.elapsed().as_secs_f64());
                    if error.is_some() {
                        metrics::counter!("db_query_errors_total", "kind" => kind).increment(1);
                        done.span.record("otel.status_code", "ERROR");
                    }
                }
            }
            _ => {}
        }
    }
}

/// What is kept of a statement: its kind and a fingerprint of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Statement {
    kind: &'static str,
    fingerprint: u64,
}

impl Statement {
    /// Both of diesel's renderings write the SQL text as their first piece
    /// (then, for a built query, its parameters): only that piece is read.
    fn of(query: &dyn std::fmt::Display) -> Self {
        let mut sql = FirstPiece::default();
        let _ = write!(sql, "{query}");
        Self {
            kind: kind(sql.first_word()),
            fingerprint: sql.fingerprint,
        }
    }
}

/// Reads the first piece written, then stops the formatting.
#[derive(Default)]
struct FirstPiece {
    word: [u8; 8],
    len: usize,
    fingerprint: u64,
}

impl std::fmt::Write for FirstPiece {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::hash::DefaultHasher::new();
        s.hash(&mut hasher);
        self.fingerprint = hasher.finish();
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

impl FirstPiece {
    fn first_word(&self) -> &[u8] {
        &self.word[..self.len]
    }
}

/// One of a fixed set (a bounded metric label).
fn kind(first_word: &[u8]) -> &'static str {
    match first_word {
        b"SELECT" => "SELECT",
        b"INSERT" => "INSERT",
        b"UPDATE" => "UPDATE",
        b"DELETE" => "DELETE",
        b"WITH" => "WITH",
        b"BEGIN" => "BEGIN",
        b"COMMIT" => "COMMIT",
        b"ROLLBACK" => "ROLLBACK",
        b"SET" => "SET",
        b"RESET" => "RESET",
        b"LISTEN" => "LISTEN",
        b"NOTIFY" => "NOTIFY",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str) -> Statement {
        Statement::of(&sql)
    }

    #[test]
    fn statements_are_named_by_their_first_word_only() {
        assert_eq!(of("SELECT 1").kind, "SELECT");
        assert_eq!(of("  insert into t values ($1)").kind, "INSERT");
        assert_eq!(of("\nWITH x AS (SELECT 1) UPDATE t SET a = 1").kind, "WITH");
        assert_eq!(of("BEGIN ISOLATION LEVEL READ COMMITTED").kind, "BEGIN");
        assert_eq!(of("secret_function('password')").kind, "OTHER");
        assert_eq!(of("SELECTED").kind, "OTHER");
        assert_eq!(of("").kind, "OTHER");
        assert_eq!(of("SELECT 1"), of("SELECT 1"));
        assert_ne!(of("SELECT 1").fingerprint, of("SELECT 2").fingerprint);
    }

    /// A statement whose future was dropped (never finished) does not shift
    /// the spans and timings of those after it, nor keep its span open.
    #[test]
    fn a_cancelled_statement_is_let_go_at_the_next_finish() {
        let mut observer = StatementObserver::default();
        let cancelled = diesel::connection::StrQueryHelper::new("SELECT cancelled");
        let next = diesel::connection::StrQueryHelper::new("UPDATE next");
        observer.on_connection_event(InstrumentationEvent::start_query(&cancelled));
        observer.on_connection_event(InstrumentationEvent::start_query(&next));
        assert_eq!(observer.running.len(), 2);
        observer.on_connection_event(InstrumentationEvent::finish_query(&next, None));
        assert!(observer.running.is_empty());
    }
}

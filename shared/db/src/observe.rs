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
    kind: &'static str,
    started: Instant,
    span: tracing::Span,
}

impl Instrumentation for StatementObserver {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                let mut first = FirstWord::default();
                // Stops formatting at the end of the first word.
                let _ = write!(first, "{query}");
                let kind = first.kind();
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
                    kind,
                    started: Instant::now(),
                    span,
                });
            }
            InstrumentationEvent::FinishQuery { error, .. } => {
                // Statements on one connection finish in the order they
                // started (one pipeline).
                if let Some(done) = self.running.pop_front() {
                    metrics::histogram!("db_query_duration_seconds", "kind" => done.kind)
                        .record(done.started.elapsed().as_secs_f64());
                    if error.is_some() {
                        metrics::counter!("db_query_errors_total", "kind" => done.kind)
                            .increment(1);
                        done.span.record("otel.status_code", "ERROR");
                    }
                }
            }
            _ => {}
        }
    }
}

/// The first word of a statement, upper-cased; formatting stops after it.
#[derive(Default)]
struct FirstWord {
    word: [u8; 8],
    len: usize,
}

impl std::fmt::Write for FirstWord {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.bytes() {
            if b.is_ascii_alphabetic() {
                if self.len == self.word.len() {
                    return Err(std::fmt::Error);
                }
                self.word[self.len] = b.to_ascii_uppercase();
                self.len += 1;
            } else if self.len > 0 {
                return Err(std::fmt::Error);
            }
        }
        Ok(())
    }
}

impl FirstWord {
    /// One of a fixed set (a bounded metric label).
    fn kind(&self) -> &'static str {
        match &self.word[..self.len] {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> &'static str {
        let mut first = FirstWord::default();
        let _ = write!(first, "{sql}");
        first.kind()
    }

    #[test]
    fn statements_are_named_by_their_first_word_only() {
        assert_eq!(kind("SELECT 1"), "SELECT");
        assert_eq!(kind("  insert into t values ($1)"), "INSERT");
        assert_eq!(kind("\nWITH x AS (SELECT 1) UPDATE t SET a = 1"), "WITH");
        assert_eq!(kind("BEGIN ISOLATION LEVEL READ COMMITTED"), "BEGIN");
        assert_eq!(kind("secret_function('password')"), "OTHER");
        assert_eq!(kind("SELECTED"), "OTHER");
        assert_eq!(kind(""), "OTHER");
    }
}

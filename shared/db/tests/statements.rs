//! The statement spans the db layer makes (observe.rs), as a tracing
//! subscriber sees them: one per statement under the request's span, named
//! by its kind, each closed; a statement an earlier user of the pooled
//! connection left running shifts none of them. Real Postgres: an ephemeral
//! cluster per test process, a fresh database per test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_context::TenantId;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_db::{DbError, TenantConn};
use bulkhead_postgres::testing::test_database;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tracing::Instrument as _;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("tests/sample_migrations");
static SAMPLE: ServiceSchema = ServiceSchema::new("sample", &MIGRATIONS);

diesel::table! {
    projects (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        name -> Text,
    }
}

#[derive(Queryable, Debug)]
struct Project {
    tenant_id: Uuid,
}

impl bulkhead_db::TenantRow for Project {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
}

async fn all_projects(tx: TenantConn<'_>) -> Result<Vec<Project>, DbError> {
    Ok(projects::table
        .select(projects::tenant_id)
        .load::<Uuid>(&mut tx.pg())
        .await?
        .into_iter()
        .map(|tenant_id| Project { tenant_id })
        .collect())
}

/// A statement span as seen: its name once it finished, its parent's name,
/// and whether it was closed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    name: Option<String>,
    parent: Option<&'static str>,
    closed: bool,
}

/// Records every `db` span, in the order they were made.
#[derive(Clone, Default)]
struct StatementSpans(Arc<Mutex<Vec<Seen>>>);

struct Index(usize);

struct OtelName<'a>(&'a mut Option<String>);

impl tracing::field::Visit for OtelName<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "otel.name" {
            *self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> tracing_subscriber::Layer<S> for StatementSpans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if attrs.metadata().name() != "db" {
            return;
        }
        let span = ctx.span(id).expect("a new span");
        let mut seen = Seen {
            parent: span.parent().map(|p| p.name()),
            ..Seen::default()
        };
        attrs.record(&mut OtelName(&mut seen.name));
        let mut all = self.0.lock().expect("spans");
        span.extensions_mut().insert(Index(all.len()));
        all.push(seen);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let span = ctx.span(id).expect("a recorded span");
        if let Some(Index(at)) = span.extensions().get::<Index>() {
            values.record(&mut OtelName(&mut self.0.lock().expect("spans")[*at].name));
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).expect("a closing span");
        if let Some(Index(at)) = span.extensions().get::<Index>() {
            self.0.lock().expect("spans")[*at].closed = true;
        }
    }
}

/// The process's metrics recorder: installed before any statement of this
/// test binary runs (the db layer looks its handles up once per process), so
/// every test calls it first.
fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("a recorder")
    })
}

/// The value of the series `line_start` (`name{labels}`) in `text`.
fn series(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A row of one number.
#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    #[allow(dead_code)]
    n: i32,
}

/// A pool of one connection on a fresh database, its statement spans
/// recorded (while the guard lives) and its metrics going to [`metrics`].
async fn traced_pool_of_one() -> (
    StatementSpans,
    tracing::subscriber::DefaultGuard,
    bulkhead_postgres::testing::TestDatabase,
    bulkhead_db::Db,
) {
    metrics();
    let spans = StatementSpans::default();
    let subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let database = test_database(&SAMPLE).await;
    let db = database.app_db(1).await;
    (spans, subscriber, database, db)
}

fn statement(name: &str) -> Seen {
    Seen {
        name: Some(name.to_owned()),
        parent: Some("request"),
        closed: true,
    }
}

#[tokio::test]
async fn a_statement_left_running_by_the_last_user_shifts_no_span_of_the_next() {
    let (spans, _subscriber, _database, db) = traced_pool_of_one().await;
    let tenant = TenantId::new_v7();
    db.tenant_tx(tenant, async |tx| {
        diesel::insert_into(projects::table)
            .values((
                projects::tenant_id.eq(*tx.tenant_id().as_uuid()),
                projects::id.eq(Uuid::now_v7()),
                projects::name.eq("p"),
            ))
            .execute(&mut tx.pg())
            .await
            .map_err(DbError::from)
    })
    .await
    .expect("a row to read");
    // Prepared on the pool's one connection: the read leaves in one flight.
    for _ in 0..2 {
        db.tenant_read_rows(tenant, async |tx| all_projects(tx).await)
            .await
            .expect("read");
    }

    // The last user drops a statement before its answer: it never finishes.
    {
        use diesel_async::SimpleAsyncConnection as _;
        let mut conn = db.system().await.expect("system");
        let dropped = tokio::time::timeout(
            Duration::from_millis(100),
            conn.pg().batch_execute("SELECT pg_sleep(0.4)"),
        )
        .await;
        assert!(dropped.is_err(), "the statement was dropped unanswered");
    }
    spans.0.lock().expect("spans").clear();

    db.tenant_read_rows(tenant, async |tx| all_projects(tx).await)
        .instrument(tracing::info_span!("request"))
        .await
        .expect("read");
    assert_eq!(
        *spans.0.lock().expect("spans"),
        vec![statement("BEGIN"), statement("SELECT"), statement("COMMIT")]
    );
}

/// A transaction whose work fails while another of its statements still
/// runs (a `try_join` drops the other half): the dropped statement's span
/// closes as unfinished, and the ROLLBACK's span is its own.
#[tokio::test]
async fn a_statement_its_own_transaction_dropped_is_closed_unfinished() {
    let (spans, _subscriber, _database, db) = traced_pool_of_one().await;
    let failed = db
        .tenant_tx(TenantId::new_v7(), async |tx| {
            let fails = diesel::sql_query("SELECT 1 / 0 AS n").load::<Number>(&mut tx.pg());
            let slow =
                diesel::sql_query("SELECT 1 AS n FROM pg_sleep(0.3)").load::<Number>(&mut tx.pg());
            futures_util::future::try_join(fails, slow)
                .await
                .map_err(DbError::from)
        })
        .instrument(tracing::info_span!("request"))
        .await;
    assert!(failed.is_err(), "division by zero");
    let unfinished = Seen {
        name: Some("UNFINISHED".to_owned()),
        ..statement("SELECT")
    };
    assert_eq!(
        *spans.0.lock().expect("spans"),
        vec![
            statement("BEGIN"),
            statement("SELECT"),
            unfinished,
            statement("ROLLBACK")
        ]
    );
}

/// A statement that fails before it runs (here at planning) is timed and
/// counted under its kind; so is the ROLLBACK after it. (One that fails
/// while its rows are read is not counted: see observe.rs.)
#[tokio::test]
async fn a_failed_statement_is_counted_under_its_kind() {
    let metrics = metrics();
    let database = test_database(&SAMPLE).await;
    let db = database.app_db(1).await;
    let before = metrics.render();
    let failed = db
        .tenant_tx(TenantId::new_v7(), async |tx| {
            diesel::sql_query("SELECT 1 / 0 AS n")
                .load::<Number>(&mut tx.pg())
                .await
                .map_err(DbError::from)
        })
        .await;
    assert!(failed.is_err(), "division by zero");
    let after = metrics.render();
    let errors = r#"db_query_errors_total{kind="SELECT"}"#;
    let rollbacks = r#"db_query_duration_seconds_count{kind="ROLLBACK"}"#;
    assert!(
        series(&after, errors) >= series(&before, errors) + 1.0,
        "{after}"
    );
    assert!(
        series(&after, rollbacks) >= series(&before, rollbacks) + 1.0,
        "{after}"
    );
}

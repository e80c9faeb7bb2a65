//! One request is one trace across the services: `bulkhead up` exporting to an
//! in-process OTLP receiver (set by the standard `OTEL_EXPORTER_OTLP_ENDPOINT`),
//! a `CreateTask` with an assignee yields spans from Task, from Tenant (the
//! assignee check) and from Audit (the event, through the outbox relay), all
//! in the caller's trace and naming the tenant; and JSON log lines inside a
//! request carry its tenant, request and trace ids.
//!
//! `up` runs the four services in one process, so its spans share one
//! `service.name` (`OTEL_SERVICE_NAME` here); `rpc.service` tells them apart.

use std::time::{Duration, Instant};

use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::tenant::v1 as tenant;
use bulkhead_testkit::otlp::{OtlpReceiver, ReceivedSpan};

use crate::up::start_up_with;

/// The caller's own trace and span (W3C's example ids).
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traced<T>(token: &str, trace: &str, message: T) -> tonic::Request<T> {
    let mut request = bulkhead_testkit::bearer(token, message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-{CALLER_SPAN}-01")
            .parse()
            .expect("ascii"),
    );
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_is_one_trace_across_task_tenant_and_audit() {
    let receiver = OtlpReceiver::start().await;
    let work = tempfile::Builder::new()
        .prefix("bulkhead-traces")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let host = format!("127.0.2.{}", 2 + std::process::id() % 250);
    let up = start_up_with(
        work.path(),
        &host,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            ("OTEL_SERVICE_NAME", "bulkhead-traces-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("BULKHEAD_LOG_FORMAT", "json"),
        ],
    )
    .await
    .expect("up starts");
    let password = std::fs::read_to_string(work.path().join(".bulkhead/admin-password"))
        .expect("admin password");
    let channel = |port: u16| {
        tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
            .expect("endpoint")
            .connect_lazy()
    };
    let login = crate::up::admin_login(&host, &password).await;
    let token = login.tokens.expect("tokens").access_token;
    let tenant_id = login.tenant.expect("tenant").id;
    let me = auth::auth_service_client::AuthServiceClient::new(channel(50051))
        .who_am_i(bulkhead_testkit::bearer(&token, auth::WhoAmIRequest {}))
        .await
        .expect("who am i")
        .into_inner();

    let created = task::task_service_client::TaskServiceClient::new(channel(50053))
        .create_task(traced(
            &token,
            TRACE,
            task::CreateTaskRequest {
                title: "traced".into(),
                assignee_user_id: me.user_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("create task")
        .into_inner()
        .task
        .expect("task");

    // The spans arrive in batches: wait for the last hop (Audit's).
    let started = Instant::now();
    let in_trace = loop {
        let spans: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == TRACE)
            .collect();
        if spans.iter().any(|s| s.name == "audit.record") {
            break spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no Audit span in the trace within 30 s: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rpc = |service: &str, method: &str| {
        in_trace
            .iter()
            .find(|s| {
                s.attribute("rpc.service") == Some(service)
                    && s.attribute("rpc.method") == Some(method)
            })
            .unwrap_or_else(|| panic!("no {service}/{method} span in {in_trace:#?}"))
    };
    let task_span = rpc("bulkhead.task.v1.TaskService", "CreateTask");
    assert_eq!(task_span.parent_span_id, CALLER_SPAN, "{task_span:#?}");
    assert_eq!(task_span.name, "bulkhead.task.v1.TaskService/CreateTask");
    assert_eq!(task_span.attribute("tenant.id"), Some(tenant_id.as_str()));
    assert_eq!(task_span.attribute("user.id"), Some(me.user_id.as_str()));
    assert_eq!(task_span.attribute("rpc.system"), Some("grpc"));
    assert_eq!(task_span.attribute("rpc.grpc.status_code"), Some("0"));
    assert_eq!(task_span.service_name, "bulkhead-traces-test");

    // The assignee check: Tenant's span is a child of Task's.
    let check = rpc("bulkhead.tenant.v1.TenantService", "CheckMembership");
    assert_eq!(check.service_name, "bulkhead-traces-test");
    assert_eq!(
        check.attribute("service.caller"),
        Some("task"),
        "{check:#?}"
    );
    assert_eq!(check.attribute("tenant.id"), Some(tenant_id.as_str()));
    let ancestors = |span: &ReceivedSpan| {
        let mut chain = Vec::new();
        let mut parent = span.parent_span_id.clone();
        while let Some(next) = in_trace.iter().find(|s| s.span_id == parent) {
            chain.push(next.span_id.clone());
            parent = next.parent_span_id.clone();
        }
        chain
    };
    assert!(
        ancestors(check).contains(&task_span.span_id),
        "{check:#?} under {task_span:#?}"
    );

    // The audit event, recorded by Audit after the relay delivered it, joins
    // the request that caused it.
    let recorded = in_trace
        .iter()
        .find(|s| s.name == "audit.record" && s.attribute("audit.action") == Some("task.created"))
        .unwrap_or_else(|| panic!("no task.created recording in {in_trace:#?}"));
    assert_eq!(recorded.attribute("tenant.id"), Some(tenant_id.as_str()));
    assert!(
        ancestors(recorded).contains(&task_span.span_id),
        "{recorded:#?} under {task_span:#?}"
    );

    // Database work: children named by statement kind, never its text.
    let statements: Vec<&ReceivedSpan> = in_trace
        .iter()
        .filter(|s| s.attribute("db.system.name") == Some("postgresql"))
        .collect();
    assert!(
        statements
            .iter()
            .any(|s| s.name == "INSERT" || s.name == "SELECT"),
        "{statements:#?}"
    );
    for statement in &statements {
        assert!(
            ancestors(statement).contains(&task_span.span_id),
            "{statement:#?}"
        );
        // Named when it finished, by its kind, and so is its operation.
        assert!(
            [
                "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "ROLLBACK",
                "SET", "NOTIFY"
            ]
            .contains(&statement.name.as_str()),
            "{statement:#?}"
        );
        assert_eq!(
            statement.attribute("db.operation.name"),
            Some(statement.name.as_str()),
            "{statement:#?}"
        );
        assert!(
            !statement
                .attributes
                .values()
                .any(|v| v.contains("traced") || v.contains(' ')),
            "no statement text or parameters: {statement:#?}"
        );
    }
    // No span anywhere holds a secret.
    for span in receiver.spans() {
        for value in span.attributes.values() {
            assert!(!value.contains(password.trim()), "{span:#?}");
            assert!(!value.contains(&token), "{span:#?}");
            assert!(!value.contains("admin@bulkhead.local"), "{span:#?}");
        }
    }

    // The audit trail names the trace too.
    let events =
        bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient::new(channel(50054))
            .query_events(bulkhead_testkit::bearer(
                &token,
                bulkhead_proto::audit::v1::QueryEventsRequest {
                    filter: Some(bulkhead_proto::audit::v1::AuditEventFilter {
                        resource_id: created.id.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await
            .expect("query")
            .into_inner()
            .events;
    assert!(
        events.iter().any(|e| e.trace_id == TRACE),
        "the event keeps the request's trace id: {events:#?}"
    );

    // A JSON log line inside a request (the guard's warning about a forged
    // x-tenant-id) names the request's tenant, user, request and trace.
    const FORGED: &str = "0af7651916cd43dd8448eb211c80319c";
    let mut forged = traced(&token, FORGED, tenant::ListMembersRequest::default());
    forged.metadata_mut().insert(
        "x-tenant-id",
        "01a23b2c-0000-7000-8000-000000000000"
            .parse()
            .expect("ascii"),
    );
    forged
        .metadata_mut()
        .insert("x-request-id", "req-traces-1".parse().expect("ascii"));
    let refused = tenant::tenant_service_client::TenantServiceClient::new(channel(50052))
        .list_members(forged)
        .await
        .expect_err("forged");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let started = Instant::now();
    let line = loop {
        let found = up
            .output
            .lock()
            .expect("output")
            .iter()
            .find(|l| l.contains(FORGED))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no log line of the forged call"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(line["trace_id"], FORGED, "{line}");
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert_eq!(line["tenant_id"], tenant_id.as_str(), "{line}");
    assert_eq!(line["user_id"], me.user_id.as_str(), "{line}");
    assert_eq!(line["request_id"], "req-traces-1", "{line}");
    assert_eq!(line["level"], "WARN", "{line}");

    up.stop();
}

//! Task's API tests on real sockets and a real Postgres: the original design's
//! isolation scenarios through every RPC, the role matrix, keyset pagination
//! under concurrent inserts, etags and idempotent creates under concurrency,
//! live assignee checks, compliance links that cannot cross tenants, one audit
//! event per mutation, and an index behind every query shape.

mod catalog;
mod helpers;

use std::collections::HashSet;

use bulkhead_proto::task::v1 as pb;
use helpers::{
    Caller, Harness, assert_code, mask, spawn_service, spawn_with, super_admin_in, violated_fields,
};
use tonic::Code;

fn status_of(t: &pb::Task) -> pb::TaskStatus {
    pb::TaskStatus::try_from(t.status).expect("status")
}

async fn list(
    h: &Harness,
    caller: &Caller,
    request: pb::ListTasksRequest,
) -> Result<pb::ListTasksResponse, tonic::Status> {
    h.tasks
        .clone()
        .list_tasks(h.request(caller, request))
        .await
        .map(tonic::Response::into_inner)
}

async fn get(h: &Harness, caller: &Caller, id: &str) -> Result<pb::Task, tonic::Status> {
    h.tasks
        .clone()
        .get_task(h.request(caller, pb::GetTaskRequest { task_id: id.into() }))
        .await
        .map(|r| r.into_inner().task.expect("task"))
}

async fn update(
    h: &Harness,
    caller: &Caller,
    task: pb::Task,
    paths: &[&str],
) -> Result<pb::Task, tonic::Status> {
    h.tasks
        .clone()
        .update_task(h.request(
            caller,
            pb::UpdateTaskRequest {
                task: Some(task),
                update_mask: mask(paths),
            },
        ))
        .await
        .map(|r| r.into_inner().task.expect("task"))
}

// --- the original design's scenarios ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_and_changes_only_its_own_tasks() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    let a_task = h.task(&a.member, "A's task").await;
    let b_task = h.task(&b.member, "B's task").await;

    // Each sees only its own; counts see one tenant.
    let seen = |r: pb::ListTasksResponse| r.tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        seen(list(&h, &a.viewer, Default::default()).await.expect("a")),
        std::slice::from_ref(&a_task.id)
    );
    assert_eq!(
        seen(list(&h, &b.viewer, Default::default()).await.expect("b")),
        std::slice::from_ref(&b_task.id)
    );
    let analytics = h
        .tasks
        .clone()
        .get_task_analytics(h.request(&a.viewer, pb::GetTaskAnalyticsRequest::default()))
        .await
        .expect("analytics")
        .into_inner();
    assert_eq!(analytics.total_count, 1);

    // B's task by id is NOT_FOUND for A, exactly like an id nobody has.
    let stranger = assert_code(get(&h, &a.owner, &b_task.id).await, Code::NotFound);
    let nobody = assert_code(
        get(&h, &a.owner, &uuid::Uuid::now_v7().to_string()).await,
        Code::NotFound,
    );
    assert_eq!(stranger.message(), nobody.message());

    // Update, delete and bulk update of B's task from A change nothing.
    let mut forged = b_task.clone();
    forged.title = "taken over".into();
    forged.etag = String::new();
    assert_code(
        update(&h, &a.owner, forged, &["title"]).await,
        Code::NotFound,
    );
    assert_code(
        h.tasks
            .clone()
            .delete_task(h.request(
                &a.owner,
                pb::DeleteTaskRequest {
                    task_id: b_task.id.clone(),
                    etag: String::new(),
                },
            ))
            .await,
        Code::NotFound,
    );
    let bulk = h
        .tasks
        .clone()
        .bulk_update_task_status(h.request(
            &a.owner,
            pb::BulkUpdateTaskStatusRequest {
                task_ids: vec![b_task.id.clone(), a_task.id.clone()],
                status: pb::TaskStatus::Cancelled.into(),
            },
        ))
        .await
        .expect("bulk")
        .into_inner();
    assert_eq!(
        bulk.updated_task_ids,
        std::slice::from_ref(&a_task.id),
        "B's id is neither updated nor reported"
    );
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) AS n FROM tasks WHERE id = '{}' AND title = 'B''s task' AND status = 'PENDING' AND version = 1",
            b_task.id
        ))
        .await,
        1,
        "B's task is untouched (read as the superuser)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_comes_from_the_token_only() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    // A create lands in the caller's tenant (no request field can name one).
    let task = h.task(&a.member, "mine").await;
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) AS n FROM tasks WHERE id = '{}' AND tenant_id = '{}'",
            task.id, a.tenant.id
        ))
        .await,
        1
    );
    // A tenant named in metadata that is not the token's is refused.
    let mut request = h.request(&a.member, pb::ListTasksRequest::default());
    request
        .metadata_mut()
        .insert("x-tenant-id", b.tenant.id.parse().expect("ascii"));
    assert_code(
        h.tasks.clone().list_tasks(request).await,
        Code::PermissionDenied,
    );
    // No token, no context: refused before anything runs.
    assert_code(
        h.tasks
            .clone()
            .create_task(h.request(
                &Caller::Nobody,
                pb::CreateTaskRequest {
                    title: "x".into(),
                    ..Default::default()
                },
            ))
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_admins_cross_tenants_only_with_the_bypass_and_are_audited() {
    let off = spawn_service().await;
    let a = off.org("tenant-a").await;
    let b = off.org("tenant-b").await;
    let b_task = off.task(&b.member, "B's").await;
    let root = super_admin_in(&a);
    assert_code(get(&off, &root, &b_task.id).await, Code::NotFound);
    assert!(
        list(&off, &root, Default::default())
            .await
            .expect("list")
            .tasks
            .is_empty()
    );

    let on = spawn_with(true, true).await;
    let a = on.org("tenant-a").await;
    let b = on.org("tenant-b").await;
    let a_task = on.task(&a.member, "A's").await;
    let b_task = on.task(&b.member, "B's").await;
    let root = super_admin_in(&a);
    assert_eq!(
        get(&on, &root, &b_task.id).await.expect("across").id,
        b_task.id
    );
    let all: HashSet<String> = list(&on, &root, Default::default())
        .await
        .expect("list")
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all, HashSet::from([a_task.id, b_task.id.clone()]));
    assert_eq!(on.events("task.read_across_tenants").await, 1);
    assert_eq!(on.events("task.listed_across_tenants").await, 1);
    // An ordinary owner still sees only their tenant.
    assert_code(get(&on, &a.owner, &b_task.id).await, Code::NotFound);
}

// --- the role matrix ----------------------------------------------------------------

/// Every RPC against every kind of caller, with the exact code each gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_each_kind_of_caller_exactly() {
    use Code::{NotFound as N, Ok as K, PermissionDenied as D, Unauthenticated as U};
    let h = spawn_service().await;
    let org = h.org("acme").await;
    let callers = [
        org.viewer.clone(),
        org.member.clone(),
        org.admin.clone(),
        org.owner.clone(),
        Caller::Service,
        Caller::ServiceFor(org.owner.user().clone()),
        Caller::Nobody,
    ];
    //                                       viewer member admin owner service svc+owner nobody
    let table: Vec<(&str, [Code; 7])> = vec![
        ("CreateTask", [D, K, K, K, D, K, U]),
        ("GetTask", [K, K, K, K, D, K, U]),
        ("UpdateTask", [D, K, K, K, D, K, U]),
        ("ListTasks", [K, K, K, K, D, K, U]),
        ("BulkUpdateTaskStatus", [D, D, K, K, D, K, U]),
        ("GetTaskAnalytics", [K, K, K, K, D, K, U]),
        ("CreateComplianceRecord", [D, K, K, K, D, K, U]),
        ("ListComplianceRecords", [K, K, K, K, D, K, U]),
        ("UpdateComplianceRecord", [D, K, K, K, D, K, U]),
        // A bare service has no tenant: it may release, nothing else.
        ("ReleaseAssignments", [D, D, D, D, K, K, U]),
        // Last: it removes the task the others use (a second delete: NOT_FOUND).
        ("DeleteTask", [D, D, K, N, D, N, U]),
    ];
    let mut listed: Vec<&str> = table.iter().map(|(m, _)| *m).collect();
    listed.sort_unstable();
    let mut all = bulkhead_proto::method_names(bulkhead_task::SERVICE_NAME);
    all.sort_unstable();
    assert_eq!(listed, all, "the matrix lists every RPC of TaskService");

    let task = h.task(&org.member, "shared").await;
    let record = h
        .tasks
        .clone()
        .create_compliance_record(h.request(
            &org.member,
            pb::CreateComplianceRecordRequest {
                title: "audit".into(),
                due_time: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                task_id: String::new(),
            },
        ))
        .await
        .expect("record")
        .into_inner()
        .record
        .expect("record");
    let code = |r: Result<(), tonic::Status>| r.map_or_else(|s| s.code(), |()| Code::Ok);
    for (method, expected) in &table {
        for (caller, want) in callers.iter().zip(expected) {
            let mut c = h.tasks.clone();
            let got = match *method {
                "CreateTask" => code(
                    c.create_task(h.request(
                        caller,
                        pb::CreateTaskRequest {
                            title: "t".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "GetTask" => code(
                    c.get_task(h.request(
                        caller,
                        pb::GetTaskRequest {
                            task_id: task.id.clone(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "UpdateTask" => {
                    let mut t = task.clone();
                    t.etag = String::new();
                    t.description = "edited".into();
                    code(
                        c.update_task(h.request(
                            caller,
                            pb::UpdateTaskRequest {
                                task: Some(t),
                                update_mask: mask(&["description"]),
                            },
                        ))
                        .await
                        .map(drop),
                    )
                }
                "ListTasks" => code(
                    c.list_tasks(h.request(caller, pb::ListTasksRequest::default()))
                        .await
                        .map(drop),
                ),
                "BulkUpdateTaskStatus" => code(
                    c.bulk_update_task_status(h.request(
                        caller,
                        pb::BulkUpdateTaskStatusRequest {
                            task_ids: vec![task.id.clone()],
                            status: pb::TaskStatus::InProgress.into(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "GetTaskAnalytics" => code(
                    c.get_task_analytics(h.request(caller, pb::GetTaskAnalyticsRequest::default()))
                        .await
                        .map(drop),
                ),
                "CreateComplianceRecord" => code(
                    c.create_compliance_record(h.request(
                        caller,
                        pb::CreateComplianceRecordRequest {
                            title: "c".into(),
                            due_time: Some(prost_types::Timestamp {
                                seconds: 4_000_000_000,
                                nanos: 0,
                            }),
                            task_id: String::new(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "ListComplianceRecords" => code(
                    c.list_compliance_records(
                        h.request(caller, pb::ListComplianceRecordsRequest::default()),
                    )
                    .await
                    .map(drop),
                ),
                "UpdateComplianceRecord" => {
                    let mut r = record.clone();
                    r.etag = String::new();
                    r.title = "renamed".into();
                    code(
                        c.update_compliance_record(h.request(
                            caller,
                            pb::UpdateComplianceRecordRequest {
                                record: Some(r),
                                update_mask: mask(&["title"]),
                            },
                        ))
                        .await
                        .map(drop),
                    )
                }
                "ReleaseAssignments" => code(
                    c.release_assignments(h.request(
                        caller,
                        pb::ReleaseAssignmentsRequest {
                            tenant_id: org.tenant.id.clone(),
                            user_id: String::new(),
                            membership_create_time: Some(bulkhead_rpc::timestamp(
                                chrono::Utc::now(),
                            )),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "DeleteTask" => code(
                    c.delete_task(h.request(
                        caller,
                        pb::DeleteTaskRequest {
                            task_id: task.id.clone(),
                            etag: String::new(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                other => panic!("no call for {other}"),
            };
            assert_eq!(got, *want, "{method} as {caller:?}");
        }
    }
}

// --- validation, statuses, etags, idempotency ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_are_all_reported_and_nothing_is_written() {
    let h = spawn_service().await;
    let org = h.org("acme").await;
    let fields = violated_fields(
        h.tasks
            .clone()
            .create_task(h.request(
                &org.member,
                pb::CreateTaskRequest {
                    title: " ".into(),
                    description: "x".repeat(10_001),
                    status: 42,
                    assignee_user_id: "someone".into(),
                    request_id: "has space".into(),
                },
            ))
            .await,
    );
    assert_eq!(
        fields,
        [
            "title",
            "description",
            "status",
            "assignee_user_id",
            "request_id"
        ]
    );
    let fields = violated_fields(
        h.tasks
            .clone()
            .bulk_update_task_status(h.request(
                &org.admin,
                pb::BulkUpdateTaskStatusRequest {
                    task_ids: vec!["x".into()],
                    status: 0,
                },
            ))
            .await,
    );
    assert_eq!(fields, ["task_ids[0]", "status"]);
    assert_eq!(
        violated_fields(
            h.tasks
                .clone()
                .bulk_update_task_status(h.request(
                    &org.admin,
                    pb::BulkUpdateTaskStatusRequest {
                        task_ids: (0..501).map(|_| uuid::Uuid::now_v7().to_string()).collect(),
                        status: pb::TaskStatus::Completed.into(),
                    },
                ))
                .await
        ),
        ["task_ids"]
    );
    assert_eq!(h.scalar("SELECT count(*) AS n FROM tasks").await, 0);
    assert_eq!(h.scalar("SELECT count(*) AS n FROM outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_move_only_along_the_lifecycle() {
    let h = spawn_service().await;
    let org = h.org("acme").await;
    let mut task = h.task(&org.member, "t").await;
    assert_eq!(status_of(&task), pb::TaskStatus::Pending);
    for (to, ok) in [
        (pb::TaskStatus::InProgress, true),
        (pb::TaskStatus::Completed, true),
        (pb::TaskStatus::InProgress, false),
        (pb::TaskStatus::Cancelled, false),
        (pb::TaskStatus::Pending, true), // an explicit reopen
    ] {
        let mut next = task.clone();
        next.status = to.into();
        match update(&h, &org.member, next, &["status"]).await {
            Ok(updated) if ok => task = updated,
            Err(status) if !ok => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
            other => panic!("{to:?}: {other:?}"),
        }
    }
    assert_eq!(status_of(&task), pb::TaskStatus::Pending);
}

/// 16 writers with the same etag: exactly one wins, the others are ABORTED;
/// 16 creates with the same request id: one task, one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_and_request_ids_hold_under_concurrency() {
    let h = std::sync::Arc::new(spawn_service().await);
    let org = h.org("acme").await;
    let task = h.task(&org.member, "contended").await;
    let mut writers = Vec::new();
    for i in 0..16 {
        let (h, caller, mut t) = (h.clone(), org.member.clone(), task.clone());
        t.title = format!("writer {i}");
        writers.push(tokio::spawn(async move {
            update(&h, &caller, t, &["title"]).await
        }));
    }
    let mut won = 0;
    for writer in writers {
        match writer.await.expect("join") {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert_eq!(won, 1, "one update per version");
    assert_eq!(h.events("task.updated").await, 1);

    let mut creators = Vec::new();
    for _ in 0..16 {
        let (h, caller) = (h.clone(), org.member.clone());
        creators.push(tokio::spawn(async move {
            h.tasks
                .clone()
                .create_task(h.request(
                    &caller,
                    pb::CreateTaskRequest {
                        title: "once".into(),
                        request_id: "retry-me".into(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("create")
                .into_inner()
                .task
                .expect("task")
                .id
        }));
    }
    let mut ids = HashSet::new();
    for creator in creators {
        ids.insert(creator.await.expect("join"));
    }
    assert_eq!(ids.len(), 1, "every retry answers the same task");
    assert_eq!(
        h.scalar("SELECT count(*) AS n FROM tasks WHERE title = 'once'")
            .await,
        1
    );
    assert_eq!(
        h.events("task.created").await,
        2,
        "the contended task and this one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_leaves_exactly_one_audit_event() {
    let h = spawn_service().await;
    let org = h.org("acme").await;
    let task = h.task(&org.member, "t").await;
    let mut edited = task.clone();
    edited.title = "renamed".into();
    let edited = update(&h, &org.member, edited, &["title"])
        .await
        .expect("update");
    h.tasks
        .clone()
        .bulk_update_task_status(h.request(
            &org.admin,
            pb::BulkUpdateTaskStatusRequest {
                task_ids: vec![task.id.clone()],
                status: pb::TaskStatus::Completed.into(),
            },
        ))
        .await
        .expect("bulk");
    let record = h
        .tasks
        .clone()
        .create_compliance_record(h.request(
            &org.member,
            pb::CreateComplianceRecordRequest {
                title: "c".into(),
                due_time: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                task_id: task.id.clone(),
            },
        ))
        .await
        .expect("record")
        .into_inner()
        .record
        .expect("record");
    let mut done = record.clone();
    done.status = pb::ComplianceStatus::Completed.into();
    h.tasks
        .clone()
        .update_compliance_record(h.request(
            &org.member,
            pb::UpdateComplianceRecordRequest {
                record: Some(done),
                update_mask: mask(&["status"]),
            },
        ))
        .await
        .expect("record update");
    h.tasks
        .clone()
        .delete_task(h.request(
            &org.admin,
            pb::DeleteTaskRequest {
                task_id: task.id.clone(),
                etag: edited.etag.clone(),
            },
        ))
        .await
        .expect_err("the bulk update changed the etag");
    h.tasks
        .clone()
        .delete_task(h.request(
            &org.admin,
            pb::DeleteTaskRequest {
                task_id: task.id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .expect("delete");
    for action in [
        "task.created",
        "task.updated",
        "task.bulk_status_updated",
        "compliance.created",
        "task.deleted",
    ] {
        assert_eq!(h.events(action).await, 1, "{action}");
    }
    // The record's own update, and its link cleared by the delete.
    assert_eq!(h.events("compliance.updated").await, 2);
    assert_eq!(
        h.scalar("SELECT count(*) AS n FROM outbox").await,
        7,
        "and nothing else"
    );
    assert_eq!(
        h.scalar(
            "SELECT count(*) AS n FROM compliance_records WHERE task_id IS NULL AND version = 3"
        )
        .await,
        1,
        "the cleared link is a new version"
    );
    let changed: serde_json::Value = {
        #[derive(diesel::QueryableByName)]
        struct P {
            #[diesel(sql_type = diesel::sql_types::Jsonb)]
            payload: serde_json::Value,
        }
        use diesel_async::RunQueryDsl as _;
        let mut conn = h.database.admin_connection().await;
        diesel::sql_query("SELECT payload FROM outbox WHERE payload->>'action' = 'task.updated'")
            .get_result::<P>(&mut conn)
            .await
            .expect("event")
            .payload
    };
    assert_eq!(changed["old_value"]["title"], "t", "{changed}");
    assert_eq!(changed["new_value"]["title"], "renamed", "{changed}");
    assert_eq!(
        h.scalar("SELECT count(*) AS n FROM compliance_records WHERE task_id IS NULL")
            .await,
        1,
        "the link went with the task"
    );
}

// --- assignees -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignees_are_members_checked_live_and_never_unchecked() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    let create = |assignee: &Caller| pb::CreateTaskRequest {
        title: "assigned".into(),
        assignee_user_id: assignee.user().user_id.to_string(),
        ..Default::default()
    };
    let ok = h
        .tasks
        .clone()
        .create_task(h.request(&a.member, create(&a.viewer)))
        .await
        .expect("a member");
    assert_eq!(
        ok.into_inner().task.expect("task").assignee_user_id,
        a.viewer.user().user_id.to_string()
    );
    let foreign = assert_code(
        h.tasks
            .clone()
            .create_task(h.request(&a.member, create(&b.viewer)))
            .await,
        Code::FailedPrecondition,
    );
    let unknown_user = Caller::User({
        let mut u = a.viewer.user().clone();
        u.user_id = bulkhead_context::UserId::new_v7();
        u
    });
    let unknown = assert_code(
        h.tasks
            .clone()
            .create_task(h.request(&a.member, create(&unknown_user)))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        foreign.message(),
        unknown.message(),
        "nothing said about who exists elsewhere"
    );

    let down = spawn_with(false, false).await;
    let org = down.org("acme").await;
    assert_code(
        down.tasks
            .clone()
            .create_task(down.request(&org.member, create(&org.viewer)))
            .await,
        Code::Unavailable,
    );
    assert_eq!(
        down.scalar("SELECT count(*) AS n FROM tasks").await,
        0,
        "never assigned unchecked"
    );
}

// --- pagination ----------------------------------------------------------------------

/// A walk through the pages returns every task that existed when it started
/// exactly once, while 16 writers insert more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_walk_sees_every_row_once_while_rows_are_inserted() {
    let h = std::sync::Arc::new(spawn_service().await);
    let org = h.org("acme").await;
    let tenant = &org.tenant.id;
    // Seeded with SQL (TESTING.md): 500 tasks.
    h.scalar(&format!(
        "WITH s AS (INSERT INTO tasks (tenant_id, id, title, status, created_by)
                    SELECT '{tenant}', gen_random_uuid(), 'seed ' || g, 'PENDING', '{tenant}'
                      FROM generate_series(1, 500) g RETURNING 1)
         SELECT count(*) AS n FROM s"
    ))
    .await;
    let before: HashSet<String> = {
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        use diesel_async::RunQueryDsl as _;
        let mut conn = h.database.admin_connection().await;
        diesel::sql_query("SELECT id::text AS id FROM tasks")
            .load::<Id>(&mut conn)
            .await
            .expect("ids")
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut writers = Vec::new();
    for _ in 0..16 {
        let (h, caller, stopped) = (h.clone(), org.member.clone(), stopped.clone());
        writers.push(tokio::spawn(async move {
            while !*stopped.borrow() {
                h.task(&caller, "concurrent").await;
            }
        }));
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &h,
            &org.viewer,
            pb::ListTasksRequest {
                page_size: 37,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("page");
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let _ = stop.send(true);
    for writer in writers {
        writer.await.expect("writer");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no task twice");
    for id in &before {
        assert!(
            unique.contains(id),
            "{id} existed before the walk and was not seen"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_belong_to_one_tenant_and_one_filter() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    for i in 0..3 {
        h.task(&a.member, &format!("a{i}")).await;
        h.task(&b.member, &format!("b{i}")).await;
    }
    let page = list(
        &h,
        &a.viewer,
        pb::ListTasksRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await
    .expect("page");
    let token = page.next_page_token;
    assert!(!token.is_empty());
    // B cannot use A's token, nor A with another filter; tampering is refused.
    assert_eq!(
        violated_fields(
            list(
                &h,
                &b.viewer,
                pb::ListTasksRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                }
            )
            .await
        ),
        ["page_token"]
    );
    assert_eq!(
        violated_fields(
            list(
                &h,
                &a.viewer,
                pb::ListTasksRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    status: pb::TaskStatus::Pending.into(),
                    ..Default::default()
                }
            )
            .await
        ),
        ["page_token"]
    );
    for tampered in [
        format!("{token}x"),
        token.chars().rev().collect(),
        "AAAA".into(),
        "!!!".into(),
    ] {
        assert_eq!(
            violated_fields(
                list(
                    &h,
                    &a.viewer,
                    pb::ListTasksRequest {
                        page_token: tampered,
                        ..Default::default()
                    }
                )
                .await
            ),
            ["page_token"]
        );
    }
    // Filters page too: only A's PENDING tasks, each once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &h,
            &a.viewer,
            pb::ListTasksRequest {
                page_size: 2,
                page_token: token.clone(),
                status: pb::TaskStatus::Pending.into(),
                ..Default::default()
            },
        )
        .await
        .expect("page");
        seen.extend(page.tasks.iter().map(|t| t.title.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["a2", "a1", "a0"], "newest first");
}

// --- compliance ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compliance_record_cannot_link_another_tenants_task() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    let b_task = h.task(&b.member, "B's").await;
    let due = Some(prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    });
    let refused = assert_code(
        h.tasks
            .clone()
            .create_compliance_record(h.request(
                &a.member,
                pb::CreateComplianceRecordRequest {
                    title: "c".into(),
                    due_time: due,
                    task_id: b_task.id.clone(),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    let unknown = assert_code(
        h.tasks
            .clone()
            .create_compliance_record(h.request(
                &a.member,
                pb::CreateComplianceRecordRequest {
                    title: "c".into(),
                    due_time: due,
                    task_id: uuid::Uuid::now_v7().to_string(),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(refused.message(), unknown.message());
    // Not just refused by code: the database cannot store it, even for the superuser.
    let mut admin = h.database.admin_connection().await;
    use diesel_async::RunQueryDsl as _;
    let stored = diesel::sql_query(format!(
        "INSERT INTO compliance_records (tenant_id, id, title, status, due_time, task_id)
         VALUES ('{}', gen_random_uuid(), 'forged', 'PENDING', now(), '{}')",
        a.tenant.id, b_task.id
    ))
    .execute(&mut admin)
    .await;
    assert!(stored.is_err(), "the compound foreign key refuses it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_lists_and_changes_only_its_own_compliance_records() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    let create = |caller: Caller, title: &'static str| {
        let mut tasks = h.tasks.clone();
        let request = h.request(
            &caller,
            pb::CreateComplianceRecordRequest {
                title: title.into(),
                due_time: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                task_id: String::new(),
            },
        );
        async move {
            tasks
                .create_compliance_record(request)
                .await
                .expect("record")
                .into_inner()
                .record
                .expect("record")
        }
    };
    let a_record = create(a.member.clone(), "A's record").await;
    let b_record = create(b.member.clone(), "B's record").await;

    let listed = h
        .tasks
        .clone()
        .list_compliance_records(h.request(&a.viewer, pb::ListComplianceRecordsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<&str> = listed.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [a_record.id.as_str()], "A sees only its own record");

    // Updating B's record from A is NOT_FOUND, like an id nobody has, and changes nothing.
    let update = |record: pb::ComplianceRecord| {
        let mut tasks = h.tasks.clone();
        let request = h.request(
            &a.owner,
            pb::UpdateComplianceRecordRequest {
                record: Some(record),
                update_mask: mask(&["title"]),
            },
        );
        async move { tasks.update_compliance_record(request).await }
    };
    let mut forged = b_record.clone();
    forged.title = "taken over".into();
    let stranger = assert_code(update(forged.clone()).await, Code::NotFound);
    forged.id = uuid::Uuid::now_v7().to_string();
    let nobody = assert_code(update(forged).await, Code::NotFound);
    assert_eq!(stranger.message(), nobody.message());
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) AS n FROM compliance_records WHERE id = '{}' AND title = 'B''s record' AND version = 1",
            b_record.id
        ))
        .await,
        1,
        "B's record is untouched (read as the superuser)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_records_read_overdue_and_count_in_analytics() {
    let h = spawn_service().await;
    let org = h.org("acme").await;
    let now = chrono::Utc::now().timestamp();
    for (title, due) in [
        ("past", now - 3600),
        ("future", now + 86_400),
        ("later", now + 2 * 86_400),
    ] {
        h.tasks
            .clone()
            .create_compliance_record(h.request(
                &org.member,
                pb::CreateComplianceRecordRequest {
                    title: title.into(),
                    due_time: Some(prost_types::Timestamp {
                        seconds: due,
                        nanos: 0,
                    }),
                    task_id: String::new(),
                },
            ))
            .await
            .expect("record");
    }
    let page = h
        .tasks
        .clone()
        .list_compliance_records(h.request(
            &org.viewer,
            pb::ListComplianceRecordsRequest {
                page_size: 2,
                page_token: String::new(),
            },
        ))
        .await
        .expect("list")
        .into_inner();
    let titles: Vec<&str> = page.records.iter().map(|r| r.title.as_str()).collect();
    assert_eq!(titles, ["past", "future"], "soonest due first");
    assert_eq!(
        page.records[0].status,
        i32::from(pb::ComplianceStatus::Overdue)
    );
    let rest = h
        .tasks
        .clone()
        .list_compliance_records(h.request(
            &org.viewer,
            pb::ListComplianceRecordsRequest {
                page_size: 2,
                page_token: page.next_page_token,
            },
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(rest.records.len(), 1);
    assert!(rest.next_page_token.is_empty());

    h.task(&org.member, "one").await;
    let analytics = h
        .tasks
        .clone()
        .get_task_analytics(h.request(&org.viewer, pb::GetTaskAnalyticsRequest { trend_days: 7 }))
        .await
        .expect("analytics")
        .into_inner();
    let compliance: Vec<(i32, i64)> = analytics
        .compliance_counts
        .iter()
        .map(|c| (c.status, c.count))
        .collect();
    assert_eq!(
        compliance,
        [
            (pb::ComplianceStatus::Pending.into(), 2),
            (pb::ComplianceStatus::Completed.into(), 0),
            (pb::ComplianceStatus::Overdue.into(), 1)
        ]
    );
    assert_eq!(analytics.trend.len(), 7);
    let today = analytics.trend.last().expect("today");
    assert_eq!(today.created_count, 1);
    assert_eq!(
        analytics.status_counts.len(),
        4,
        "every status, zeros included"
    );
}

// --- indexes ---------------------------------------------------------------------------

/// Each query shape of the repository, over 20,000 tasks in 20 tenants, is an
/// index scan (EXPLAIN as the runtime role, with the tenant set as the service
/// sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_shape_uses_an_index() {
    let h = spawn_service().await;
    let tenant = uuid::Uuid::now_v7();
    let user = uuid::Uuid::now_v7();
    h.scalar(&format!(
        "WITH s AS (INSERT INTO tasks (tenant_id, id, title, status, assignee_id, created_by, create_time)
                    SELECT CASE WHEN g % 20 = 0 THEN '{tenant}'::uuid ELSE md5((g % 20)::text)::uuid END,
                           gen_random_uuid(), 't', (ARRAY['PENDING','IN_PROGRESS','COMPLETED','CANCELLED'])[1 + g % 4],
                           CASE WHEN g % 7 = 0 THEN '{user}'::uuid END, '{user}', now() - (g % 90) * interval '1 day'
                      FROM generate_series(1, 20000) g RETURNING 1)
         SELECT count(*) AS n FROM s"
    ))
    .await;
    h.scalar(&format!(
        "WITH s AS (INSERT INTO compliance_records (tenant_id, id, title, status, due_time)
                    SELECT CASE WHEN g % 20 = 0 THEN '{tenant}'::uuid ELSE md5((g % 20)::text)::uuid END,
                           gen_random_uuid(), 'c', 'PENDING', now() + (g % 90) * interval '1 day'
                      FROM generate_series(1, 20000) g RETURNING 1)
         SELECT count(*) AS n FROM s"
    ))
    .await;
    use diesel_async::SimpleAsyncConnection as _;
    let mut admin = h.database.admin_connection().await;
    admin
        .batch_execute("ANALYZE tasks; ANALYZE compliance_records")
        .await
        .expect("analyze");
    let shapes = [
        "SELECT * FROM tasks WHERE tenant_id = $T AND id = '00000000-0000-7000-8000-000000000000'",
        "SELECT * FROM tasks WHERE tenant_id = $T AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff' ORDER BY id DESC LIMIT 51",
        "SELECT * FROM tasks WHERE tenant_id = $T AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND status = 'PENDING' ORDER BY id DESC LIMIT 51",
        "SELECT * FROM tasks WHERE tenant_id = $T AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND assignee_id = $U ORDER BY id DESC LIMIT 51",
        "SELECT * FROM tasks WHERE tenant_id = $T AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND assignee_id = $U AND status = 'PENDING' ORDER BY id DESC LIMIT 51",
        "SELECT status, count(*) FROM tasks WHERE tenant_id = $T GROUP BY status",
        "SELECT date_trunc('day', create_time, 'UTC'), status, count(*) FROM tasks WHERE tenant_id = $T AND create_time >= now() - interval '30 days' GROUP BY 1, 2",
        "SELECT * FROM compliance_records WHERE tenant_id = $T AND (due_time > now() OR (due_time = now() AND id > '00000000-0000-0000-0000-000000000000')) ORDER BY due_time, id LIMIT 51",
        "SELECT status, count(*) FROM compliance_records WHERE tenant_id = $T GROUP BY status",
    ];
    h.assert_indexed(tenant, user, &shapes).await;
}

// --- releases ------------------------------------------------------------------------

/// Only Tenant's service token may release assignments, and the platform role
/// can only clear assignees of open tasks, never set one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tenant_releases_and_the_platform_role_only_clears_assignees() {
    use diesel_async::RunQueryDsl as _;
    let h = spawn_service().await;
    let org = h.org("acme").await;
    let assigned = h
        .tasks
        .clone()
        .create_task(h.request(
            &org.member,
            pb::CreateTaskRequest {
                title: "assigned".into(),
                assignee_user_id: org.viewer.user().user_id.to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect("assigned")
        .into_inner()
        .task
        .expect("task");
    let release = release_of(&org, &org.viewer, chrono::Utc::now());
    let mut as_audit = tonic::Request::new(release.clone());
    let token = h.tokens.service_named("audit");
    as_audit.metadata_mut().insert(
        "x-service-authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    assert_code(
        h.tasks.clone().release_assignments(as_audit).await,
        Code::PermissionDenied,
    );
    assert!(
        !get(&h, &org.viewer, &assigned.id)
            .await
            .expect("get")
            .assignee_user_id
            .is_empty()
    );

    let mut admin = h.database.admin_connection().await;
    let forged = diesel::sql_query(format!(
        "DO $$ BEGIN SET LOCAL ROLE task_platform;
            UPDATE tasks SET assignee_id = gen_random_uuid() WHERE id = '{}'; END $$",
        assigned.id
    ))
    .execute(&mut admin)
    .await;
    assert!(forged.is_err(), "the platform role cannot assign anyone");

    let released = h
        .tasks
        .clone()
        .release_assignments(h.request(&Caller::Service, release))
        .await
        .expect("tenant releases")
        .into_inner()
        .released_count;
    assert_eq!(released, 1);
    assert!(
        get(&h, &org.viewer, &assigned.id)
            .await
            .expect("get")
            .assignee_user_id
            .is_empty()
    );
    assert_eq!(h.events("task.assignments_released").await, 1);
}

fn release_of(
    org: &helpers::Org,
    user: &Caller,
    ended_since: chrono::DateTime<chrono::Utc>,
) -> pb::ReleaseAssignmentsRequest {
    pb::ReleaseAssignmentsRequest {
        tenant_id: org.tenant.id.clone(),
        user_id: user.user().user_id.to_string(),
        membership_create_time: Some(bulkhead_rpc::timestamp(ended_since)),
    }
}

fn assign(task: &pb::Task, assignee: Option<&Caller>) -> pb::UpdateTaskRequest {
    pb::UpdateTaskRequest {
        task: Some(pb::Task {
            id: task.id.clone(),
            assignee_user_id: assignee.map_or_else(String::new, |a| a.user().user_id.to_string()),
            ..Default::default()
        }),
        update_mask: mask(&["assignee_user_id"]),
    }
}

async fn release(h: &Harness, request: pb::ReleaseAssignmentsRequest) -> i32 {
    h.tasks
        .clone()
        .release_assignments(h.request(&Caller::Service, request))
        .await
        .expect("tenant releases")
        .into_inner()
        .released_count
}

/// A removal Task hears of after Tenant vouched for the assignee, but before
/// the write, refuses the write; a user who re-joins may be assigned again, and
/// a late copy of the old removal leaves their new assignments alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_heard_before_the_write_refuses_the_assignee_and_a_rejoin_counts() {
    let h = spawn_service().await;
    let org = h.org("acme").await;
    let task = h.task(&org.member, "to assign").await;
    let before_rejoin = chrono::Utc::now();

    // Tenant still says "member" (its removal is later than the membership it
    // shows): the state between the check and the write of a racing update.
    assert_eq!(
        release(&h, release_of(&org, &org.viewer, chrono::Utc::now())).await,
        0
    );
    let refused = assert_code(
        h.tasks
            .clone()
            .update_task(h.request(&org.member, assign(&task, Some(&org.viewer))))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        refused.message(),
        "the assignee must be a member of this tenant"
    );
    assert_code(
        h.tasks
            .clone()
            .create_task(h.request(
                &org.member,
                pb::CreateTaskRequest {
                    title: "assigned".into(),
                    assignee_user_id: org.viewer.user().user_id.to_string(),
                    ..Default::default()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        h.scalar("SELECT count(*) AS n FROM tasks WHERE assignee_id IS NOT NULL")
            .await,
        0
    );

    // They leave and re-join: a new membership, newer than the removal.
    let viewer_id = org.viewer.user().user_id.to_string();
    h.tenants
        .clone()
        .remove_member(h.request(
            &org.owner,
            bulkhead_proto::tenant::v1::RemoveMemberRequest {
                user_id: viewer_id.clone(),
            },
        ))
        .await
        .expect("removed");
    h.tenants
        .clone()
        .add_member(h.request(
            &org.owner,
            bulkhead_proto::tenant::v1::AddMemberRequest {
                user_id: viewer_id.clone(),
                role: bulkhead_proto::tenant::v1::TenantRole::Viewer.into(),
            },
        ))
        .await
        .expect("re-added");
    let assigned = h
        .tasks
        .clone()
        .update_task(h.request(&org.member, assign(&task, Some(&org.viewer))))
        .await
        .expect("a re-joined member is assigned")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(assigned.assignee_user_id, viewer_id);

    // A late copy of a removal from before the re-join releases nothing.
    assert_eq!(
        release(&h, release_of(&org, &org.viewer, before_rejoin)).await,
        0
    );
    assert_eq!(
        get(&h, &org.member, &task.id)
            .await
            .expect("get")
            .assignee_user_id,
        viewer_id
    );
}

/// 16 writers assign a member to their task over and over while Tenant removes
/// them and the release arrives: once the release is in, no task is left
/// assigned to them, whatever the interleaving, and each write either succeeded
/// or was refused as not a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_assignment_survives_a_removal_racing_the_writes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let h = Arc::new(spawn_service().await);
    let org = Arc::new(h.org("acme").await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for i in 0..16 {
        let task = h.task(&org.member, &format!("task {i}")).await;
        let (h, org, stop) = (h.clone(), org.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let (mut assigned, mut refused) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let outcome = h
                    .tasks
                    .clone()
                    .update_task(h.request(&org.member, assign(&task, Some(&org.viewer))))
                    .await;
                match outcome {
                    Ok(_) => assigned += 1,
                    Err(status) if status.code() == Code::FailedPrecondition => refused += 1,
                    Err(status) => panic!("unexpected {status:?}"),
                }
            }
            (assigned, refused)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The removal and its release land together (the outbox may deliver within
    // milliseconds): writes checked before either and committed after both,
    // and writes in between, all race them.
    let ended_since = chrono::Utc::now();
    let mut tenants = h.tenants.clone();
    let remove = tenants.remove_member(h.request(
        &org.owner,
        bulkhead_proto::tenant::v1::RemoveMemberRequest {
            user_id: org.viewer.user().user_id.to_string(),
        },
    ));
    let (removed, _) = tokio::join!(
        remove,
        release(&h, release_of(&org, &org.viewer, ended_since))
    );
    removed.expect("removed");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut assigned, mut refused) = (0, 0);
    for writer in writers {
        let (a, r) = writer.await.expect("writer");
        assigned += a;
        refused += r;
    }
    assert!(
        assigned > 0 && refused > 0,
        "{assigned} assigned, {refused} refused"
    );
    // Without the removal kept and the lock, a write checked before the removal
    // and committed after the release would survive here.
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) AS n FROM tasks WHERE assignee_id = '{}'",
            org.viewer.user().user_id
        ))
        .await,
        0
    );
}

/// A release skips closed tasks; reopening one (alone or in bulk) does not
/// bring back an assignee who left meanwhile, and one still a member stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_task_does_not_bring_back_an_assignee_who_left() {
    let h = spawn_service().await;
    let org = h.org("acme").await;
    let assigned_to = |who: &Caller| {
        let request = pb::CreateTaskRequest {
            title: "done".into(),
            assignee_user_id: who.user().user_id.to_string(),
            status: pb::TaskStatus::Completed.into(),
            ..Default::default()
        };
        let (mut tasks, request) = (h.tasks.clone(), h.request(&org.member, request));
        async move {
            tasks
                .create_task(request)
                .await
                .expect("created")
                .into_inner()
                .task
                .expect("task")
        }
    };
    let single = assigned_to(&org.viewer).await;
    let bulk = assigned_to(&org.viewer).await;
    let stays = assigned_to(&org.admin).await;
    assert_eq!(
        release(&h, release_of(&org, &org.viewer, chrono::Utc::now())).await,
        0
    );

    let reopened = h
        .tasks
        .clone()
        .update_task(h.request(
            &org.member,
            pb::UpdateTaskRequest {
                task: Some(pb::Task {
                    id: single.id.clone(),
                    status: pb::TaskStatus::Pending.into(),
                    ..Default::default()
                }),
                update_mask: mask(&["status"]),
            },
        ))
        .await
        .expect("reopened")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(status_of(&reopened), pb::TaskStatus::Pending);
    assert_eq!(
        reopened.assignee_user_id, "",
        "the departed assignee is dropped"
    );

    let moved = h
        .tasks
        .clone()
        .bulk_update_task_status(h.request(
            &org.admin,
            pb::BulkUpdateTaskStatusRequest {
                task_ids: vec![bulk.id.clone(), stays.id.clone()],
                status: pb::TaskStatus::Pending.into(),
            },
        ))
        .await
        .expect("bulk")
        .into_inner()
        .updated_task_ids;
    assert_eq!(moved.len(), 2);
    assert_eq!(
        get(&h, &org.member, &bulk.id)
            .await
            .expect("get")
            .assignee_user_id,
        ""
    );
    assert_eq!(
        get(&h, &org.member, &stays.id)
            .await
            .expect("get")
            .assignee_user_id,
        org.admin.user().user_id.to_string(),
        "a member still there keeps their task"
    );
}

//! SIGTERM during a stream of calls loses none that were accepted: `bulkhead
//! up` is stopped while clients keep creating tasks; up exits 0 within its
//! bounded drain, and after a restart every task whose creation was
//! acknowledged is there, and none whose call failed is (a failed call was
//! never accepted: UNAVAILABLE, or cancelled by the client's transport before
//! it was sent on a connection the server had closed).

use std::time::{Duration, Instant};

use bulkhead_proto::task::v1 as task;

use crate::up::start_up_with;

async fn login(host: &str, password: &str) -> String {
    crate::up::admin_login(host, password)
        .await
        .tokens
        .expect("tokens")
        .access_token
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_stream_of_calls_loses_none_that_were_accepted() {
    let work = tempfile::Builder::new()
        .prefix("bulkhead-drain")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let host = format!("127.0.4.{}", 2 + std::process::id() % 250);
    let up = start_up_with(work.path(), &host, &[], &[])
        .await
        .expect("up starts");
    let password = std::fs::read_to_string(work.path().join(".bulkhead/admin-password"))
        .expect("admin password");
    let token = login(&host, password.trim()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}:50053"))
        .expect("endpoint")
        .connect_lazy();

    // Eight clients create tasks back to back until the server is gone.
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        let mut tasks = task::task_service_client::TaskServiceClient::new(channel.clone());
        let token = token.clone();
        clients.spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0.. {
                let title = format!("client {client} task {n}");
                let outcome = tasks
                    .create_task(bulkhead_testkit::bearer(
                        &token,
                        task::CreateTaskRequest {
                            title: title.clone(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|r| r.into_inner().task.expect("task").id);
                let refused = outcome.is_err();
                outcomes.push((title, outcome));
                if refused {
                    break;
                }
            }
            outcomes
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopping = Instant::now();
    // Off the runtime's workers: the clients keep calling while up stops.
    tokio::task::spawn_blocking(move || up.stop())
        .await
        .expect("up stops cleanly");
    let stopped_in = stopping.elapsed();

    let (mut acknowledged, mut refusals) = (Vec::new(), Vec::new());
    while let Some(done) = clients.join_next().await {
        for (title, outcome) in done.expect("client") {
            match outcome {
                Ok(id) => acknowledged.push(id),
                Err(status) => refusals.push((title, status)),
            }
        }
    }
    assert!(
        acknowledged.len() >= 8,
        "the clients worked before the stop: {}",
        acknowledged.len()
    );
    for (_, status) in &refusals {
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled
            ),
            "a call the stopping server did not take is refused, never failed half-way: {status:?}"
        );
    }
    assert!(
        stopped_in < Duration::from_secs(30),
        "the drain is bounded: {stopped_in:?}"
    );

    // Every acknowledged creation survived the stop.
    let again = start_up_with(work.path(), &host, &[], &[])
        .await
        .expect("up starts again");
    let token = login(&host, password.trim()).await;
    let mut tasks = task::task_service_client::TaskServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{host}:50053"))
            .expect("endpoint")
            .connect_lazy(),
    );
    let mut stored = std::collections::BTreeSet::new();
    let mut titles = std::collections::BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = tasks
            .list_tasks(bulkhead_testkit::bearer(
                &token,
                task::ListTasksRequest {
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner();
        for stored_task in page.tasks {
            stored.insert(stored_task.id);
            titles.insert(stored_task.title);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged tasks are missing: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    let half_done: Vec<&String> = refusals
        .iter()
        .map(|(title, _)| title)
        .filter(|title| titles.contains(*title))
        .collect();
    assert!(
        half_done.is_empty(),
        "calls reported as failed were carried out: {half_done:?}"
    );
    again.stop();
}

//! Postgres crashes under load (issue #13, item 4a), on a private cluster
//! this test kills: the Tenant service takes a steady stream of AddMember
//! calls; Postgres is stopped with SIGQUIT (what `pg_ctl stop -m immediate`
//! sends: no checkpoint, crash recovery on the next start) and started
//! again. The history of every call (invoked, then ok, failed or unknown) is
//! checked afterwards: the service reported NOT_SERVING while Postgres was
//! gone and SERVING again by itself, calls succeed again without a restart of
//! the service, and every acknowledged write is there.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bulkhead::services::ServiceKind;
use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_proto::tenant::v1 as pb;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use bulkhead_testkit::Caller;

use crate::health::{PrivateTenant, private_tenant, start_cluster};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn serving(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> bool {
    health
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// One call's outcome: acknowledged, refused (it did not happen), or
/// unknown (it may have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Unknown,
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines, reason = "one scenario, in order")]
async fn postgres_killed_under_load_loses_no_acknowledged_write() {
    let PrivateTenant {
        dir: _dir,
        root,
        cluster,
        url,
        tokens,
        stop,
        started,
    } = private_tenant("bulkhead-crash").await;
    let kind = ServiceKind::Tenant;
    let channel = bulkhead_testkit::channel(&url);
    let mut tenants = TenantServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel.clone());
    let service = kind.grpc_name();

    // A tenant and its owner (tokens minted with the guard's key).
    let operator = TenantUser {
        user_id: UserId::new_v7(),
        session_id: SessionId::new_v7(),
        tenant_id: TenantId::new_v7(),
        tenant_slug: "ops".into(),
        tenant_role: TenantRole::Viewer,
        platform_role: PlatformRole::SuperAdmin,
    };
    let owner_id = UserId::new_v7();
    let created = tenants
        .create_tenant(tokens.request(
            &Caller::User(operator),
            pb::CreateTenantRequest {
                slug: "crash".into(),
                name: "Crash".into(),
                domain: String::new(),
                owner_user_id: owner_id.to_string(),
            },
        ))
        .await
        .expect("tenant")
        .into_inner()
        .tenant
        .expect("tenant");
    let owner = Caller::User(TenantUser {
        user_id: owner_id,
        session_id: SessionId::new_v7(),
        tenant_id: created.id.parse().expect("id"),
        tenant_slug: "crash".into(),
        tenant_role: TenantRole::Owner,
        platform_role: PlatformRole::User,
    });

    // The load: an AddMember every 20 ms for 20 s, open loop, 2 s deadline each.
    let load = {
        let (tenants, tokens, owner) = (tenants.clone(), tokens.clone(), owner.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut calls = tokio::task::JoinSet::new();
            for n in 0..1000_u32 {
                tokio::time::sleep_until(start + Duration::from_millis(20) * n).await;
                let (mut tenants, tokens, owner) = (tenants.clone(), tokens.clone(), owner.clone());
                calls.spawn(async move {
                    let user = UserId::new_v7().to_string();
                    let mut request = tokens.request(
                        &owner,
                        pb::AddMemberRequest {
                            user_id: user.clone(),
                            role: pb::TenantRole::Member.into(),
                        },
                    );
                    request.set_timeout(Duration::from_secs(2));
                    let at = start.elapsed();
                    let answer = tenants.add_member(request).await;
                    let code = answer.as_ref().err().map(tonic::Status::code);
                    let outcome = match code {
                        None => Outcome::Ok,
                        // Refused by the guard before any work: the
                        // tenant's calls in flight were all waiting.
                        Some(Code::ResourceExhausted) => Outcome::Failed,
                        // A deadline, or a connection that died under the
                        // call: it may or may not have committed.
                        Some(_) => Outcome::Unknown,
                    };
                    (user, at, outcome, code)
                });
            }
            calls.join_all().await
        })
    };

    // Four seconds in, Postgres is killed; it stays down six seconds (health
    // asks the database every second, and waits two for an answer).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pid = cluster.postmaster_pid().expect("postmaster pid");
    let killed_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGQUIT,
    )
    .expect("SIGQUIT");
    let mut saw_not_serving = false;
    while killed_at.elapsed() < Duration::from_secs(6) {
        saw_not_serving |= !serving(&mut health, service).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_not_serving, "NOT_SERVING while Postgres is gone");
    drop(cluster);
    let _cluster = start_cluster(root).await;
    let restarted_at = killed_at.elapsed();
    let back = Instant::now();
    while !serving(&mut health, service).await {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "SERVING again within 20 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let serving_after = back.elapsed();

    let history = load.await.expect("load");
    let count = |o: Outcome| history.iter().filter(|(_, _, h, _)| *h == o).count();
    let mut members = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = tenants
            .list_members(tokens.request(
                &owner,
                pb::ListMembersRequest {
                    page_size: 100,
                    page_token,
                    ..Default::default()
                },
            ))
            .await
            .expect("list members")
            .into_inner();
        members.extend(page.memberships.into_iter().map(|m| m.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let lost: Vec<&String> = history
        .iter()
        .filter(|(user, _, outcome, _)| *outcome == Outcome::Ok && !members.contains(user))
        .map(|(user, _, _, _)| user)
        .collect();
    let failed_but_stored = history
        .iter()
        .filter(|(user, _, outcome, _)| *outcome == Outcome::Failed && members.contains(user))
        .count();
    let unknown_stored = history
        .iter()
        .filter(|(user, _, outcome, _)| *outcome == Outcome::Unknown && members.contains(user))
        .count();
    let recovered = history
        .iter()
        .filter(|(_, at, outcome, _)| {
            *outcome == Outcome::Ok && *at > Duration::from_secs(4) + restarted_at + serving_after
        })
        .count();
    let mut codes = std::collections::BTreeMap::new();
    for (_, _, _, code) in &history {
        if let Some(code) = code {
            *codes.entry(format!("{code:?}")).or_insert(0) += 1;
        }
    }
    println!(
        "{} calls: {} ok, {} failed, {} unknown ({unknown_stored} of them stored; errors {codes:?}); \
         Postgres down {restarted_at:?}, SERVING {serving_after:?} after its restart; \
         {recovered} calls ok after that; acknowledged writes lost: {}",
        history.len(),
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::Unknown),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(
        failed_but_stored, 0,
        "a call refused by the guard wrote nothing"
    );
    assert!(
        count(Outcome::Failed) + count(Outcome::Unknown) > 0,
        "the crash was felt"
    );
    assert!(
        recovered > 50,
        "calls succeed again by themselves: {recovered}"
    );
    stop.send(true).expect("stop");
    started.wait().await.expect("stopped cleanly");
}

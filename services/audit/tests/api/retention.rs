//! Retention: only the retention job's role deletes, only a prefix covered by
//! a signed prune, and what remains stays verifiable from that prune on.

use std::sync::Arc;
use std::time::Duration;

use bulkhead_audit::Notary;
use bulkhead_audit::retention::{self, Pruned};
use bulkhead_context::{TenantId, TenantRole};
use bulkhead_db::{Db, PoolConfig};
use bulkhead_guard::token::SigningKey;
use bulkhead_proto::audit::v1 as pb;
use diesel_async::SimpleAsyncConnection as _;

use crate::{Harness, event, spawn_with};

async fn with_key() -> (Harness, Notary) {
    let key = Arc::new(SigningKey::generate());
    let h = spawn_with(bulkhead_audit::AuditModule::new(
        Some(key.clone()),
        Duration::from_secs(3600),
    ))
    .await;
    (h, Notary::new(key))
}

impl Harness {
    fn retention_url(&self) -> String {
        self.database.job_urls["audit_retention"].clone()
    }

    async fn retention_db(&self) -> Db {
        let url = self.retention_url();
        let config = PoolConfig::default();
        Db::connect(&url, &config)
            .await
            .expect("retention role connects")
            .with_platform(&url, &config)
            .await
            .expect("retention role connects")
    }

    async fn count(&self, tenant: TenantId) -> usize {
        self.sequences(tenant).await.len()
    }

    /// Makes the tenant's events up to `through` look received 400 days ago
    /// (receive_time is not hashed).
    async fn age(&self, tenant: TenantId, through: i64) {
        self.sql(&format!(
            "ALTER TABLE events DISABLE TRIGGER events_append_only;
             UPDATE events SET receive_time = now() - interval '400 days'
              WHERE tenant_id = '{tenant}' AND sequence <= {through};
             ALTER TABLE events ENABLE TRIGGER events_append_only;"
        ))
        .await;
    }

    async fn export(&self, tenant: TenantId) -> Vec<pb::ExportEventsResponse> {
        let mut stream = self
            .client
            .clone()
            .export_events(self.as_user(
                tenant,
                TenantRole::Owner,
                pb::ExportEventsRequest::default(),
            ))
            .await
            .expect("export")
            .into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await.expect("message") {
            messages.push(message);
        }
        messages
    }
}

async fn refused(url: &str, statement: &str) -> String {
    let mut conn =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(url)
            .await
            .expect("connect");
    match conn.batch_execute(statement).await {
        Ok(()) => panic!("{statement} was allowed at {url}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_retention_job_deletes_and_only_a_signed_prefix() {
    let (h, notary) = with_key().await;
    let (a, b) = (TenantId::new_v7(), TenantId::new_v7());
    h.append((0..5).map(|_| event(a, "task.created")).collect())
        .await
        .expect("append");
    h.append((0..3).map(|_| event(b, "task.created")).collect())
        .await
        .expect("append");
    h.age(a, 3).await;
    h.age(b, 3).await;

    // Every other role is refused (the owner, under forced RLS with no
    // policy of its own, sees no row to delete; with the trigger it could not
    // either); the job itself may delete nothing no prune covers, and may
    // change nothing.
    let delete = format!("DELETE FROM events WHERE tenant_id = '{a}' AND sequence = 1");
    let db = &h.database;
    let mut owner = db.owner_connection().await;
    owner.batch_execute(&delete).await.expect("deletes nothing");
    assert!(
        refused(
            &db.owner_url,
            "ALTER TABLE events NO FORCE ROW LEVEL SECURITY; DELETE FROM events"
        )
        .await
        .contains("append-only")
    );
    assert!(
        refused(&db.platform_url, &delete)
            .await
            .contains("permission denied")
    );
    assert!(
        refused(&db.app_url, &delete)
            .await
            .contains("permission denied")
    );
    // receive_time, which retention goes by, is Audit's clock: the appending
    // role cannot set it (say, to keep an event forever, or to age one).
    let backdated = format!(
        "INSERT INTO events (tenant_id, sequence, id, source_service, action, occur_time,
                             receive_time, prev_hash, hash)
         VALUES ('{b}', 99, gen_random_uuid(), 'task', 'x', now(), 'infinity', '\\x00', '\\x00')"
    );
    assert!(
        refused(&db.platform_url, &backdated)
            .await
            .contains("permission denied")
    );
    assert!(
        refused(&h.retention_url(), &delete)
            .await
            .contains("append-only")
    );
    let update = format!("UPDATE events SET action = 'x' WHERE tenant_id = '{a}'");
    assert!(
        refused(&h.retention_url(), &update)
            .await
            .contains("permission denied")
    );
    let forged_prune = format!(
        "SET ROLE audit_platform; INSERT INTO prunes (tenant_id, sequence, hash, jws, deleted_count) VALUES ('{a}', 5, '\\x00', 'x', 5)"
    );
    assert!(
        refused(&h.retention_url(), &forged_prune)
            .await
            .contains("permission denied")
    );
    assert_eq!(h.count(a).await, 5);

    // b keeps its events 1000 days; a gets the default, 365.
    let job = h.retention_db().await;
    // Periods are the platform role's to set (recorded in the trail); the
    // job's login cannot shorten one.
    assert!(retention::set_period(&job, b, 1).await.is_err());
    let platform = h.database.app_db(2).await;
    retention::set_period(&platform, b, 1000)
        .await
        .expect("period");
    let now = chrono::Utc::now();
    let planned = retention::prune(&job, &notary, 365, now, true)
        .await
        .expect("dry run");
    assert_eq!(
        planned,
        vec![Pruned {
            tenant_id: *a.as_uuid(),
            through: 3,
            deleted: 3
        }]
    );
    assert_eq!(h.count(a).await, 5, "a dry run deletes nothing");
    let pruned = retention::prune(&job, &notary, 365, now, false)
        .await
        .expect("prune");
    assert_eq!(pruned, planned);
    let left: Vec<i64> = h.sequences(a).await.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(left, vec![4, 5]);
    assert_eq!(
        h.count(b).await,
        4,
        "b's period keeps its events (and the record of the period, in its trail)"
    );
    let recorded = h
        .query(
            b,
            pb::QueryEventsRequest {
                filter: Some(pb::AuditEventFilter {
                    action: "audit.retention_set".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("query");
    assert_eq!(recorded.events.len(), 1);
    assert!(
        retention::prune(&job, &notary, 365, now, false)
            .await
            .expect("again")
            .is_empty(),
        "nothing more to prune"
    );

    // The rest verifies from the prune's signed checkpoint.
    let verified = h.verify(a).await;
    assert!(verified.ok, "{}", verified.detail);
    assert_eq!(verified.checked_count, 2);
    let start = verified.pruned_through.expect("pruned");
    assert_eq!(start.sequence, 3);
    assert!(notary.verify(&start.jws).is_some());
    assert!(h.verify(b).await.pruned_through.is_none());
    // An export starts with it, then events 4 onwards.
    let export = h.export(a).await;
    assert_eq!(
        export[0].pruned_through.as_ref().map(|c| c.sequence),
        Some(3)
    );
    assert!(export[0].events.is_empty());
    let first = export
        .iter()
        .flat_map(|m| &m.events)
        .next()
        .expect("events");
    assert_eq!(
        (first.sequence, first.prev_hash.as_str()),
        (4, start.hash.as_str())
    );

    // A prune record altered, or removed with the events it covered, is found.
    h.sql(&format!(
        "ALTER TABLE prunes DISABLE TRIGGER prunes_append_only;
         UPDATE prunes SET hash = '\\x00' WHERE tenant_id = '{a}';
         ALTER TABLE prunes ENABLE TRIGGER prunes_append_only;"
    ))
    .await;
    let verified = h.verify(a).await;
    assert!(!verified.ok);
    assert!(
        verified.detail.contains("prune does not verify"),
        "{}",
        verified.detail
    );
    h.sql(&format!(
        "ALTER TABLE prunes DISABLE TRIGGER prunes_append_only;
         DELETE FROM prunes WHERE tenant_id = '{a}';
         ALTER TABLE prunes ENABLE TRIGGER prunes_append_only;"
    ))
    .await;
    let verified = h.verify(a).await;
    assert!(!verified.ok);
    assert!(
        verified.detail.contains("event 1 is missing"),
        "{}",
        verified.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_during_appends_and_beside_another_prune_keeps_the_chain_whole() {
    let (h, notary) = with_key().await;
    let a = TenantId::new_v7();
    h.append((0..10).map(|_| event(a, "task.created")).collect())
        .await
        .expect("append");
    h.age(a, 10).await;
    let job = h.retention_db().await;
    // Two prunes of everything received a year ago, beside four appenders
    // (16 tasks in all): each event is pruned whole or kept whole, and the
    // events appended meanwhile are never pruned.
    let h = Arc::new(h);
    let mut appenders = Vec::new();
    for _ in 0..4 {
        let h = Arc::clone(&h);
        appenders.push(tokio::spawn(async move {
            for _ in 0..10 {
                h.append(vec![event(a, "task.updated")])
                    .await
                    .expect("append");
            }
        }));
    }
    let now = chrono::Utc::now();
    let prunes: Vec<_> = (0..12)
        .map(|_| {
            let (job, notary) = (job.clone(), notary.clone());
            tokio::spawn(async move { retention::prune(&job, &notary, 365, now, false).await })
        })
        .collect();
    let mut pruned = Vec::new();
    for prune in prunes {
        pruned.extend(prune.await.expect("task").expect("prune"));
    }
    for appender in appenders {
        appender.await.expect("appender");
    }
    assert_eq!(
        pruned,
        vec![Pruned {
            tenant_id: *a.as_uuid(),
            through: 10,
            deleted: 10
        }],
        "one prune did it, the others found nothing left"
    );
    let left: Vec<i64> = h.sequences(a).await.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(left, (11..=50).collect::<Vec<_>>());
    let verified = h.verify(a).await;
    assert!(verified.ok, "{}", verified.detail);
    assert_eq!(verified.pruned_through.map(|c| c.sequence), Some(10));
    // Everything pruned, then a new event: the chain goes on from the head.
    h.age(a, 50).await;
    retention::prune(&job, &notary, 365, now, false)
        .await
        .expect("prune all");
    assert_eq!(h.count(a).await, 0);
    assert!(h.verify(a).await.ok);
    h.append(vec![event(a, "task.created")])
        .await
        .expect("append");
    let verified = h.verify(a).await;
    assert!(verified.ok, "{}", verified.detail);
    assert_eq!(verified.checked_count, 1);
    // A prune as of a time to come is refused (a dry run may look ahead).
    let later = now + chrono::Duration::days(400);
    assert!(
        retention::prune(&job, &notary, 365, later, false)
            .await
            .is_err()
    );
    assert_eq!(
        retention::prune(&job, &notary, 365, later, true)
            .await
            .expect("look ahead")
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_role_alone_cannot_delete_recent_middle_or_uncovered_events() {
    let (h, notary) = with_key().await;
    let a = TenantId::new_v7();
    h.append((0..8).map(|_| event(a, "task.created")).collect())
        .await
        .expect("append");
    let checkpoint = h.checkpoint(a).await;
    let retention_url = h.retention_url();
    // A checkpoint copied into prunes, then a recent middle event deleted:
    // the deletion is refused (too recent), and the prune record alone cannot
    // commit while the events it covers remain.
    let copied = format!(
        "INSERT INTO prunes (tenant_id, sequence, hash, jws, deleted_count)
           SELECT tenant_id, sequence, hash, jws, 1 FROM checkpoints
            WHERE tenant_id = '{a}' AND sequence = 8;"
    );
    let err = refused(
        &retention_url,
        &format!("{copied} DELETE FROM events WHERE tenant_id = '{a}' AND sequence = 7;"),
    )
    .await;
    assert!(err.contains("append-only"), "{err}");
    assert!(
        refused(&retention_url, &copied)
            .await
            .contains("every event up to its own")
    );
    // Old events: a middle one alone still cannot go (the whole prefix must).
    h.age(a, 8).await;
    let err = refused(
        &retention_url,
        &format!(
            "BEGIN; {copied} DELETE FROM events WHERE tenant_id = '{a}' AND sequence = 7; COMMIT;"
        ),
    )
    .await;
    assert!(err.contains("every event up to its own"), "{err}");
    // A record naming another hash, or moving the start back, is refused.
    let err = refused(
        &retention_url,
        &format!(
            "INSERT INTO prunes (tenant_id, sequence, hash, jws, deleted_count)
             VALUES ('{a}', 3, '\\x00', 'x', 0)"
        ),
    )
    .await;
    assert!(err.contains("stored hash"), "{err}");
    assert_eq!(h.count(a).await, 8);
    // A whole old prefix under a copied checkpoint (not a prune signature)
    // can be deleted by the role — and VerifyChain finds the record is no
    // prune.
    let mut conn = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(
        &retention_url,
    )
    .await
    .expect("connect");
    conn.batch_execute(&format!(
        "BEGIN; {copied} DELETE FROM events WHERE tenant_id = '{a}' AND sequence <= 8; COMMIT;"
    ))
    .await
    .expect("an old prefix goes");
    let verified = h.verify(a).await;
    assert!(
        !verified.ok,
        "a checkpoint passed off as a prune: {verified:?}"
    );
    assert!(
        verified.detail.contains("prune does not verify"),
        "{}",
        verified.detail
    );
    let _ = (checkpoint, notary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_checkpoint_key_keeps_old_checkpoints_checkable() {
    let (h, old) = with_key().await;
    let tenant = TenantId::new_v7();
    h.append((0..3).map(|_| event(tenant, "task.created")).collect())
        .await
        .expect("append");
    let kept = h.checkpoint(tenant).await;
    // Audit restarted with a new key, the old one retired: the stored and the
    // kept checkpoints still verify, and both keys are published.
    let new = Arc::new(SigningKey::generate());
    let old_jwk: serde_json::Value = serde_json::from_str::<serde_json::Value>(&old.jwks_json())
        .expect("json")["keys"][0]
        .clone();
    let rotated = bulkhead_audit::AuditModule::new(Some(new.clone()), Duration::from_secs(3600))
        .with_retired_keys(vec![old_jwk]);
    let url = bulkhead_testkit::start_module(
        &rotated,
        &h.database,
        &h.guard,
        bulkhead_server::Peers::default(),
        None,
    )
    .await;
    let after = Harness {
        client: bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient::new(
            bulkhead_testkit::channel(&url),
        ),
        tokens: h.tokens.clone(),
        database: h.database.clone(),
        guard: h.guard.clone(),
    };
    let verified = after
        .verify_with(tenant, kept.jws.clone())
        .await
        .expect("verify");
    assert!(verified.ok, "{}", verified.detail);
    let fresh = after.checkpoint(tenant).await;
    assert_eq!(
        jsonwebtoken::decode_header(&fresh.jws)
            .expect("jws")
            .kid
            .as_deref(),
        Some(new.kid()),
        "new checkpoints are signed with the new key"
    );
    let keys = after
        .client
        .clone()
        .get_checkpoint_keys(pb::GetCheckpointKeysRequest {})
        .await
        .expect("keys")
        .into_inner()
        .jwks_json;
    let keys: serde_json::Value = serde_json::from_str(&keys).expect("json");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2));

    // Without the retired key, the old checkpoints no longer verify: the
    // rotation must keep it.
    let forgetful = bulkhead_audit::AuditModule::new(Some(new), Duration::from_secs(3600));
    let url = bulkhead_testkit::start_module(
        &forgetful,
        &h.database,
        &h.guard,
        bulkhead_server::Peers::default(),
        None,
    )
    .await;
    let forgot = Harness {
        client: bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient::new(
            bulkhead_testkit::channel(&url),
        ),
        tokens: h.tokens.clone(),
        database: h.database.clone(),
        guard: h.guard.clone(),
    };
    let refused = forgot
        .verify_with(tenant, kept.jws)
        .await
        .expect_err("unknown key");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_time_zone_does_not_move_the_one_day_floor() {
    let (h, _notary) = with_key().await;
    let a = TenantId::new_v7();
    h.append((0..3).map(|_| event(a, "task.created")).collect())
        .await
        .expect("append");
    // A zone with a 24-hour daylight-saving jump made "a day ago" lie in the
    // future under calendar arithmetic.
    let err = refused(
        &h.retention_url(),
        &format!(
            "BEGIN;
             SET LOCAL TIME ZONE 'AAA+24BBB-24,334/12,354/0';
             INSERT INTO prunes (tenant_id, sequence, hash, jws, deleted_count)
               SELECT tenant_id, sequence, hash, 'x', 0 FROM events
                WHERE tenant_id = '{a}' AND sequence = 3;
             DELETE FROM events WHERE tenant_id = '{a}' AND sequence <= 3;
             COMMIT;"
        ),
    )
    .await;
    assert!(err.contains("append-only"), "{err}");
    assert_eq!(h.count(a).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_never_builds_on_a_prune_it_wrote_alone() {
    let (h, notary) = with_key().await;
    let a = TenantId::new_v7();
    h.append((0..6).map(|_| event(a, "task.created")).collect())
        .await
        .expect("append");
    h.age(a, 6).await;
    // The job's login alone: an old prefix deleted under an unsigned record.
    let mut conn = <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(
        &h.retention_url(),
    )
    .await
    .expect("connect");
    conn.batch_execute(&format!(
        "BEGIN;
         INSERT INTO prunes (tenant_id, sequence, hash, jws, deleted_count)
           SELECT tenant_id, sequence, hash, 'unsigned', 0 FROM events
            WHERE tenant_id = '{a}' AND sequence = 3;
         DELETE FROM events WHERE tenant_id = '{a}' AND sequence <= 3;
         COMMIT;"
    ))
    .await
    .expect("the role can do this much");
    assert!(
        !h.verify(a).await.ok,
        "VerifyChain reports the unsigned prune"
    );
    // The next real prune refuses to cover it with a signature.
    let job = h.retention_db().await;
    let refused = retention::prune(&job, &notary, 365, chrono::Utc::now(), false)
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("not one Audit signed"),
        "{refused}"
    );
    assert!(!h.verify(a).await.ok, "still reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_after_a_key_rotation_builds_on_the_one_before() {
    let (h, old) = with_key().await;
    let a = TenantId::new_v7();
    h.append((0..6).map(|_| event(a, "task.created")).collect())
        .await
        .expect("append");
    h.age(a, 3).await;
    let job = h.retention_db().await;
    let now = chrono::Utc::now();
    retention::prune(&job, &old, 365, now, false)
        .await
        .expect("first prune");
    h.age(a, 6).await;
    // The key rotated since: the job signs with the new key and checks the
    // earlier prune with the retired one.
    let old_jwk: serde_json::Value = serde_json::from_str::<serde_json::Value>(&old.jwks_json())
        .expect("json")["keys"][0]
        .clone();
    let rotated = Notary::with_retired(Arc::new(SigningKey::generate()), &[old_jwk]).expect("key");
    let pruned = retention::prune(&job, &rotated, 365, now, false)
        .await
        .expect("second prune");
    assert_eq!(
        pruned.iter().map(|p| p.through).collect::<Vec<_>>(),
        vec![6]
    );
    // Without the retired key the earlier prune cannot be checked: refused.
    h.append(vec![event(a, "task.created")])
        .await
        .expect("append");
    h.age(a, 7).await;
    let forgetful = Notary::new(Arc::new(SigningKey::generate()));
    assert!(
        retention::prune(&job, &forgetful, 365, now, false)
            .await
            .is_err()
    );
}

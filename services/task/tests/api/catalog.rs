//! The catalog (`CatalogService`) on real sockets and a real Postgres: slugs
//! unique per tenant, another tenant's services, requests and bookings
//! NOT_FOUND through every RPC, compound foreign keys the database enforces,
//! confirmations that cannot overlap under concurrency, the role matrix, the
//! lifecycles, and one audit event per mutation.

use bulkhead_context::TenantId;
use bulkhead_proto::task::v1 as pb;
use chrono::{DateTime, Duration, DurationRound as _, Utc};
use diesel_async::RunQueryDsl as _;
use tonic::Code;

use crate::helpers::{Caller, Harness, Org, assert_code, mask, spawn_service, violated_fields};

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(bulkhead_rpc::timestamp(t))
}

/// A whole hour some days from now: slots that never start in the past.
fn later(days: i64) -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(Duration::hours(1)).unwrap_or(now) + Duration::days(days)
}

fn service_message(slug: &str) -> pb::Service {
    pb::Service {
        slug: slug.into(),
        name: format!("The {slug}"),
        duration_minutes: 30,
        price_minor_units: 2500,
        currency_code: "EUR".into(),
        ..Default::default()
    }
}

impl Harness {
    async fn create_service(
        &self,
        caller: &Caller,
        slug: &str,
    ) -> Result<pb::Service, tonic::Status> {
        self.catalog
            .clone()
            .create_service(self.request(
                caller,
                pb::CreateServiceRequest {
                    service: Some(service_message(slug)),
                },
            ))
            .await
            .map(|r| r.into_inner().service.expect("service"))
    }

    async fn service(&self, caller: &Caller, slug: &str) -> pb::Service {
        self.create_service(caller, slug)
            .await
            .expect("create service")
    }

    async fn get_service(
        &self,
        caller: &Caller,
        key: pb::get_service_request::Key,
    ) -> Result<pb::Service, tonic::Status> {
        self.catalog
            .clone()
            .get_service(self.request(caller, pb::GetServiceRequest { key: Some(key) }))
            .await
            .map(|r| r.into_inner().service.expect("service"))
    }

    async fn request_service(
        &self,
        caller: &Caller,
        service_id: &str,
    ) -> Result<pb::ServiceRequest, tonic::Status> {
        self.catalog
            .clone()
            .create_service_request(self.request(
                caller,
                pb::CreateServiceRequestRequest {
                    service_id: service_id.into(),
                    details: "please".into(),
                },
            ))
            .await
            .map(|r| r.into_inner().service_request.expect("request"))
    }

    async fn book(
        &self,
        caller: &Caller,
        service_id: &str,
        start: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
    ) -> Result<pb::Booking, tonic::Status> {
        self.catalog
            .clone()
            .create_booking(self.request(
                caller,
                pb::CreateBookingRequest {
                    service_id: service_id.into(),
                    start_time: ts(start),
                    end_time: end.and_then(ts),
                },
            ))
            .await
            .map(|r| r.into_inner().booking.expect("booking"))
    }

    async fn confirm(
        &self,
        caller: &Caller,
        booking_id: &str,
    ) -> Result<pb::Booking, tonic::Status> {
        self.catalog
            .clone()
            .confirm_booking(self.request(
                caller,
                pb::ConfirmBookingRequest {
                    booking_id: booking_id.into(),
                    etag: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner().booking.expect("booking"))
    }

    async fn cancel(
        &self,
        caller: &Caller,
        booking_id: &str,
    ) -> Result<pb::Booking, tonic::Status> {
        self.catalog
            .clone()
            .cancel_booking(self.request(
                caller,
                pb::CancelBookingRequest {
                    booking_id: booking_id.into(),
                    etag: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner().booking.expect("booking"))
    }

    async fn update_request(
        &self,
        caller: &Caller,
        request: &pb::ServiceRequest,
        status: Option<pb::ServiceRequestStatus>,
        details: Option<&str>,
    ) -> Result<pb::ServiceRequest, tonic::Status> {
        let mut r = request.clone();
        r.etag = String::new();
        let mut paths = Vec::new();
        if let Some(status) = status {
            r.status = status.into();
            paths.push("status");
        }
        if let Some(details) = details {
            r.details = details.into();
            paths.push("details");
        }
        self.catalog
            .clone()
            .update_service_request(self.request(
                caller,
                pb::UpdateServiceRequestRequest {
                    service_request: Some(r),
                    update_mask: mask(&paths),
                },
            ))
            .await
            .map(|r| r.into_inner().service_request.expect("request"))
    }

    async fn list_bookings(
        &self,
        caller: &Caller,
        request: pb::ListBookingsRequest,
    ) -> Result<pb::ListBookingsResponse, tonic::Status> {
        self.catalog
            .clone()
            .list_bookings(self.request(caller, request))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Sum of versions and count of rows of a catalog table in `tenant`, read
    /// as the superuser: what "nothing changed" compares.
    async fn fingerprint(&self, table: &str, tenant: &str) -> i64 {
        self.scalar(&format!(
            "SELECT (count(*) * 1000000 + coalesce(sum(version), 0))::bigint AS n
               FROM {table} WHERE tenant_id = '{tenant}'"
        ))
        .await
    }
}

fn status_of(b: &pb::Booking) -> pb::BookingStatus {
    pb::BookingStatus::try_from(b.status).expect("status")
}

// --- slugs ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slugs_are_unique_per_tenant_and_shared_across_tenants() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    let a_cut = h.service(&a.admin, "haircut").await;
    let b_cut = h.service(&b.admin, "haircut").await;
    assert_ne!(a_cut.id, b_cut.id);
    let twice = assert_code(
        h.create_service(&a.owner, "haircut").await,
        Code::AlreadyExists,
    );
    assert!(twice.message().contains("slug"), "{twice:?}");
    assert_eq!(
        h.scalar("SELECT count(*) AS n FROM services WHERE slug = 'haircut'")
            .await,
        2
    );
    // By slug, each tenant gets its own.
    use pb::get_service_request::Key;
    let got = h
        .get_service(&a.viewer, Key::Slug("haircut".into()))
        .await
        .expect("a's");
    assert_eq!(got.id, a_cut.id);
    let got = h
        .get_service(&b.viewer, Key::Slug("haircut".into()))
        .await
        .expect("b's");
    assert_eq!(got.id, b_cut.id);
    // A rename onto a taken slug is refused the same way, and changes nothing.
    let shave = h.service(&a.admin, "shave").await;
    let mut renamed = shave.clone();
    renamed.slug = "haircut".into();
    let before = h.fingerprint("services", &a.tenant.id).await;
    assert_code(
        h.catalog
            .clone()
            .update_service(h.request(
                &a.admin,
                pb::UpdateServiceRequest {
                    service: Some(renamed),
                    update_mask: mask(&["slug"]),
                },
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(h.fingerprint("services", &a.tenant.id).await, before);
    // Concurrent creates of one slug: exactly one wins.
    let results =
        futures_util::future::join_all((0..8).map(|_| h.create_service(&a.admin, "massage"))).await;
    let codes: Vec<Code> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(tonic::Status::code, |_| Code::Ok))
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Code::Ok).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Code::AlreadyExists).count(),
        7,
        "{codes:?}"
    );
}

// --- isolation -----------------------------------------------------------------------

/// Tenant B's service, request and booking, and one booking confirmed.
struct Other {
    service: pb::Service,
    request: pb::ServiceRequest,
    booking: pb::Booking,
}

async fn other_tenant(h: &Harness, b: &Org) -> Other {
    let service = h.service(&b.admin, "b-only").await;
    let request = h
        .request_service(&b.member, &service.id)
        .await
        .expect("request");
    let booking = h
        .book(&b.member, &service.id, later(3), None)
        .await
        .expect("booking");
    Other {
        service,
        request,
        booking,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_catalog_is_not_found_through_every_rpc_and_stays_unchanged() {
    use pb::get_service_request::Key;
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    let theirs = other_tenant(&h, &b).await;
    let fingerprint = async || {
        let mut all = Vec::new();
        for table in ["services", "service_requests", "bookings"] {
            all.push(h.fingerprint(table, &b.tenant.id).await);
        }
        all
    };
    let before = fingerprint().await;
    let events_before = h
        .scalar("SELECT count(*) AS n FROM outbox WHERE topic = 'audit'")
        .await;
    fn not_found<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
        let status = assert_code(r, Code::NotFound);
        assert_eq!(status.message(), "not found", "{what}: no hint it exists");
    }
    // Reads and writes by id: exactly as for an id that does not exist.
    not_found(
        h.get_service(&a.owner, Key::ServiceId(theirs.service.id.clone()))
            .await,
        "GetService by id",
    );
    not_found(
        h.get_service(&a.owner, Key::Slug(theirs.service.slug.clone()))
            .await,
        "GetService by slug",
    );
    let mut update = theirs.service.clone();
    update.name = "taken over".into();
    update.etag = String::new();
    not_found(
        h.catalog
            .clone()
            .update_service(h.request(
                &a.owner,
                pb::UpdateServiceRequest {
                    service: Some(update),
                    update_mask: mask(&["name"]),
                },
            ))
            .await,
        "UpdateService",
    );
    not_found(
        h.catalog
            .clone()
            .deactivate_service(h.request(
                &a.owner,
                pb::DeactivateServiceRequest {
                    service_id: theirs.service.id.clone(),
                    etag: String::new(),
                },
            ))
            .await,
        "DeactivateService",
    );
    not_found(
        h.request_service(&a.member, &theirs.service.id).await,
        "CreateServiceRequest",
    );
    not_found(
        h.book(&a.member, &theirs.service.id, later(4), None).await,
        "CreateBooking",
    );
    not_found(
        h.update_request(
            &a.owner,
            &theirs.request,
            Some(pb::ServiceRequestStatus::Cancelled),
            None,
        )
        .await,
        "UpdateServiceRequest",
    );
    not_found(
        h.confirm(&a.owner, &theirs.booking.id).await,
        "ConfirmBooking",
    );
    not_found(
        h.cancel(&a.owner, &theirs.booking.id).await,
        "CancelBooking",
    );
    // Lists filtered by B's service: empty, not refused (nothing to tell apart).
    let requests = h
        .catalog
        .clone()
        .list_service_requests(h.request(
            &a.viewer,
            pb::ListServiceRequestsRequest {
                service_id: theirs.service.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(requests.service_requests.is_empty());
    let bookings = h
        .list_bookings(
            &a.viewer,
            pb::ListBookingsRequest {
                service_id: theirs.service.id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert!(bookings.bookings.is_empty());
    let services = h
        .catalog
        .clone()
        .list_services(h.request(
            &a.viewer,
            pb::ListServicesRequest {
                include_inactive: true,
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(services.services.is_empty(), "{:?}", services.services);
    // B's page tokens are not A's.
    for _ in 0..2 {
        h.service(&b.admin, &format!("b-{}", uuid::Uuid::now_v7().simple()))
            .await;
    }
    let b_page = h
        .catalog
        .clone()
        .list_services(h.request(
            &b.viewer,
            pb::ListServicesRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .expect("b's list")
        .into_inner();
    assert!(!b_page.next_page_token.is_empty());
    let fields = violated_fields(
        h.catalog
            .clone()
            .list_services(h.request(
                &a.viewer,
                pb::ListServicesRequest {
                    page_size: 1,
                    page_token: b_page.next_page_token.clone(),
                    ..Default::default()
                },
            ))
            .await,
    );
    assert_eq!(fields, ["page_token"]);
    // Nothing of B's changed, and A's attempts left no audit event.
    let mut after = Vec::new();
    for table in ["services", "service_requests", "bookings"] {
        after.push(h.fingerprint(table, &b.tenant.id).await);
    }
    assert_eq!(
        after[0],
        before[0] + 2_000_002,
        "only B's own two new services"
    );
    assert_eq!(after[1..], before[1..]);
    assert_eq!(
        h.scalar("SELECT count(*) AS n FROM outbox WHERE topic = 'audit'")
            .await,
        events_before + 2,
        "only B's two creates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_a_request_or_booking_naming_another_tenants_service() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    let theirs = h.service(&b.admin, "b-only").await;
    let mine = h.service(&a.admin, "a-own").await;
    let app = h.database.app_db(1).await;
    let tenant = TenantId::parse(&a.tenant.id).expect("tenant");
    let user = a.member.user().user_id;
    let insert = async |sql: String| {
        app.tenant_tx(tenant, async |tx| {
            diesel::sql_query(sql)
                .execute(&mut tx.pg())
                .await
                .map_err(bulkhead_db::DbError::from)
        })
        .await
    };
    let request = |service: &str| {
        format!(
            "INSERT INTO service_requests (tenant_id, id, service_id, requester_id, status)
             VALUES ('{}', gen_random_uuid(), '{service}', '{user}', 'OPEN')",
            a.tenant.id
        )
    };
    let booking = |service: &str| {
        format!(
            "INSERT INTO bookings (tenant_id, id, service_id, booker_id, start_time, end_time, status)
             VALUES ('{}', gen_random_uuid(), '{service}', '{user}', now(), now() + interval '1 hour', 'CONFIRMED')",
            a.tenant.id
        )
    };
    // Inside tenant A's own transaction, as the app role: the foreign key
    // (tenant_id, service_id) finds no service of A with B's id.
    for (sql, constraint) in [
        (request(&theirs.id), "service_requests_service"),
        (booking(&theirs.id), "bookings_service"),
    ] {
        let err = insert(sql).await.expect_err("refused by the database");
        assert!(err.is_foreign_key_violation(), "{err}");
        assert_eq!(err.constraint_name(), Some(constraint));
    }
    // Writing the row as B's (tenant_id B) is RLS's to refuse, not the key's.
    let as_b = format!(
        "INSERT INTO bookings (tenant_id, id, service_id, booker_id, start_time, end_time, status)
         VALUES ('{}', gen_random_uuid(), '{}', '{user}', now(), now() + interval '1 hour', 'REQUESTED')",
        b.tenant.id, theirs.id
    );
    let err = insert(as_b).await.expect_err("row-level security");
    assert!(err.to_string().contains("row-level security"), "{err}");
    // The same statements naming A's own service pass: the refusals were the key's.
    insert(request(&mine.id)).await.expect("own service");
    insert(booking(&mine.id)).await.expect("own service");
    // The app role changes only the columns the API does: not whose booking
    // it is, nor its slot (the exclusion constraint would hold anyway).
    for set in [
        format!("booker_id = '{}'", uuid::Uuid::now_v7()),
        "start_time = start_time - interval '1 hour'".to_owned(),
        format!("tenant_id = '{}'", b.tenant.id),
    ] {
        let err = insert(format!("UPDATE bookings SET {set}"))
            .await
            .expect_err("a fixed column");
        assert!(
            err.to_string().contains("permission denied"),
            "{set}: {err}"
        );
    }
    // Even the superuser, who bypasses RLS, cannot store the cross-tenant row.
    let mut admin = h.database.admin_connection().await;
    assert!(
        diesel::sql_query(booking(&theirs.id))
            .execute(&mut admin)
            .await
            .is_err()
    );
    // And no overlapping confirmed booking gets in past the constraint either.
    let overlap = diesel::sql_query(booking(&mine.id))
        .execute(&mut admin)
        .await;
    let message = overlap.expect_err("exclusion").to_string();
    assert!(message.contains("bookings_no_overlap"), "{message}");
}

// --- bookings ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_confirmations_of_overlapping_slots_confirm_exactly_one() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let service = h.service(&a.admin, "room").await;
    for trial in 0..5 {
        let start = later(10 + trial);
        // 16 slots that all overlap each other (each starts a minute later).
        let mut bookings = Vec::new();
        for i in 0..16 {
            let begin = start + Duration::minutes(i);
            bookings.push(
                h.book(
                    &a.member,
                    &service.id,
                    begin,
                    Some(begin + Duration::hours(1)),
                )
                .await
                .expect("requested"),
            );
        }
        let results =
            futures_util::future::join_all(bookings.iter().map(|b| h.confirm(&a.admin, &b.id)))
                .await;
        let confirmed: Vec<&pb::Booking> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(confirmed.len(), 1, "trial {trial}: {results:?}");
        for result in &results {
            if let Err(status) = result {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("overlaps"), "{status:?}");
            }
        }
        let in_db = h
            .scalar(&format!(
                "SELECT count(*) AS n FROM bookings WHERE status = 'CONFIRMED'
                   AND start_time >= '{}' AND start_time < '{}'",
                start.to_rfc3339(),
                (start + Duration::hours(2)).to_rfc3339()
            ))
            .await;
        assert_eq!(in_db, 1, "trial {trial}");
    }
    // Back to back does not overlap; cancelling frees a slot.
    let start = later(30);
    let first = h
        .book(&a.member, &service.id, start, None)
        .await
        .expect("first");
    assert_eq!(
        first.end_time,
        ts(start + Duration::minutes(30)),
        "no end: the service's duration"
    );
    let next = h
        .book(&a.member, &service.id, start + Duration::minutes(30), None)
        .await
        .expect("next");
    h.confirm(&a.admin, &first.id)
        .await
        .expect("first confirmed");
    h.confirm(&a.admin, &next.id).await.expect("back to back");
    // The first one's slot again: it overlaps the first only.
    let clash = h
        .book(&a.member, &service.id, start, None)
        .await
        .expect("requests may overlap");
    assert_code(
        h.confirm(&a.admin, &clash.id).await,
        Code::FailedPrecondition,
    );
    h.cancel(&a.member, &first.id).await.expect("own booking");
    let confirmed = h.confirm(&a.admin, &clash.id).await.expect("slot freed");
    assert_eq!(status_of(&confirmed), pb::BookingStatus::Confirmed);
    // Confirming again returns it unchanged (a retry carrying the etag it
    // was read with too); a cancelled one cannot be confirmed.
    let again = h.confirm(&a.admin, &clash.id).await.expect("idempotent");
    assert_eq!(again.etag, confirmed.etag);
    let retry = h
        .catalog
        .clone()
        .confirm_booking(h.request(
            &a.admin,
            pb::ConfirmBookingRequest {
                booking_id: clash.id.clone(),
                etag: clash.etag.clone(),
            },
        ))
        .await
        .expect("a retry after a lost answer")
        .into_inner();
    assert_eq!(retry.booking.expect("booking").etag, confirmed.etag);
    assert_code(
        h.confirm(&a.admin, &first.id).await,
        Code::FailedPrecondition,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_list_by_time_range_and_service_soonest_first_in_pages() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let room = h.service(&a.admin, "room").await;
    let desk = h.service(&a.admin, "desk").await;
    let base = later(5);
    let mut mine = Vec::new();
    for i in 0..12 {
        let service = if i % 2 == 0 { &room } else { &desk };
        mine.push(
            h.book(&a.member, &service.id, base + Duration::hours(i), None)
                .await
                .expect("booking"),
        );
    }
    // A range that cuts slots: hours 3..7 (30-minute slots overlapping it).
    let range = pb::ListBookingsRequest {
        start_time: ts(base + Duration::hours(3) + Duration::minutes(15)),
        end_time: ts(base + Duration::hours(7)),
        page_size: 2,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut request = range.clone();
    loop {
        let page = h
            .list_bookings(&a.viewer, request.clone())
            .await
            .expect("page");
        assert!(page.bookings.len() <= 2);
        seen.extend(page.bookings.iter().map(|b| b.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let expected: Vec<String> = mine[3..7].iter().map(|b| b.id.clone()).collect();
    assert_eq!(seen, expected, "hours 3 (cut), 4, 5, 6, soonest first");
    // By service.
    let rooms = h
        .list_bookings(
            &a.viewer,
            pb::ListBookingsRequest {
                service_id: room.id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("rooms");
    assert_eq!(rooms.bookings.len(), 6);
    assert!(rooms.bookings.iter().all(|b| b.service_id == room.id));
    // A token is bound to its filter.
    let first = h
        .list_bookings(&a.viewer, range.clone())
        .await
        .expect("page");
    let mut other = range.clone();
    other.service_id = room.id.clone();
    other.page_token = first.next_page_token;
    assert_eq!(
        violated_fields(h.list_bookings(&a.viewer, other).await),
        ["page_token"]
    );
    // A backwards range is refused.
    let backwards = pb::ListBookingsRequest {
        start_time: ts(base),
        end_time: ts(base - Duration::hours(1)),
        ..Default::default()
    };
    assert_eq!(
        violated_fields(h.list_bookings(&a.viewer, backwards).await),
        ["end_time"]
    );
}

// --- lifecycles and ownership ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_service_takes_no_new_requests_bookings_or_confirmations() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let service = h.service(&a.admin, "pool").await;
    let waiting = h
        .book(&a.member, &service.id, later(2), None)
        .await
        .expect("requested");
    let open = h
        .request_service(&a.member, &service.id)
        .await
        .expect("open");
    let deactivate = async || {
        h.catalog
            .clone()
            .deactivate_service(h.request(
                &a.admin,
                pb::DeactivateServiceRequest {
                    service_id: service.id.clone(),
                    etag: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner().service.expect("service"))
    };
    let off = deactivate().await.expect("deactivated");
    assert!(!off.active);
    assert_eq!(
        deactivate().await.expect("idempotent").etag,
        off.etag,
        "a second deactivation changes nothing"
    );
    assert_eq!(h.events("service.deactivated").await, 1);
    fn inactive<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
        let status = assert_code(r, Code::FailedPrecondition);
        assert_eq!(status.message(), "the service is not active");
    }
    inactive(h.request_service(&a.member, &service.id).await);
    inactive(h.book(&a.member, &service.id, later(3), None).await);
    inactive(h.confirm(&a.admin, &waiting.id).await);
    // What exists stays: readable, cancellable, its request still workable.
    h.cancel(&a.member, &waiting.id).await.expect("cancel");
    h.update_request(&a.admin, &open, Some(pb::ServiceRequestStatus::Done), None)
        .await
        .expect("finish the open request");
    // Listed only with include_inactive; reactivated through the mask.
    let list = async |include_inactive| {
        h.catalog
            .clone()
            .list_services(h.request(
                &a.viewer,
                pb::ListServicesRequest {
                    include_inactive,
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner()
            .services
            .len()
    };
    assert_eq!((list(false).await, list(true).await), (0, 1));
    assert_eq!(h.events("service.reactivated").await, 0);
    let mut on = off.clone();
    on.active = true;
    h.catalog
        .clone()
        .update_service(h.request(
            &a.admin,
            pb::UpdateServiceRequest {
                service: Some(on),
                update_mask: mask(&["active"]),
            },
        ))
        .await
        .expect("reactivated");
    assert_eq!(h.events("service.reactivated").await, 1);
    h.book(&a.member, &service.id, later(3), None)
        .await
        .expect("bookable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_change_only_their_own_requests_and_bookings() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let service = h.service(&a.admin, "repair").await;
    let other_member = crate::helpers::acting(
        &a.tenant,
        bulkhead_context::UserId::new_v7(),
        bulkhead_context::TenantRole::Member,
    );
    let mine = h
        .request_service(&a.member, &service.id)
        .await
        .expect("mine");
    assert_eq!(mine.requester_user_id, a.member.user().user_id.to_string());
    let booking = h
        .book(&a.member, &service.id, later(2), None)
        .await
        .expect("booking");
    // Another member: PERMISSION_DENIED, nothing changed.
    let before = h.fingerprint("service_requests", &a.tenant.id).await;
    assert_code(
        h.update_request(&other_member, &mine, None, Some("hijacked"))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        h.cancel(&other_member, &booking.id).await,
        Code::PermissionDenied,
    );
    assert_eq!(
        h.fingerprint("service_requests", &a.tenant.id).await,
        before
    );
    // The requester edits details and may cancel, not work the request.
    h.update_request(&a.member, &mine, None, Some("more details"))
        .await
        .expect("own details");
    assert_code(
        h.update_request(&a.member, &mine, Some(pb::ServiceRequestStatus::Done), None)
            .await,
        Code::PermissionDenied,
    );
    // An admin works any request along its lifecycle; DONE is final.
    let working = h
        .update_request(
            &a.admin,
            &mine,
            Some(pb::ServiceRequestStatus::InProgress),
            None,
        )
        .await
        .expect("in progress");
    assert_eq!(working.status, pb::ServiceRequestStatus::InProgress as i32);
    h.update_request(&a.admin, &mine, Some(pb::ServiceRequestStatus::Done), None)
        .await
        .expect("done");
    let reopened = assert_code(
        h.update_request(&a.admin, &mine, Some(pb::ServiceRequestStatus::Open), None)
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reopened.message(), "a closed service request cannot change");
    assert_code(
        h.update_request(&a.admin, &mine, None, Some("after the fact"))
            .await,
        Code::FailedPrecondition,
    );
    // A request its requester withdrew is closed too.
    let withdrawn = h
        .request_service(&a.member, &service.id)
        .await
        .expect("another");
    h.update_request(
        &a.member,
        &withdrawn,
        Some(pb::ServiceRequestStatus::Cancelled),
        None,
    )
    .await
    .expect("the requester withdraws it");
    assert_code(
        h.update_request(
            &a.admin,
            &withdrawn,
            Some(pb::ServiceRequestStatus::InProgress),
            None,
        )
        .await,
        Code::FailedPrecondition,
    );
    // A stale etag is ABORTED.
    let mut stale = mine.clone();
    stale.details = "late".into();
    assert_code(
        h.catalog
            .clone()
            .update_service_request(h.request(
                &a.member,
                pb::UpdateServiceRequestRequest {
                    service_request: Some(stale),
                    update_mask: mask(&["details"]),
                },
            ))
            .await,
        Code::Aborted,
    );
    // The owner cancels anyone's booking; cancelling again returns it unchanged.
    let cancelled = h
        .cancel(&a.owner, &booking.id)
        .await
        .expect("owner cancels");
    assert_eq!(status_of(&cancelled), pb::BookingStatus::Cancelled);
    assert_eq!(
        h.cancel(&a.member, &booking.id).await.expect("again").etag,
        cancelled.etag
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_are_all_reported_and_nothing_is_written() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let fields = violated_fields(
        h.catalog
            .clone()
            .create_service(h.request(
                &a.admin,
                pb::CreateServiceRequest {
                    service: Some(pb::Service {
                        slug: "Not A Slug".into(),
                        name: " ".into(),
                        duration_minutes: 2000,
                        price_minor_units: -5,
                        currency_code: "euro".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await,
    );
    assert_eq!(
        fields,
        [
            "service.slug",
            "service.name",
            "service.duration_minutes",
            "service.price_minor_units",
            "service.currency_code"
        ]
    );
    let priced = violated_fields(
        h.catalog
            .clone()
            .create_service(h.request(
                &a.admin,
                pb::CreateServiceRequest {
                    service: Some(pb::Service {
                        slug: "paid".into(),
                        name: "Paid".into(),
                        price_minor_units: 100,
                        ..Default::default()
                    }),
                },
            ))
            .await,
    );
    assert_eq!(priced, ["service.currency_code"]);
    let service = h.service(&a.admin, "ok").await;
    let fields = violated_fields(
        h.catalog
            .clone()
            .create_booking(h.request(
                &a.member,
                pb::CreateBookingRequest {
                    service_id: "nope".into(),
                    start_time: ts(Utc::now() - Duration::days(1)),
                    end_time: None,
                },
            ))
            .await,
    );
    assert_eq!(fields, ["service_id", "start_time"]);
    let start = later(1);
    let fields = violated_fields(
        h.book(
            &a.member,
            &service.id,
            start,
            Some(start + Duration::days(8)),
        )
        .await,
    );
    assert_eq!(fields, ["end_time"]);
    // Less than a microsecond long: what Postgres keeps is an empty slot.
    let sub_micro = |nanos| prost_types::Timestamp {
        seconds: start.timestamp(),
        nanos,
    };
    let fields = violated_fields(
        h.catalog
            .clone()
            .create_booking(h.request(
                &a.member,
                pb::CreateBookingRequest {
                    service_id: service.id.clone(),
                    start_time: Some(sub_micro(100)),
                    end_time: Some(sub_micro(900)),
                },
            ))
            .await,
    );
    assert_eq!(fields, ["end_time"]);
    let fields = violated_fields(h.book(&a.member, &service.id, later(800), None).await);
    assert_eq!(fields, ["start_time"], "beyond the 2-year horizon");
    let fields = violated_fields(
        h.catalog
            .clone()
            .get_service(h.request(&a.viewer, pb::GetServiceRequest { key: None }))
            .await,
    );
    assert_eq!(fields, ["key"]);
    let fields = violated_fields(
        h.catalog
            .clone()
            .update_service(h.request(
                &a.admin,
                pb::UpdateServiceRequest {
                    service: Some(pb::Service {
                        id: service.id.clone(),
                        price_minor_units: 0,
                        currency_code: String::new(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["currency_code", "bogus"]),
                },
            ))
            .await,
    );
    assert_eq!(fields, ["update_mask"], "an unknown path");
    // Clearing the currency of a priced service: refused after the merge.
    let fields = violated_fields(
        h.catalog
            .clone()
            .update_service(h.request(
                &a.admin,
                pb::UpdateServiceRequest {
                    service: Some(pb::Service {
                        id: service.id.clone(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["currency_code"]),
                },
            ))
            .await,
    );
    assert_eq!(fields, ["service.currency_code"]);
    assert_eq!(
        h.scalar("SELECT count(*) AS n FROM services").await,
        1,
        "only the valid one"
    );
    assert_eq!(h.scalar("SELECT count(*) AS n FROM bookings").await, 0);
    assert_eq!(
        h.scalar("SELECT max(version) AS n FROM services").await,
        1,
        "no update landed"
    );
}

// --- the role matrix -------------------------------------------------------------------

/// Every catalog RPC against every kind of caller, with the exact code each gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalog_rpc_answers_each_kind_of_caller_exactly() {
    use Code::{Ok as K, PermissionDenied as D, Unauthenticated as U};
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
    //                                     viewer member admin owner service svc+owner nobody
    let table: Vec<(&str, [Code; 7])> = vec![
        ("CreateService", [D, D, K, K, D, K, U]),
        ("GetService", [K, K, K, K, D, K, U]),
        ("ListServices", [K, K, K, K, D, K, U]),
        ("UpdateService", [D, D, K, K, D, K, U]),
        ("CreateServiceRequest", [D, K, K, K, D, K, U]),
        ("ListServiceRequests", [K, K, K, K, D, K, U]),
        // The member's own request (the owner may change anyone's).
        ("UpdateServiceRequest", [D, K, K, K, D, K, U]),
        ("CreateBooking", [D, K, K, K, D, K, U]),
        ("ListBookings", [K, K, K, K, D, K, U]),
        ("ConfirmBooking", [D, D, K, K, D, K, U]),
        // The member's own booking.
        ("CancelBooking", [D, K, K, K, D, K, U]),
        // Last: the others need the service active.
        ("DeactivateService", [D, D, K, K, D, K, U]),
    ];
    let mut listed: Vec<&str> = table.iter().map(|(m, _)| *m).collect();
    listed.sort_unstable();
    let mut all = bulkhead_proto::method_names(bulkhead_task::CATALOG_SERVICE_NAME);
    all.sort_unstable();
    assert_eq!(listed, all, "the matrix lists every RPC of CatalogService");

    let service = h.service(&org.admin, "matrix").await;
    let request = h
        .request_service(&org.member, &service.id)
        .await
        .expect("request");
    let code = |r: Result<(), tonic::Status>| r.map_or_else(|s| s.code(), |()| Code::Ok);
    let mut slot = 0;
    for (method, expected) in &table {
        for (caller, want) in callers.iter().zip(expected) {
            slot += 1;
            let start = later(1) + Duration::hours(slot);
            // Each confirm or cancel gets a fresh booking of the member's.
            let booking = if matches!(*method, "ConfirmBooking" | "CancelBooking") {
                Some(
                    h.book(&org.member, &service.id, start, None)
                        .await
                        .expect("booking"),
                )
            } else {
                None
            };
            let mut c = h.catalog.clone();
            let got = match *method {
                "CreateService" => code(
                    h.create_service(caller, &format!("s{slot}"))
                        .await
                        .map(drop),
                ),
                "GetService" => code(
                    h.get_service(
                        caller,
                        pb::get_service_request::Key::ServiceId(service.id.clone()),
                    )
                    .await
                    .map(drop),
                ),
                "ListServices" => code(
                    c.list_services(h.request(caller, pb::ListServicesRequest::default()))
                        .await
                        .map(drop),
                ),
                "UpdateService" => {
                    let mut s = service.clone();
                    s.etag = String::new();
                    s.description = format!("edit {slot}");
                    code(
                        c.update_service(h.request(
                            caller,
                            pb::UpdateServiceRequest {
                                service: Some(s),
                                update_mask: mask(&["description"]),
                            },
                        ))
                        .await
                        .map(drop),
                    )
                }
                "DeactivateService" => code(
                    c.deactivate_service(h.request(
                        caller,
                        pb::DeactivateServiceRequest {
                            service_id: service.id.clone(),
                            etag: String::new(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "CreateServiceRequest" => {
                    code(h.request_service(caller, &service.id).await.map(drop))
                }
                "ListServiceRequests" => code(
                    c.list_service_requests(
                        h.request(caller, pb::ListServiceRequestsRequest::default()),
                    )
                    .await
                    .map(drop),
                ),
                "UpdateServiceRequest" => code(
                    h.update_request(caller, &request, None, Some(&format!("edit {slot}")))
                        .await
                        .map(drop),
                ),
                "CreateBooking" => code(h.book(caller, &service.id, start, None).await.map(drop)),
                "ListBookings" => code(
                    c.list_bookings(h.request(caller, pb::ListBookingsRequest::default()))
                        .await
                        .map(drop),
                ),
                "ConfirmBooking" => code(
                    h.confirm(caller, &booking.expect("booking").id)
                        .await
                        .map(drop),
                ),
                "CancelBooking" => code(
                    h.cancel(caller, &booking.expect("booking").id)
                        .await
                        .map(drop),
                ),
                other => panic!("no call for {other}"),
            };
            assert_eq!(got, *want, "{method} as {caller:?}");
        }
    }
}

// --- audit and analytics ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalog_mutation_leaves_exactly_one_audit_event() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let service = h.service(&a.admin, "audited").await;
    let request = h
        .request_service(&a.member, &service.id)
        .await
        .expect("request");
    h.update_request(
        &a.admin,
        &request,
        Some(pb::ServiceRequestStatus::InProgress),
        None,
    )
    .await
    .expect("update");
    let booking = h
        .book(&a.member, &service.id, later(2), None)
        .await
        .expect("booking");
    h.confirm(&a.admin, &booking.id).await.expect("confirm");
    h.confirm(&a.admin, &booking.id)
        .await
        .expect("again: no event");
    h.cancel(&a.member, &booking.id).await.expect("cancel");
    h.cancel(&a.member, &booking.id)
        .await
        .expect("again: no event");
    let mut renamed = service.clone();
    renamed.name = "Audited service".into();
    renamed.etag = String::new();
    h.catalog
        .clone()
        .update_service(h.request(
            &a.admin,
            pb::UpdateServiceRequest {
                service: Some(renamed),
                update_mask: mask(&["name"]),
            },
        ))
        .await
        .expect("rename");
    for action in [
        "service.created",
        "service.updated",
        "service_request.created",
        "service_request.updated",
        "booking.created",
        "booking.confirmed",
        "booking.cancelled",
    ] {
        assert_eq!(h.events(action).await, 1, "{action}");
    }
    // The rename records only what changed; each event names its actor, in A.
    let changed = h
        .scalar(
            "SELECT count(*) AS n FROM outbox WHERE payload->>'action' = 'service.updated'
               AND payload->'old_value' = '{\"name\": \"The audited\"}'::jsonb
               AND payload->'new_value' = '{\"name\": \"Audited service\"}'::jsonb",
        )
        .await;
    assert_eq!(changed, 1);
    let by_member = h
        .scalar(&format!(
            "SELECT count(*) AS n FROM outbox WHERE payload->>'action' IN ('booking.created', 'booking.cancelled')
               AND tenant_id = '{}' AND payload->>'actor_user_id' = '{}'",
            a.tenant.id,
            a.member.user().user_id
        ))
        .await;
    assert_eq!(by_member, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_count_open_requests_and_upcoming_bookings_of_the_tenant_only() {
    let h = spawn_service().await;
    let a = h.org("tenant-a").await;
    let b = h.org("tenant-b").await;
    other_tenant(&h, &b).await;
    let service = h.service(&a.admin, "counted").await;
    for _ in 0..3 {
        h.request_service(&a.member, &service.id)
            .await
            .expect("request");
    }
    let done = h
        .request_service(&a.member, &service.id)
        .await
        .expect("request");
    h.update_request(&a.admin, &done, Some(pb::ServiceRequestStatus::Done), None)
        .await
        .expect("done");
    let first = h
        .book(&a.member, &service.id, later(2), None)
        .await
        .expect("booking");
    h.confirm(&a.admin, &first.id).await.expect("confirm");
    for day in 3..5 {
        h.book(&a.member, &service.id, later(day), None)
            .await
            .expect("booking");
    }
    let cancelled = h
        .book(&a.member, &service.id, later(6), None)
        .await
        .expect("booking");
    h.cancel(&a.member, &cancelled.id).await.expect("cancel");
    let analytics = h
        .tasks
        .clone()
        .get_task_analytics(h.request(&a.viewer, pb::GetTaskAnalyticsRequest::default()))
        .await
        .expect("analytics")
        .into_inner();
    assert_eq!(analytics.open_service_request_count, 3);
    assert_eq!(analytics.upcoming_requested_booking_count, 2);
    assert_eq!(analytics.upcoming_confirmed_booking_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalog_query_shape_uses_an_index() {
    use diesel_async::SimpleAsyncConnection as _;
    let h = spawn_service().await;
    let tenant = uuid::Uuid::now_v7();
    let user = uuid::Uuid::now_v7();
    // 20 tenants, 1,000 services, 20,000 requests and bookings; `tenant` is one.
    let mut admin = h.database.admin_connection().await;
    admin
        .batch_execute(&format!(
            "INSERT INTO services (tenant_id, id, slug, name, duration_minutes)
               SELECT CASE WHEN g % 20 = 0 THEN '{tenant}'::uuid ELSE md5((g % 20)::text)::uuid END,
                      md5('s' || g)::uuid, 's' || g, 'S', 30
                 FROM generate_series(1, 1000) g;
             INSERT INTO service_requests (tenant_id, id, service_id, requester_id, status)
               SELECT s.tenant_id, gen_random_uuid(), s.id, '{user}',
                      (ARRAY['OPEN','IN_PROGRESS','DONE','CANCELLED'])[1 + g % 4]
                 FROM generate_series(1, 20000) g JOIN services s ON s.id = md5('s' || (1 + g % 1000))::uuid;
             INSERT INTO bookings (tenant_id, id, service_id, booker_id, start_time, end_time, status)
               SELECT s.tenant_id, gen_random_uuid(), s.id, '{user}',
                      now() + g * interval '1 hour', now() + g * interval '1 hour' + interval '30 minutes',
                      (ARRAY['REQUESTED','CANCELLED'])[1 + g % 2]
                 FROM generate_series(1, 20000) g JOIN services s ON s.id = md5('s' || (1 + g % 1000))::uuid;
             ANALYZE services; ANALYZE service_requests; ANALYZE bookings;"
        ))
        .await
        .expect("rows");
    let service = format!("'{}'", uuid::Uuid::now_v7());
    let shapes = [
        "SELECT * FROM services WHERE tenant_id = $T AND id = '00000000-0000-7000-8000-000000000000'".to_owned(),
        "SELECT * FROM services WHERE tenant_id = $T AND slug = 's20'".to_owned(),
        "SELECT * FROM services WHERE tenant_id = $T AND slug > '' ORDER BY slug LIMIT 51".to_owned(),
        "SELECT * FROM services WHERE tenant_id = $T AND slug > '' AND active ORDER BY slug LIMIT 51".to_owned(),
        "SELECT * FROM service_requests WHERE tenant_id = $T AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff' ORDER BY id DESC LIMIT 51".to_owned(),
        format!("SELECT * FROM service_requests WHERE tenant_id = $T AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND service_id = {service} ORDER BY id DESC LIMIT 51"),
        "SELECT * FROM service_requests WHERE tenant_id = $T AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND status = 'OPEN' ORDER BY id DESC LIMIT 51".to_owned(),
        format!("SELECT * FROM service_requests WHERE tenant_id = $T AND id < 'ffffffff-ffff-ffff-ffff-ffffffffffff' AND service_id = {service} AND status = 'OPEN' ORDER BY id DESC LIMIT 51"),
        "SELECT count(*) FROM service_requests WHERE tenant_id = $T AND status IN ('OPEN', 'IN_PROGRESS')".to_owned(),
        "SELECT * FROM bookings WHERE tenant_id = $T AND start_time >= now() - interval '7 days' AND start_time < now() + interval '1 day' AND end_time > now() ORDER BY start_time, id LIMIT 51".to_owned(),
        format!("SELECT * FROM bookings WHERE tenant_id = $T AND start_time >= now() - interval '7 days' AND start_time < now() + interval '1 day' AND end_time > now() AND service_id = {service} ORDER BY start_time, id LIMIT 51"),
        // A later page, with no range: the cursor bounds the scan.
        "SELECT * FROM bookings WHERE tenant_id = $T AND start_time >= now() + interval '800 days' AND start_time < '9999-12-31' AND end_time > '0001-01-01' AND (start_time > now() + interval '800 days' OR (start_time = now() + interval '800 days' AND id > '00000000-0000-0000-0000-000000000000')) ORDER BY start_time, id LIMIT 51".to_owned(),
        "SELECT * FROM bookings WHERE tenant_id = $T AND start_time >= now() - interval '7 days' AND start_time < '9999-12-31' AND end_time > now() AND status = 'CONFIRMED' ORDER BY start_time, id LIMIT 51".to_owned(),
        "SELECT status, count(*) FROM bookings WHERE tenant_id = $T AND start_time > now() GROUP BY status".to_owned(),
    ];
    let shapes: Vec<&str> = shapes.iter().map(String::as_str).collect();
    h.assert_indexed(tenant, user, &shapes).await;
}

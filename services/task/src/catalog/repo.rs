//! The catalog's repository: its tables only through [`TenantConn`], the
//! transaction's tenant also named in every `WHERE` (the index, and a second
//! lock on the door). Static query shapes, prepared once per connection.

use bulkhead_db::TenantConn;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::domain::{BookingStatus, MAX_SLOT, RequestStatus, Slot};
use super::requests::{BookingFilter, RequestFilter};
use crate::error::TaskError;
use crate::schema::{bookings, service_requests, services};

/// A service row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = services)]
pub struct Service {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub active: bool,
    pub duration_minutes: i32,
    pub price_minor_units: i64,
    pub currency_code: String,
    pub version: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// A new service, active.
#[derive(Debug, Insertable)]
#[diesel(table_name = services)]
pub struct NewServiceRow<'a> {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub slug: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub duration_minutes: i32,
    pub price_minor_units: i64,
    pub currency_code: &'a str,
}

/// The fields a service update sets (`None`: unchanged).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = services)]
pub struct ServiceChangeset<'a> {
    pub slug: Option<&'a str>,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub active: Option<bool>,
    pub duration_minutes: Option<i32>,
    pub price_minor_units: Option<i64>,
    pub currency_code: Option<&'a str>,
}

/// Creates a service in the transaction's tenant.
///
/// # Errors
/// [`TaskError::SlugTaken`] when the tenant has the slug; on database failure.
pub async fn insert_service(
    tx: TenantConn<'_>,
    new: &NewServiceRow<'_>,
) -> Result<Service, TaskError> {
    Ok(diesel::insert_into(services::table)
        .values(new)
        .returning(Service::as_returning())
        .get_result(&mut tx.pg())
        .await?)
}

/// A service of the transaction's tenant, by id.
///
/// # Errors
/// On database failure.
pub async fn service(tx: TenantConn<'_>, id: Uuid) -> Result<Option<Service>, TaskError> {
    Ok(services::table
        .filter(services::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(services::id.eq(id))
        .select(Service::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// A service of the transaction's tenant, by slug.
///
/// # Errors
/// On database failure.
pub async fn service_by_slug(tx: TenantConn<'_>, slug: &str) -> Result<Option<Service>, TaskError> {
    Ok(services::table
        .filter(services::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(services::slug.eq(slug))
        .select(Service::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// A service of the transaction's tenant, held against a concurrent change
/// (a deactivation) until the transaction ends; writers of requests and
/// bookings do not wait for each other.
///
/// # Errors
/// On database failure.
pub async fn hold_service(tx: TenantConn<'_>, id: Uuid) -> Result<Option<Service>, TaskError> {
    Ok(services::table
        .filter(services::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(services::id.eq(id))
        .select(Service::as_select())
        .for_share()
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// A service of the transaction's tenant, locked until the transaction ends.
///
/// # Errors
/// On database failure.
pub async fn lock_service(tx: TenantConn<'_>, id: Uuid) -> Result<Option<Service>, TaskError> {
    Ok(services::table
        .filter(services::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(services::id.eq(id))
        .select(Service::as_select())
        .for_update()
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// A page of the tenant's services after slug `after`, by slug.
///
/// # Errors
/// On database failure.
pub async fn list_services(
    tx: TenantConn<'_>,
    after: Option<&str>,
    include_inactive: bool,
    limit: i64,
) -> Result<Vec<Service>, TaskError> {
    let tenant = *tx.tenant_id().as_uuid();
    let page = services::table
        .filter(services::tenant_id.eq(tenant))
        .filter(services::slug.gt(after.unwrap_or("")))
        .order(services::slug.asc())
        .limit(limit)
        .select(Service::as_select());
    Ok(if include_inactive {
        page.load(&mut tx.pg()).await?
    } else {
        page.filter(services::active.eq(true))
            .load(&mut tx.pg())
            .await?
    })
}

/// Applies `change` to a service (a new version).
///
/// # Errors
/// [`TaskError::SlugTaken`] for a slug the tenant has; on database failure.
pub async fn update_service(
    tx: TenantConn<'_>,
    id: Uuid,
    change: &ServiceChangeset<'_>,
) -> Result<Service, TaskError> {
    Ok(diesel::update(
        services::table
            .filter(services::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(services::id.eq(id)),
    )
    .set((
        change,
        services::version.eq(services::version + 1),
        services::update_time.eq(diesel::dsl::now),
    ))
    .returning(Service::as_returning())
    .get_result(&mut tx.pg())
    .await?)
}

// --- service requests ------------------------------------------------------------------

/// A service request row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = service_requests)]
pub struct ServiceRequest {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub service_id: Uuid,
    pub requester_id: Uuid,
    pub details: String,
    pub status: String,
    pub version: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl ServiceRequest {
    /// The status as a domain value (the column's CHECK admits only these).
    #[must_use]
    pub fn status(&self) -> RequestStatus {
        RequestStatus::parse(&self.status).unwrap_or(RequestStatus::Open)
    }
}

/// Creates an OPEN request in the transaction's tenant; the compound foreign
/// key refuses a service the tenant does not have.
///
/// # Errors
/// On database failure.
pub async fn insert_request(
    tx: TenantConn<'_>,
    id: Uuid,
    service: Uuid,
    requester: Uuid,
    details: &str,
) -> Result<ServiceRequest, TaskError> {
    Ok(diesel::insert_into(service_requests::table)
        .values((
            service_requests::tenant_id.eq(tx.tenant_id().as_uuid()),
            service_requests::id.eq(id),
            service_requests::service_id.eq(service),
            service_requests::requester_id.eq(requester),
            service_requests::details.eq(details),
            service_requests::status.eq(RequestStatus::Open.as_str()),
        ))
        .returning(ServiceRequest::as_returning())
        .get_result(&mut tx.pg())
        .await?)
}

/// A request of the transaction's tenant, locked until the transaction ends.
///
/// # Errors
/// On database failure.
pub async fn lock_request(
    tx: TenantConn<'_>,
    id: Uuid,
) -> Result<Option<ServiceRequest>, TaskError> {
    Ok(service_requests::table
        .filter(service_requests::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(service_requests::id.eq(id))
        .select(ServiceRequest::as_select())
        .for_update()
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// Sets a request's details and status (`None`: unchanged), a new version.
///
/// # Errors
/// On database failure.
pub async fn update_request(
    tx: TenantConn<'_>,
    id: Uuid,
    details: Option<&str>,
    status: Option<RequestStatus>,
) -> Result<ServiceRequest, TaskError> {
    #[derive(AsChangeset)]
    #[diesel(table_name = service_requests)]
    struct Change<'a> {
        details: Option<&'a str>,
        status: Option<&'a str>,
    }
    Ok(diesel::update(
        service_requests::table
            .filter(service_requests::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(service_requests::id.eq(id)),
    )
    .set((
        Change {
            details,
            status: status.map(RequestStatus::as_str),
        },
        service_requests::version.eq(service_requests::version + 1),
        service_requests::update_time.eq(diesel::dsl::now),
    ))
    .returning(ServiceRequest::as_returning())
    .get_result(&mut tx.pg())
    .await?)
}

/// A page of the tenant's requests older than `before`, newest first (ids are
/// UUID v7); one static query per filter shape, each with its index.
///
/// # Errors
/// On database failure.
pub async fn list_requests(
    tx: TenantConn<'_>,
    filter: RequestFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ServiceRequest>, TaskError> {
    let tenant = *tx.tenant_id().as_uuid();
    let page = service_requests::table
        .filter(service_requests::tenant_id.eq(tenant))
        .filter(service_requests::id.lt(before.unwrap_or(Uuid::max())))
        .order(service_requests::id.desc())
        .limit(limit)
        .select(ServiceRequest::as_select());
    Ok(match (filter.service, filter.status) {
        (None, None) => page.load(&mut tx.pg()).await?,
        (Some(service), None) => {
            page.filter(service_requests::service_id.eq(service))
                .load(&mut tx.pg())
                .await?
        }
        (None, Some(status)) => {
            page.filter(service_requests::status.eq(status.as_str()))
                .load(&mut tx.pg())
                .await?
        }
        (Some(service), Some(status)) => {
            page.filter(service_requests::service_id.eq(service))
                .filter(service_requests::status.eq(status.as_str()))
                .load(&mut tx.pg())
                .await?
        }
    })
}

// --- bookings ------------------------------------------------------------------------

/// A booking row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = bookings)]
pub struct Booking {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub service_id: Uuid,
    pub booker_id: Uuid,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub status: String,
    pub version: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl Booking {
    /// The status as a domain value (the column's CHECK admits only these).
    #[must_use]
    pub fn status(&self) -> BookingStatus {
        BookingStatus::parse(&self.status).unwrap_or(BookingStatus::Requested)
    }
}

/// Creates a REQUESTED booking in the transaction's tenant; the compound
/// foreign key refuses a service the tenant does not have.
///
/// # Errors
/// On database failure.
pub async fn insert_booking(
    tx: TenantConn<'_>,
    id: Uuid,
    service: Uuid,
    booker: Uuid,
    slot: Slot,
) -> Result<Booking, TaskError> {
    Ok(diesel::insert_into(bookings::table)
        .values((
            bookings::tenant_id.eq(tx.tenant_id().as_uuid()),
            bookings::id.eq(id),
            bookings::service_id.eq(service),
            bookings::booker_id.eq(booker),
            bookings::start_time.eq(slot.start()),
            bookings::end_time.eq(slot.end()),
            bookings::status.eq(BookingStatus::Requested.as_str()),
        ))
        .returning(Booking::as_returning())
        .get_result(&mut tx.pg())
        .await?)
}

/// A booking of the transaction's tenant, locked until the transaction ends.
///
/// # Errors
/// On database failure.
pub async fn lock_booking(tx: TenantConn<'_>, id: Uuid) -> Result<Option<Booking>, TaskError> {
    Ok(bookings::table
        .filter(bookings::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(bookings::id.eq(id))
        .select(Booking::as_select())
        .for_update()
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// Makes confirmations of `service`'s bookings take turns until the
/// transaction ends. The exclusion constraint alone keeps slots apart, but two
/// overlapping confirmations checking it at once may deadlock each other
/// (Postgres then kills one: an INTERNAL, not the FAILED_PRECONDITION it is).
///
/// # Errors
/// On database failure.
pub async fn serialize_confirmations(tx: TenantConn<'_>, service: Uuid) -> Result<(), TaskError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(format!(
            "task.booking_slots:{}:{service}",
            tx.tenant_id()
        ))
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

/// Sets a booking's status, a new version. Confirming may meet the exclusion
/// constraint.
///
/// # Errors
/// [`TaskError::SlotTaken`] when a confirmed booking of the service overlaps
/// it; on database failure.
pub async fn set_booking_status(
    tx: TenantConn<'_>,
    id: Uuid,
    status: BookingStatus,
) -> Result<Booking, TaskError> {
    Ok(diesel::update(
        bookings::table
            .filter(bookings::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(bookings::id.eq(id)),
    )
    .set((
        bookings::status.eq(status.as_str()),
        bookings::version.eq(bookings::version + 1),
        bookings::update_time.eq(diesel::dsl::now),
    ))
    .returning(Booking::as_returning())
    .get_result(&mut tx.pg())
    .await?)
}

/// A page of the tenant's bookings overlapping the filter's range after
/// `after`, soonest first. Slots are at most [`MAX_SLOT`] long, so the scan of
/// the start-time index begins that much before the range.
///
/// # Errors
/// On database failure.
pub async fn list_bookings(
    tx: TenantConn<'_>,
    filter: BookingFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Booking>, TaskError> {
    let earliest_start = filter.from - MAX_SLOT;
    let (after_start, after_id) = after.unwrap_or((earliest_start, Uuid::nil()));
    // The index scan starts at the cursor (a plain bound: the OR below cannot
    // bound it), never before the range allows.
    let lower = after_start.max(earliest_start);
    let tenant = *tx.tenant_id().as_uuid();
    let page = bookings::table
        .filter(bookings::tenant_id.eq(tenant))
        .filter(bookings::start_time.ge(lower))
        .filter(bookings::start_time.lt(filter.to))
        .filter(bookings::end_time.gt(filter.from))
        .filter(
            bookings::start_time.gt(after_start).or(bookings::start_time
                .eq(after_start)
                .and(bookings::id.gt(after_id))),
        )
        .order((bookings::start_time.asc(), bookings::id.asc()))
        .limit(limit)
        .select(Booking::as_select());
    Ok(match (filter.service, filter.status) {
        (None, None) => page.load(&mut tx.pg()).await?,
        (Some(service), None) => {
            page.filter(bookings::service_id.eq(service))
                .load(&mut tx.pg())
                .await?
        }
        (None, Some(status)) => {
            page.filter(bookings::status.eq(status.as_str()))
                .load(&mut tx.pg())
                .await?
        }
        (Some(service), Some(status)) => {
            page.filter(bookings::service_id.eq(service))
                .filter(bookings::status.eq(status.as_str()))
                .load(&mut tx.pg())
                .await?
        }
    })
}

// --- analytics -----------------------------------------------------------------------

/// The tenant's requests still being handled (OPEN or IN_PROGRESS).
///
/// # Errors
/// On database failure.
pub async fn open_request_count(tx: TenantConn<'_>) -> Result<i64, TaskError> {
    let open = [
        RequestStatus::Open.as_str(),
        RequestStatus::InProgress.as_str(),
    ];
    Ok(service_requests::table
        .filter(service_requests::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(service_requests::status.eq_any(open))
        .count()
        .get_result(&mut tx.pg())
        .await?)
}

/// The tenant's bookings starting after `now`, per status.
///
/// # Errors
/// On database failure.
pub async fn upcoming_booking_counts(
    tx: TenantConn<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, TaskError> {
    Ok(bookings::table
        .filter(bookings::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(bookings::start_time.gt(now))
        .group_by(bookings::status)
        .select((bookings::status, diesel::dsl::count_star()))
        .load(&mut tx.pg())
        .await?)
}

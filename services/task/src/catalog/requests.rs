//! Catalog requests as domain values (parse, don't validate): every bad field
//! reported at once; page tokens bound to the tenant and the filter.

use bulkhead_context::TenantId;
use bulkhead_proto::task::v1 as pb;
use bulkhead_rpc::fields::{self, EARLIEST, LATEST, entity_id as id, time};
use bulkhead_rpc::paging::PageSize;
use bulkhead_rpc::{FieldViolations, InvalidRequest};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::domain::{
    BOOKING_HORIZON, BookingStatus, CurrencyCode, RequestStatus, ServiceSlug, Slot,
    duration_minutes, price_minor_units, unpriced_currency,
};
use crate::domain::{Description, Title};
pub use crate::requests::time_cursor;
use crate::requests::{cursor, expected_version, parse_time_cursor};

/// A service's duration when a create gives none.
pub const DEFAULT_DURATION_MINUTES: i32 = 60;

/// An optional id: empty is none.
fn optional_id(text: &str) -> Result<Option<Uuid>, &'static str> {
    if text.is_empty() {
        Ok(None)
    } else {
        id(text).map(Some)
    }
}

fn request_status(value: i32) -> Result<RequestStatus, &'static str> {
    match pb::ServiceRequestStatus::try_from(value) {
        Ok(pb::ServiceRequestStatus::Open) => Ok(RequestStatus::Open),
        Ok(pb::ServiceRequestStatus::InProgress) => Ok(RequestStatus::InProgress),
        Ok(pb::ServiceRequestStatus::Done) => Ok(RequestStatus::Done),
        Ok(pb::ServiceRequestStatus::Cancelled) => Ok(RequestStatus::Cancelled),
        _ => Err("must be OPEN, IN_PROGRESS, DONE or CANCELLED"),
    }
}

fn booking_status(value: i32) -> Result<BookingStatus, &'static str> {
    match pb::BookingStatus::try_from(value) {
        Ok(pb::BookingStatus::Requested) => Ok(BookingStatus::Requested),
        Ok(pb::BookingStatus::Confirmed) => Ok(BookingStatus::Confirmed),
        Ok(pb::BookingStatus::Cancelled) => Ok(BookingStatus::Cancelled),
        _ => Err("must be REQUESTED, CONFIRMED or CANCELLED"),
    }
}

/// An optional filter on an enum: 0 is none.
fn optional<T>(
    value: i32,
    parse: fn(i32) -> Result<T, &'static str>,
) -> Result<Option<T>, &'static str> {
    if value == 0 {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

// --- services ------------------------------------------------------------------------

/// A new service.
#[derive(Debug)]
pub struct NewService {
    pub slug: ServiceSlug,
    pub name: Title,
    pub description: Description,
    pub duration_minutes: i32,
    pub price_minor_units: i64,
    pub currency: CurrencyCode,
}

impl TryFrom<&pb::CreateServiceRequest> for NewService {
    type Error = InvalidRequest;

    fn try_from(r: &pb::CreateServiceRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let given = r.service.clone().unwrap_or_default();
        let slug = v.check("service.slug", ServiceSlug::parse(&given.slug));
        let name = v.check("service.name", Title::parse(&given.name));
        let description = v.check(
            "service.description",
            Description::parse(&given.description),
        );
        let duration = if given.duration_minutes == 0 {
            Some(DEFAULT_DURATION_MINUTES)
        } else {
            v.check(
                "service.duration_minutes",
                duration_minutes(given.duration_minutes),
            )
        };
        let price = v.check(
            "service.price_minor_units",
            price_minor_units(given.price_minor_units),
        );
        let currency = v.check(
            "service.currency_code",
            CurrencyCode::parse(&given.currency_code),
        );
        if let Some(rule) = unpriced_currency(given.price_minor_units, &given.currency_code) {
            v.add("service.currency_code", rule);
        }
        v.build(|| {
            Some(Self {
                slug: slug?,
                name: name?,
                description: description?,
                duration_minutes: duration?,
                price_minor_units: price?,
                currency: currency?,
            })
        })
    }
}

/// How GetService names a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKey {
    /// By id.
    Id(Uuid),
    /// By slug.
    Slug(ServiceSlug),
}

impl TryFrom<&pb::GetServiceRequest> for ServiceKey {
    type Error = InvalidRequest;

    fn try_from(r: &pb::GetServiceRequest) -> Result<Self, InvalidRequest> {
        use pb::get_service_request::Key;
        match &r.key {
            Some(Key::ServiceId(text)) => id(text)
                .map(Self::Id)
                .map_err(|rule| InvalidRequest::field("service_id", rule)),
            Some(Key::Slug(text)) => ServiceSlug::parse(text)
                .map(Self::Slug)
                .map_err(|rule| InvalidRequest::field("slug", rule)),
            None => Err(InvalidRequest::field(
                "key",
                "name the service by service_id or slug",
            )),
        }
    }
}

/// A page of services by slug.
#[derive(Debug)]
pub struct ListServices {
    pub size: PageSize,
    /// The slug after which the page starts.
    pub after: Option<String>,
    pub include_inactive: bool,
}

impl ListServices {
    /// The page-token kind: bound to the tenant and the filter.
    #[must_use]
    pub fn kind(tenant: TenantId, include_inactive: bool) -> String {
        format!(
            "services/{tenant}/{}",
            if include_inactive { "all" } else { "active" }
        )
    }

    /// The request for `tenant`.
    ///
    /// # Errors
    /// Every bad field; a page token of another tenant or filter is one.
    pub fn parse(r: &pb::ListServicesRequest, tenant: TenantId) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        let after = v.check(
            "page_token",
            cursor(
                &Self::kind(tenant, r.include_inactive),
                &r.page_token,
                |text| ServiceSlug::parse(text).ok().map(|s| s.as_str().to_owned()),
            ),
        );
        v.build(|| {
            Some(Self {
                size: size?,
                after: after?,
                include_inactive: r.include_inactive,
            })
        })
    }
}

/// What an UpdateService changes (`None`: not in the mask).
#[derive(Debug, Default)]
pub struct ServiceChange {
    pub slug: Option<ServiceSlug>,
    pub name: Option<Title>,
    pub description: Option<Description>,
    pub active: Option<bool>,
    pub duration_minutes: Option<i32>,
    pub price_minor_units: Option<i64>,
    pub currency: Option<CurrencyCode>,
}

/// An UpdateService.
#[derive(Debug)]
pub struct UpdateService {
    pub id: Uuid,
    pub expected_version: Option<i64>,
    pub change: ServiceChange,
}

const SERVICE_FIELDS: [&str; 7] = [
    "slug",
    "name",
    "description",
    "active",
    "duration_minutes",
    "price_minor_units",
    "currency_code",
];

impl TryFrom<&pb::UpdateServiceRequest> for UpdateService {
    type Error = InvalidRequest;

    fn try_from(r: &pb::UpdateServiceRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let paths = fields::update_mask(r.update_mask.as_ref(), &SERVICE_FIELDS, &mut v);
        let given = r.service.clone().unwrap_or_default();
        let service_id = v.check("service.id", id(&given.id));
        let has = |p: &str| paths.iter().any(|x| x == p);
        let mut change = ServiceChange::default();
        if has("slug") {
            change.slug = v.check("service.slug", ServiceSlug::parse(&given.slug));
        }
        if has("name") {
            change.name = v.check("service.name", Title::parse(&given.name));
        }
        if has("description") {
            change.description = v.check(
                "service.description",
                Description::parse(&given.description),
            );
        }
        if has("active") {
            change.active = Some(given.active);
        }
        if has("duration_minutes") {
            change.duration_minutes = v.check(
                "service.duration_minutes",
                duration_minutes(given.duration_minutes),
            );
        }
        if has("price_minor_units") {
            change.price_minor_units = v.check(
                "service.price_minor_units",
                price_minor_units(given.price_minor_units),
            );
        }
        if has("currency_code") {
            change.currency = v.check(
                "service.currency_code",
                CurrencyCode::parse(&given.currency_code),
            );
        }
        let expected_version = expected_version(&given.etag);
        v.build(|| {
            Some(Self {
                id: service_id?,
                expected_version,
                change,
            })
        })
    }
}

/// An entity named by id with an optional etag (DeactivateService,
/// ConfirmBooking, CancelBooking).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub id: Uuid,
    pub expected_version: Option<i64>,
}

impl Target {
    fn parse(field: &str, text: &str, etag: &str) -> Result<Self, InvalidRequest> {
        Ok(Self {
            id: id(text).map_err(|rule| InvalidRequest::field(field, rule))?,
            expected_version: expected_version(etag),
        })
    }
}

impl TryFrom<&pb::DeactivateServiceRequest> for Target {
    type Error = InvalidRequest;

    fn try_from(r: &pb::DeactivateServiceRequest) -> Result<Self, InvalidRequest> {
        Self::parse("service_id", &r.service_id, &r.etag)
    }
}

impl TryFrom<&pb::ConfirmBookingRequest> for Target {
    type Error = InvalidRequest;

    fn try_from(r: &pb::ConfirmBookingRequest) -> Result<Self, InvalidRequest> {
        Self::parse("booking_id", &r.booking_id, &r.etag)
    }
}

impl TryFrom<&pb::CancelBookingRequest> for Target {
    type Error = InvalidRequest;

    fn try_from(r: &pb::CancelBookingRequest) -> Result<Self, InvalidRequest> {
        Self::parse("booking_id", &r.booking_id, &r.etag)
    }
}

// --- service requests ------------------------------------------------------------------

/// A new service request.
#[derive(Debug)]
pub struct NewRequest {
    pub service: Uuid,
    pub details: Description,
}

impl TryFrom<&pb::CreateServiceRequestRequest> for NewRequest {
    type Error = InvalidRequest;

    fn try_from(r: &pb::CreateServiceRequestRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let service = v.check("service_id", id(&r.service_id));
        let details = v.check("details", Description::parse(&r.details));
        v.build(|| {
            Some(Self {
                service: service?,
                details: details?,
            })
        })
    }
}

/// The filter of a service-request list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFilter {
    pub service: Option<Uuid>,
    pub status: Option<RequestStatus>,
}

/// A page of service requests, newest first.
#[derive(Debug)]
pub struct ListRequests {
    pub size: PageSize,
    /// The id older than which the page starts.
    pub before: Option<Uuid>,
    pub filter: RequestFilter,
}

impl ListRequests {
    /// The page-token kind: bound to the tenant and the filter.
    #[must_use]
    pub fn kind(tenant: TenantId, filter: RequestFilter) -> String {
        format!(
            "service_requests/{tenant}/{}/{}",
            filter.service.map(|s| s.to_string()).unwrap_or_default(),
            filter.status.map_or("", RequestStatus::as_str)
        )
    }

    /// The request for `tenant`.
    ///
    /// # Errors
    /// Every bad field; a page token of another tenant or filter is one.
    pub fn parse(
        r: &pb::ListServiceRequestsRequest,
        tenant: TenantId,
    ) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        let service = v.check("service_id", optional_id(&r.service_id));
        let status = v.check("status", optional(r.status, request_status));
        let filter = service
            .zip(status)
            .map(|(service, status)| RequestFilter { service, status });
        let before = filter.and_then(|filter| {
            v.check(
                "page_token",
                cursor(&Self::kind(tenant, filter), &r.page_token, |text| {
                    Uuid::try_parse(text).ok()
                }),
            )
        });
        v.build(|| {
            Some(Self {
                size: size?,
                before: before?,
                filter: filter?,
            })
        })
    }
}

/// An UpdateServiceRequest.
#[derive(Debug)]
pub struct UpdateRequest {
    pub id: Uuid,
    pub expected_version: Option<i64>,
    pub details: Option<Description>,
    pub status: Option<RequestStatus>,
}

const REQUEST_FIELDS: [&str; 2] = ["details", "status"];

impl TryFrom<&pb::UpdateServiceRequestRequest> for UpdateRequest {
    type Error = InvalidRequest;

    fn try_from(r: &pb::UpdateServiceRequestRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let paths = fields::update_mask(r.update_mask.as_ref(), &REQUEST_FIELDS, &mut v);
        let given = r.service_request.clone().unwrap_or_default();
        let request_id = v.check("service_request.id", id(&given.id));
        let has = |p: &str| paths.iter().any(|x| x == p);
        let details = if has("details") {
            v.check(
                "service_request.details",
                Description::parse(&given.details),
            )
        } else {
            None
        };
        let status = if has("status") {
            v.check("service_request.status", request_status(given.status))
        } else {
            None
        };
        let expected_version = expected_version(&given.etag);
        v.build(|| {
            Some(Self {
                id: request_id?,
                expected_version,
                details,
                status,
            })
        })
    }
}

// --- bookings ------------------------------------------------------------------------

/// How far in the past a booking may start (clock skew between caller and
/// server).
const START_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// A new booking; without an end, it lasts the service's duration.
#[derive(Debug)]
pub struct NewBooking {
    pub service: Uuid,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

impl NewBooking {
    /// Its slot, given the service's duration when no end was named.
    ///
    /// # Errors
    /// [`InvalidRequest`] on `end_time` when the service's duration would make
    /// the slot too long (it cannot: durations are at most a day).
    pub fn slot(&self, duration_minutes: i32) -> Result<Slot, InvalidRequest> {
        let end = self
            .end
            .unwrap_or(self.start + chrono::Duration::minutes(i64::from(duration_minutes)));
        Slot::new(self.start, end).map_err(|rule| InvalidRequest::field("end_time", rule))
    }
}

impl TryFrom<&pb::CreateBookingRequest> for NewBooking {
    type Error = InvalidRequest;

    fn try_from(r: &pb::CreateBookingRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let service = v.check("service_id", id(&r.service_id));
        let start = v.check(
            "start_time",
            time(r.start_time.as_ref()).and_then(|t| {
                let now = Utc::now();
                if t < now - START_SKEW {
                    Err("must not be in the past")
                } else if t > now + BOOKING_HORIZON {
                    Err("must be within 2 years from now")
                } else {
                    Ok(t)
                }
            }),
        );
        let end = match &r.end_time {
            None => Some(None),
            Some(end) => v
                .check(
                    "end_time",
                    time(Some(end)).and_then(|end| match start {
                        Some(start) => Slot::new(start, end).map(|s| s.end()),
                        None => Ok(end),
                    }),
                )
                .map(Some),
        };
        v.build(|| {
            Some(Self {
                service: service?,
                start: start?,
                end: end?,
            })
        })
    }
}

/// The filter of a booking list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingFilter {
    pub service: Option<Uuid>,
    /// Bookings ending after this.
    pub from: DateTime<Utc>,
    /// Bookings starting before this.
    pub to: DateTime<Utc>,
    pub status: Option<BookingStatus>,
}

/// A page of bookings, soonest first.
#[derive(Debug)]
pub struct ListBookings {
    pub size: PageSize,
    /// The (start, id) after which the page starts.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub filter: BookingFilter,
}

impl ListBookings {
    /// The page-token kind: bound to the tenant and the filter.
    #[must_use]
    pub fn kind(tenant: TenantId, filter: BookingFilter) -> String {
        format!(
            "bookings/{tenant}/{}/{}/{}/{}",
            filter.service.map(|s| s.to_string()).unwrap_or_default(),
            filter.from.timestamp_micros(),
            filter.to.timestamp_micros(),
            filter.status.map_or("", BookingStatus::as_str)
        )
    }

    /// The request for `tenant`.
    ///
    /// # Errors
    /// Every bad field; a page token of another tenant or filter is one.
    pub fn parse(r: &pb::ListBookingsRequest, tenant: TenantId) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        let service = v.check("service_id", optional_id(&r.service_id));
        let from = match &r.start_time {
            None => Some(EARLIEST),
            Some(t) => v.check("start_time", time(Some(t))),
        };
        let to = match &r.end_time {
            None => Some(LATEST),
            Some(t) => v.check("end_time", time(Some(t))),
        };
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            v.add("end_time", "must be after start_time");
        }
        let status = v.check("status", optional(r.status, booking_status));
        let filter = match (service, from, to, status) {
            (Some(service), Some(from), Some(to), Some(status)) if from < to => {
                Some(BookingFilter {
                    service,
                    from,
                    to,
                    status,
                })
            }
            _ => None,
        };
        let after = filter.and_then(|filter| {
            v.check(
                "page_token",
                cursor(
                    &Self::kind(tenant, filter),
                    &r.page_token,
                    parse_time_cursor,
                ),
            )
        });
        v.build(|| {
            Some(Self {
                size: size?,
                after: after?,
                filter: filter?,
            })
        })
    }
}

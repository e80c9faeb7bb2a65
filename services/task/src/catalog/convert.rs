//! Catalog domain ↔ wire conversions: proto types stop here.

use bulkhead_proto::task::v1 as pb;
use bulkhead_rpc::timestamp;

use super::domain::{BookingStatus, RequestStatus};
use super::repo::{Booking, Service, ServiceRequest};
use crate::domain::etag;

/// A service on the wire.
#[must_use]
pub fn service(s: &Service) -> pb::Service {
    pb::Service {
        id: s.id.to_string(),
        slug: s.slug.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        active: s.active,
        duration_minutes: s.duration_minutes,
        price_minor_units: s.price_minor_units,
        currency_code: s.currency_code.clone(),
        create_time: Some(timestamp(s.create_time)),
        update_time: Some(timestamp(s.update_time)),
        etag: etag(s.version),
    }
}

/// A request status on the wire.
#[must_use]
pub fn request_status(s: RequestStatus) -> pb::ServiceRequestStatus {
    match s {
        RequestStatus::Open => pb::ServiceRequestStatus::Open,
        RequestStatus::InProgress => pb::ServiceRequestStatus::InProgress,
        RequestStatus::Done => pb::ServiceRequestStatus::Done,
        RequestStatus::Cancelled => pb::ServiceRequestStatus::Cancelled,
    }
}

/// A service request on the wire.
#[must_use]
pub fn service_request(r: &ServiceRequest) -> pb::ServiceRequest {
    pb::ServiceRequest {
        id: r.id.to_string(),
        service_id: r.service_id.to_string(),
        requester_user_id: r.requester_id.to_string(),
        details: r.details.clone(),
        status: request_status(r.status()).into(),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: etag(r.version),
    }
}

/// A booking status on the wire.
#[must_use]
pub fn booking_status(s: BookingStatus) -> pb::BookingStatus {
    match s {
        BookingStatus::Requested => pb::BookingStatus::Requested,
        BookingStatus::Confirmed => pb::BookingStatus::Confirmed,
        BookingStatus::Cancelled => pb::BookingStatus::Cancelled,
    }
}

/// A booking on the wire.
#[must_use]
pub fn booking(b: &Booking) -> pb::Booking {
    pb::Booking {
        id: b.id.to_string(),
        service_id: b.service_id.to_string(),
        booker_user_id: b.booker_id.to_string(),
        start_time: Some(timestamp(b.start_time)),
        end_time: Some(timestamp(b.end_time)),
        status: booking_status(b.status()).into(),
        create_time: Some(timestamp(b.create_time)),
        update_time: Some(timestamp(b.update_time)),
        etag: etag(b.version),
    }
}

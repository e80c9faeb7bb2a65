//! The catalog's gRPC handlers: context, domain values from the request (every
//! bad field at once), one scoped transaction that also writes the audit event,
//! back to the wire.

use bulkhead_context::{TenantRole, TenantUser};
use bulkhead_db::Db;
use bulkhead_guard::RequestContext;
use bulkhead_outbox::audit::Event;
use bulkhead_proto::task::v1 as pb;
use bulkhead_proto::task::v1::catalog_service_server::{CatalogService, CatalogServiceServer};
use bulkhead_rpc::{InvalidRequest, paging};
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::convert;
use super::domain::{BookingStatus, unpriced_currency};
use super::repo::{self, NewServiceRow, ServiceChangeset};
use super::requests::{
    ListBookings, ListRequests, ListServices, NewBooking, NewRequest, NewService, ServiceKey,
    Target, UpdateRequest, UpdateService, time_cursor,
};
use crate::audit::{self, changes, snapshot};
use crate::error::TaskError;

/// The catalog's handlers.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    db: Db,
}

impl CatalogApi {
    /// Handlers over the Task service's pools.
    #[must_use]
    pub const fn new(db: Db) -> Self {
        Self { db }
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> CatalogServiceServer<Self> {
        CatalogServiceServer::new(self)
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// The caller's tenant's service `id`, held against a deactivation until the
/// transaction ends, and active: what a new request, booking or confirmation
/// needs.
async fn active_service(
    tx: bulkhead_db::TenantConn<'_>,
    id: Uuid,
) -> Result<repo::Service, TaskError> {
    let service = repo::hold_service(tx, id)
        .await?
        .ok_or(TaskError::NotFound)?;
    if !service.active {
        return Err(TaskError::ServiceInactive);
    }
    Ok(service)
}

/// Whether `user` manages the catalog and works on anyone's requests and
/// bookings (OWNER/ADMIN).
fn manages(user: &TenantUser) -> bool {
    user.tenant_role >= TenantRole::Admin
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Reply<pb::CreateServiceResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let new = NewService::try_from(request.get_ref())?;
        let row = NewServiceRow {
            tenant_id: *user.tenant_id.as_uuid(),
            id: Uuid::now_v7(),
            slug: new.slug.as_str(),
            name: new.name.as_str(),
            description: new.description.as_str(),
            duration_minutes: new.duration_minutes,
            price_minor_units: new.price_minor_units,
            currency_code: new.currency.as_str(),
        };
        let service = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let service = repo::insert_service(tx, &row).await?;
                let event = Event::new("service.created", "service", service.id)
                    .new_value(snapshot(&service));
                audit::record(tx, ctx, event).await?;
                Ok::<_, TaskError>(service)
            })
            .await?;
        Ok(Response::new(pb::CreateServiceResponse {
            service: Some(convert::service(&service)),
        }))
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Reply<pb::GetServiceResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let key = ServiceKey::try_from(request.get_ref())?;
        let service = self
            .db
            .tenant_read(user.tenant_id, async |tx| match &key {
                ServiceKey::Id(id) => repo::service(tx, *id).await,
                ServiceKey::Slug(slug) => repo::service_by_slug(tx, slug.as_str()).await,
            })
            .await?
            .ok_or(TaskError::NotFound)?;
        Ok(Response::new(pb::GetServiceResponse {
            service: Some(convert::service(&service)),
        }))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Reply<pb::ListServicesResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let list = ListServices::parse(request.get_ref(), user.tenant_id)?;
        let mut services = self
            .db
            .tenant_read(user.tenant_id, async |tx| {
                repo::list_services(
                    tx,
                    list.after.as_deref(),
                    list.include_inactive,
                    list.size.fetch(),
                )
                .await
            })
            .await?;
        let next_page_token = paging::next_page(
            &mut services,
            list.size,
            &ListServices::kind(user.tenant_id, list.include_inactive),
            |s| s.slug.clone(),
        );
        Ok(Response::new(pb::ListServicesResponse {
            services: services.iter().map(convert::service).collect(),
            next_page_token,
        }))
    }

    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Reply<pb::UpdateServiceResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let update = UpdateService::try_from(request.get_ref())?;
        let change = &update.change;
        let service = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let before = repo::lock_service(tx, update.id)
                    .await?
                    .ok_or(TaskError::NotFound)?;
                if update.expected_version.is_some_and(|v| v != before.version) {
                    return Err(TaskError::StaleEtag("service"));
                }
                // The price and its currency are checked together, as they will be.
                let price = change.price_minor_units.unwrap_or(before.price_minor_units);
                let currency = change
                    .currency
                    .as_ref()
                    .map_or(before.currency_code.as_str(), |c| c.as_str());
                if let Some(rule) = unpriced_currency(price, currency) {
                    return Err(InvalidRequest::field("service.currency_code", rule).into());
                }
                let set = ServiceChangeset {
                    slug: change.slug.as_ref().map(|s| s.as_str()),
                    name: change.name.as_ref().map(|n| n.as_str()),
                    description: change.description.as_ref().map(|d| d.as_str()),
                    active: change.active,
                    duration_minutes: change.duration_minutes,
                    price_minor_units: change.price_minor_units,
                    currency_code: change.currency.as_ref().map(|c| c.as_str()),
                };
                let after = repo::update_service(tx, update.id, &set).await?;
                // An (de)activation through the mask is named as such.
                let action = match (before.active, after.active) {
                    (true, false) => "service.deactivated",
                    (false, true) => "service.reactivated",
                    _ => "service.updated",
                };
                let (old, new) = changes(&before, &after);
                let event = Event::new(action, "service", after.id)
                    .old(old)
                    .new_value(new);
                audit::record(tx, ctx, event).await?;
                Ok(after)
            })
            .await?;
        Ok(Response::new(pb::UpdateServiceResponse {
            service: Some(convert::service(&service)),
        }))
    }

    async fn deactivate_service(
        &self,
        request: Request<pb::DeactivateServiceRequest>,
    ) -> Reply<pb::DeactivateServiceResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let target = Target::try_from(request.get_ref())?;
        let service = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let before = repo::lock_service(tx, target.id)
                    .await?
                    .ok_or(TaskError::NotFound)?;
                if target.expected_version.is_some_and(|v| v != before.version) {
                    return Err(TaskError::StaleEtag("service"));
                }
                if !before.active {
                    return Ok(before);
                }
                let set = ServiceChangeset {
                    active: Some(false),
                    ..ServiceChangeset::default()
                };
                let after = repo::update_service(tx, target.id, &set).await?;
                let event = Event::new("service.deactivated", "service", after.id)
                    .old(json!({ "active": true }))
                    .new_value(json!({ "active": false }));
                audit::record(tx, ctx, event).await?;
                Ok(after)
            })
            .await?;
        Ok(Response::new(pb::DeactivateServiceResponse {
            service: Some(convert::service(&service)),
        }))
    }

    async fn create_service_request(
        &self,
        request: Request<pb::CreateServiceRequestRequest>,
    ) -> Reply<pb::CreateServiceRequestResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let new = NewRequest::try_from(request.get_ref())?;
        let created = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                // Looked up in the caller's tenant, and held: a deactivation
                // waits for this request, or this request sees it.
                let service = active_service(tx, new.service).await?;
                let created = repo::insert_request(
                    tx,
                    Uuid::now_v7(),
                    service.id,
                    *user.user_id.as_uuid(),
                    new.details.as_str(),
                )
                .await?;
                let event = Event::new("service_request.created", "service_request", created.id)
                    .new_value(snapshot(&created));
                audit::record(tx, ctx, event).await?;
                Ok::<_, TaskError>(created)
            })
            .await?;
        Ok(Response::new(pb::CreateServiceRequestResponse {
            service_request: Some(convert::service_request(&created)),
        }))
    }

    async fn list_service_requests(
        &self,
        request: Request<pb::ListServiceRequestsRequest>,
    ) -> Reply<pb::ListServiceRequestsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let list = ListRequests::parse(request.get_ref(), user.tenant_id)?;
        let mut rows = self
            .db
            .tenant_read(user.tenant_id, async |tx| {
                repo::list_requests(tx, list.filter, list.before, list.size.fetch()).await
            })
            .await?;
        let next_page_token = paging::next_page(
            &mut rows,
            list.size,
            &ListRequests::kind(user.tenant_id, list.filter),
            |r| r.id.to_string(),
        );
        Ok(Response::new(pb::ListServiceRequestsResponse {
            service_requests: rows.iter().map(convert::service_request).collect(),
            next_page_token,
        }))
    }

    async fn update_service_request(
        &self,
        request: Request<pb::UpdateServiceRequestRequest>,
    ) -> Reply<pb::UpdateServiceRequestResponse> {
        use super::domain::RequestStatus;
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let update = UpdateRequest::try_from(request.get_ref())?;
        let updated = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let before = repo::lock_request(tx, update.id)
                    .await?
                    .ok_or(TaskError::NotFound)?;
                if update.expected_version.is_some_and(|v| v != before.version) {
                    return Err(TaskError::StaleEtag("service request"));
                }
                if !manages(user) && before.requester_id != *user.user_id.as_uuid() {
                    return Err(TaskError::AdminOnly(
                        "change another member's service request",
                    ));
                }
                let from = before.status();
                if !from.is_open() {
                    return Err(TaskError::Closed("service request"));
                }
                let status = update.status.filter(|to| *to != from);
                if let Some(to) = status {
                    if !from.can_become(to) {
                        return Err(TaskError::Transition {
                            what: "service request",
                            from: from.as_str(),
                            to: to.as_str(),
                        });
                    }
                    if !manages(user) && to != RequestStatus::Cancelled {
                        return Err(TaskError::AdminOnly("move a service request along"));
                    }
                }
                let details = update.details.as_ref().map(|d| d.as_str());
                let after = repo::update_request(tx, update.id, details, status).await?;
                let (old, new) = changes(&before, &after);
                let event = Event::new("service_request.updated", "service_request", after.id)
                    .old(old)
                    .new_value(new);
                audit::record(tx, ctx, event).await?;
                Ok(after)
            })
            .await?;
        Ok(Response::new(pb::UpdateServiceRequestResponse {
            service_request: Some(convert::service_request(&updated)),
        }))
    }

    async fn create_booking(
        &self,
        request: Request<pb::CreateBookingRequest>,
    ) -> Reply<pb::CreateBookingResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let new = NewBooking::try_from(request.get_ref())?;
        let booking = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let service = active_service(tx, new.service).await?;
                let slot = new.slot(service.duration_minutes)?;
                let booking = repo::insert_booking(
                    tx,
                    Uuid::now_v7(),
                    service.id,
                    *user.user_id.as_uuid(),
                    slot,
                )
                .await?;
                let event = Event::new("booking.created", "booking", booking.id)
                    .new_value(snapshot(&booking));
                audit::record(tx, ctx, event).await?;
                Ok::<_, TaskError>(booking)
            })
            .await?;
        Ok(Response::new(pb::CreateBookingResponse {
            booking: Some(convert::booking(&booking)),
        }))
    }

    async fn list_bookings(
        &self,
        request: Request<pb::ListBookingsRequest>,
    ) -> Reply<pb::ListBookingsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let list = ListBookings::parse(request.get_ref(), user.tenant_id)?;
        let mut rows = self
            .db
            .tenant_read(user.tenant_id, async |tx| {
                repo::list_bookings(tx, list.filter, list.after, list.size.fetch()).await
            })
            .await?;
        let next_page_token = paging::next_page(
            &mut rows,
            list.size,
            &ListBookings::kind(user.tenant_id, list.filter),
            |b| time_cursor(b.start_time, b.id),
        );
        Ok(Response::new(pb::ListBookingsResponse {
            bookings: rows.iter().map(convert::booking).collect(),
            next_page_token,
        }))
    }

    async fn confirm_booking(
        &self,
        request: Request<pb::ConfirmBookingRequest>,
    ) -> Reply<pb::ConfirmBookingResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let target = Target::try_from(request.get_ref())?;
        let booking = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let before = repo::lock_booking(tx, target.id)
                    .await?
                    .ok_or(TaskError::NotFound)?;
                // Already done: a retry gets it unchanged, whatever its etag.
                if before.status() == BookingStatus::Confirmed {
                    return Ok(before);
                }
                if target.expected_version.is_some_and(|v| v != before.version) {
                    return Err(TaskError::StaleEtag("booking"));
                }
                if before.status() == BookingStatus::Cancelled {
                    return Err(TaskError::Transition {
                        what: "booking",
                        from: BookingStatus::Cancelled.as_str(),
                        to: BookingStatus::Confirmed.as_str(),
                    });
                }
                let service = active_service(tx, before.service_id).await?;
                // The exclusion constraint decides between overlapping
                // confirmations (the later one fails with SlotTaken); taking
                // turns per service keeps them from deadlocking on it.
                repo::serialize_confirmations(tx, service.id).await?;
                let after =
                    repo::set_booking_status(tx, target.id, BookingStatus::Confirmed).await?;
                let event = Event::new("booking.confirmed", "booking", after.id)
                    .old(json!({ "status": before.status }))
                    .new_value(json!({ "status": after.status }));
                audit::record(tx, ctx, event).await?;
                Ok(after)
            })
            .await?;
        Ok(Response::new(pb::ConfirmBookingResponse {
            booking: Some(convert::booking(&booking)),
        }))
    }

    async fn cancel_booking(
        &self,
        request: Request<pb::CancelBookingRequest>,
    ) -> Reply<pb::CancelBookingResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let target = Target::try_from(request.get_ref())?;
        let booking = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let before = repo::lock_booking(tx, target.id)
                    .await?
                    .ok_or(TaskError::NotFound)?;
                if !manages(user) && before.booker_id != *user.user_id.as_uuid() {
                    return Err(TaskError::AdminOnly("cancel another member's booking"));
                }
                // Already done: a retry gets it unchanged, whatever its etag.
                if before.status() == BookingStatus::Cancelled {
                    return Ok(before);
                }
                if target.expected_version.is_some_and(|v| v != before.version) {
                    return Err(TaskError::StaleEtag("booking"));
                }
                let after =
                    repo::set_booking_status(tx, target.id, BookingStatus::Cancelled).await?;
                let event = Event::new("booking.cancelled", "booking", after.id)
                    .old(json!({ "status": before.status }))
                    .new_value(json!({ "status": after.status }));
                audit::record(tx, ctx, event).await?;
                Ok(after)
            })
            .await?;
        Ok(Response::new(pb::CancelBookingResponse {
            booking: Some(convert::booking(&booking)),
        }))
    }
}

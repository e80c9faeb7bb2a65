//! The hash chain: the canonical encoding of an event, and its hash.
//!
//! `hash = SHA-256(prev_hash ‖ canonical(event))`, `prev_hash` being the 32
//! raw bytes of the previous event's hash (32 zero bytes for the first). The
//! canonical encoding is UTF-8 JSON that any standard library reproduces —
//! Python: `json.dumps(obj, sort_keys=True, separators=(",", ":"),
//! ensure_ascii=False).encode()` — of an object with exactly these keys:
//! `action`, `actor_service`, `actor_user_id`, `id`, `metadata`, `new_value`,
//! `occur_time`, `old_value`, `request_id`, `resource_id`, `resource_type`,
//! `sequence`, `source_service`, `tenant_id`, `trace_id`. Keys are sorted at
//! every level; `sequence` is an integer; `occur_time` is RFC 3339 UTC with
//! exactly six fractional digits (`2026-12-02T20:16:51.123456Z`); the three
//! values are JSON objects or `null`, whose numbers are integers (events with
//! other numbers are refused), so no floating point is ever hashed.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Number, Value};
use sha2::{Digest as _, Sha256};

/// The hash before the first event of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// What the chain covers of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Chained<'a> {
    pub tenant_id: &'a str,
    pub sequence: i64,
    pub id: &'a str,
    pub actor_user_id: &'a str,
    pub actor_service: &'a str,
    pub source_service: &'a str,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub old_value: Option<&'a Value>,
    pub new_value: Option<&'a Value>,
    pub metadata: Option<&'a Value>,
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub occur_time: DateTime<Utc>,
}

/// Writes `value` as compact JSON with keys in sorted order.
fn write(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let keys: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(out, v);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, v);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A time as the chain writes it (microseconds: what the database keeps).
#[must_use]
pub fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The canonical encoding of an event.
#[must_use]
pub fn canonical(e: &Chained<'_>) -> Vec<u8> {
    let text = |s: &str| Value::String(s.to_owned());
    // `write` sorts every object's keys (serde_json may keep insertion order
    // when a dependency enables `preserve_order`: never rely on the map).
    let object = |v: Option<&Value>| v.cloned().unwrap_or(Value::Null);
    let event: serde_json::Map<String, Value> = [
        ("action", text(e.action)),
        ("actor_service", text(e.actor_service)),
        ("actor_user_id", text(e.actor_user_id)),
        ("id", text(e.id)),
        ("metadata", object(e.metadata)),
        ("new_value", object(e.new_value)),
        ("occur_time", text(&time_text(e.occur_time))),
        ("old_value", object(e.old_value)),
        ("request_id", text(e.request_id)),
        ("resource_id", text(e.resource_id)),
        ("resource_type", text(e.resource_type)),
        ("sequence", Value::Number(Number::from(e.sequence))),
        ("source_service", text(e.source_service)),
        ("tenant_id", text(e.tenant_id)),
        ("trace_id", text(e.trace_id)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut out = String::new();
    write(&mut out, &Value::Object(event));
    out.into_bytes()
}

/// `SHA-256(prev ‖ canonical(event))`.
#[must_use]
pub fn hash(prev: &[u8], event: &Chained<'_>) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(prev);
    digest.update(canonical(event));
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_sorted_compact_and_stable() {
        let old = serde_json::json!({ "b": 1, "a": { "z": "é\n", "y": [2, true, null] } });
        let e = Chained {
            tenant_id: "t",
            sequence: 7,
            id: "i",
            actor_user_id: "",
            actor_service: "svc",
            source_service: "task",
            action: "task.updated",
            resource_type: "task",
            resource_id: "r",
            old_value: Some(&old),
            new_value: None,
            metadata: None,
            request_id: "req",
            trace_id: "",
            occur_time: DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("t"),
        };
        let text = String::from_utf8(canonical(&e)).expect("utf-8");
        assert_eq!(
            text,
            r#"{"action":"task.updated","actor_service":"svc","actor_user_id":"","id":"i","metadata":null,"new_value":null,"occur_time":"2023-11-14T22:13:20.123456Z","old_value":{"a":{"y":[2,true,null],"z":"é\n"},"b":1},"request_id":"req","resource_id":"r","resource_type":"task","sequence":7,"source_service":"task","tenant_id":"t","trace_id":""}"#
        );
        assert_ne!(
            hash(&GENESIS, &e),
            hash(&[1; 32], &e),
            "the previous hash counts"
        );
    }
}

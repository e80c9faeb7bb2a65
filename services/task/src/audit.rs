//! The audit events of Task's mutations, written to the outbox in the same
//! transaction as the change: who (actor, request id), which tenant, the action
//! (`task.created`…), the resource, and the changed fields' old and new values.

use bulkhead_db::TenantConn;
use bulkhead_guard::RequestContext;
use bulkhead_outbox::audit::{Actor, Event};
use serde_json::{Map, Value};

use crate::error::TaskError;

/// Stores `event` for the transaction's tenant.
///
/// # Errors
/// When the outbox insert fails (the change fails with it).
pub async fn record(
    tx: TenantConn<'_>,
    ctx: &RequestContext,
    event: Event,
) -> Result<(), TaskError> {
    Ok(event.record(tx, &Actor::of(ctx)).await?)
}

/// The fields that differ between `before` and `after` (both serialized to JSON
/// objects): their old values and their new ones. Bookkeeping columns are left
/// out.
#[must_use]
pub fn changes<T: serde::Serialize>(before: &T, after: &T) -> (Value, Value) {
    const BOOKKEEPING: [&str; 3] = ["version", "update_time", "tenant_id"];
    let as_map = |v: &T| match serde_json::to_value(v) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let (before, after) = (as_map(before), as_map(after));
    let mut old = Map::new();
    let mut new = Map::new();
    for (key, value) in &after {
        if BOOKKEEPING.contains(&key.as_str()) || before.get(key) == Some(value) {
            continue;
        }
        old.insert(key.clone(), before.get(key).cloned().unwrap_or(Value::Null));
        new.insert(key.clone(), value.clone());
    }
    (Value::Object(old), Value::Object(new))
}

/// An entity as audit data, without bookkeeping.
#[must_use]
pub fn snapshot<T: serde::Serialize>(value: &T) -> Value {
    let mut json = serde_json::to_value(value).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut json {
        map.remove("tenant_id");
        map.remove("version");
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_fields_are_kept() {
        #[derive(serde::Serialize)]
        struct T {
            a: i32,
            b: &'static str,
            version: i64,
        }
        let (old, new) = changes(
            &T {
                a: 1,
                b: "x",
                version: 1,
            },
            &T {
                a: 2,
                b: "x",
                version: 2,
            },
        );
        assert_eq!(old, serde_json::json!({ "a": 1 }));
        assert_eq!(new, serde_json::json!({ "a": 2 }));
    }
}

//! Parsers for the field kinds many requests share. Each returns the rule the
//! text breaks, for [`FieldViolations::check`](crate::FieldViolations::check).

use bulkhead_context::{TenantId, UserId};
use chrono::{DateTime, Utc};

use crate::FieldViolations;

/// A user id (a canonical UUID).
///
/// # Errors
/// The rule, when `text` is not one.
pub fn user_id(text: &str) -> Result<UserId, &'static str> {
    UserId::parse(text).map_err(|_| "must be a user id (UUID)")
}

/// A tenant id (a canonical UUID).
///
/// # Errors
/// The rule, when `text` is not one.
pub fn tenant_id(text: &str) -> Result<TenantId, &'static str> {
    TenantId::parse(text).map_err(|_| "must be a tenant id (UUID)")
}

/// An entity id: a canonical, non-nil UUID.
///
/// # Errors
/// The rule, when `text` is not one.
pub fn entity_id(text: &str) -> Result<uuid::Uuid, &'static str> {
    uuid::Uuid::try_parse(text)
        .ok()
        .filter(|u| !u.is_nil() && text.len() == 36)
        .ok_or("must be an id (UUID)")
}

/// Whether `label` is a lowercase DNS label: 1–63 characters of a–z, 0–9 and
/// inner hyphens.
#[must_use]
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// The paths of an AIP-134 update mask that name one of `allowed`. An empty
/// mask (an update must say what it changes) and each unknown path are recorded
/// in `v` against `update_mask`; the known paths are returned either way, so
/// their values are checked too and every bad field is reported at once.
pub fn update_mask(
    mask: Option<&prost_types::FieldMask>,
    allowed: &[&str],
    v: &mut FieldViolations,
) -> Vec<String> {
    let paths = mask.map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        v.add(
            "update_mask",
            format!("must name the fields to update: {}", allowed.join(", ")),
        );
    }
    let (known, unknown): (Vec<String>, Vec<String>) = paths
        .into_iter()
        .partition(|p| allowed.contains(&p.as_str()));
    for path in unknown {
        v.add(
            "update_mask",
            format!("unknown field {path:?}; updatable: {}", allowed.join(", ")),
        );
    }
    known
}

/// The earliest time a request may name: 0001-01-01T00:00:00Z.
pub const EARLIEST: DateTime<Utc> = match DateTime::from_timestamp(-62_135_596_800, 0) {
    Some(t) => t,
    None => DateTime::<Utc>::UNIX_EPOCH,
};

/// The latest time a request may name: 9999-12-31T23:59:59Z (RFC 3339's range).
pub const LATEST: DateTime<Utc> = match DateTime::from_timestamp(253_402_300_799, 0) {
    Some(t) => t,
    None => DateTime::<Utc>::UNIX_EPOCH,
};

/// A required time within [`EARLIEST`]..=[`LATEST`], to the microsecond
/// (what Postgres keeps: rules checked here hold for the stored value too).
///
/// # Errors
/// The rule, when it is missing, out of range or not a valid time.
pub fn time(t: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, &'static str> {
    let t = t.ok_or("must be set")?;
    if !(EARLIEST.timestamp()..=LATEST.timestamp()).contains(&t.seconds)
        || !(0..1_000_000_000).contains(&t.nanos)
    {
        return Err("must be between the years 1 and 9999");
    }
    u32::try_from(t.nanos / 1000 * 1000)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or("must be a valid time")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_masks_say_what_is_wrong() {
        assert_eq!(user_id("x").err(), Some("must be a user id (UUID)"));
        assert!(tenant_id("0190a5b2-7c1e-7d3a-9f00-2b6a1c9e4d10").is_ok());
        let mask = |paths: &[&str]| prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        };
        let mut v = FieldViolations::new();
        let known = update_mask(Some(&mask(&["name", "slug"])), &["name", "domain"], &mut v);
        assert_eq!(
            known,
            ["name"],
            "known paths are kept beside an unknown one"
        );
        let invalid = v.finish().expect_err("slug is unknown");
        assert!(invalid.violations()[0].description.contains("\"slug\""));
        let mut v = FieldViolations::new();
        assert!(update_mask(None, &["name"], &mut v).is_empty());
        assert!(v.finish().is_err(), "an empty mask says nothing to update");
    }
}

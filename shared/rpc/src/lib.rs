//! The request-validation and error kit of every Bulkhead service.
//!
//! Handlers start from valid input: each request message is turned into a domain
//! value with `TryFrom<&pb::XRequest>` (parse, don't validate), whose error is an
//! [`InvalidRequest`] naming *every* bad field. This crate holds what those
//! conversions and the services' error modules share:
//!
//! * [`FieldViolations`] collects the violations of one request and
//!   [`InvalidRequest`] becomes `INVALID_ARGUMENT` with `google.rpc.BadRequest`
//!   field violations (AIP-193), which grpcurl shows;
//! * [`db_status`] is the one mapping of a [`bulkhead_db::DbError`] to a status
//!   (unique → `ALREADY_EXISTS`, foreign key → `FAILED_PRECONDITION`, pool or
//!   connection → `UNAVAILABLE`, anything else → `INTERNAL`, logged, never sent);
//! * [`throttled`] is `RESOURCE_EXHAUSTED` with a `RetryInfo`;
//! * [`timestamp`] converts times for the wire, nanoseconds kept;
//! * [`fields`] parses the common field kinds (ids, enum numbers);
//! * [`paging`] is AIP-158 pagination with opaque keyset page tokens;
//! * [`checks`] runs one RPC's conversion alone on raw bytes (property tests,
//!   fuzzing).
//!
//! Role conversions between the wire and the domain live beside the generated
//! code, in `bulkhead-proto`.

pub mod checks;
pub mod fields;
pub mod paging;
mod status;
mod violations;

pub use status::{db_status, throttled};
pub use violations::{FieldViolation, FieldViolations, InvalidRequest};

use chrono::{DateTime, Utc};

/// Declares a validated text value: a newtype over `String` with a private
/// field, `as_str` and `Display`. Its module writes the `parse` that checks the
/// rule ("parse, don't validate").
///
/// ```
/// bulkhead_rpc::text_value!(
///     /// A name.
///     Name
/// );
/// ```
#[macro_export]
macro_rules! text_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A time on the wire, nanoseconds kept.
#[must_use]
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A Unix time in seconds (a token's `exp`) on the wire.
#[must_use]
pub fn unix_timestamp(seconds: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_nanoseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("time");
        let wire = timestamp(t);
        assert_eq!((wire.seconds, wire.nanos), (1_700_000_000, 123_456_789));
        assert_eq!(unix_timestamp(42).seconds, 42);
    }
}

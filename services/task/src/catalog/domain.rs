//! Validated values of the catalog: slugs, durations, prices, and the
//! lifecycles of service requests and bookings.

use chrono::{DateTime, Duration, Utc};

bulkhead_rpc::text_value!(
    /// A service's slug: a lowercase DNS label (1–63 characters), unique in
    /// its tenant.
    ServiceSlug
);
bulkhead_rpc::text_value!(
    /// An ISO 4217 currency code (three upper-case letters), or empty (free).
    CurrencyCode
);

impl ServiceSlug {
    /// # Errors
    /// The rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if bulkhead_rpc::fields::is_dns_label(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be 1 to 63 lowercase letters, digits and inner hyphens")
        }
    }
}

impl CurrencyCode {
    /// # Errors
    /// The rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() || (text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase())) {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be an ISO 4217 code (three upper-case letters) or empty")
        }
    }
}

/// A booking's default length in minutes: 1–1440.
///
/// # Errors
/// The rule the number breaks.
pub fn duration_minutes(minutes: i32) -> Result<i32, &'static str> {
    if (1..=1440).contains(&minutes) {
        Ok(minutes)
    } else {
        Err("must be 1 to 1440 minutes")
    }
}

/// A price in minor units: 0 or more.
///
/// # Errors
/// The rule the number breaks.
pub fn price_minor_units(units: i64) -> Result<i64, &'static str> {
    if units >= 0 {
        Ok(units)
    } else {
        Err("must not be negative")
    }
}

/// Why a price and its currency do not go together, if they do not.
#[must_use]
pub fn unpriced_currency(price: i64, currency: &str) -> Option<&'static str> {
    (price > 0 && currency.is_empty()).then_some("is required when the price is not 0")
}

/// The longest slot a booking may hold (the database holds it too).
pub const MAX_SLOT: Duration = Duration::days(7);

/// How far ahead a booking may start.
pub const BOOKING_HORIZON: Duration = Duration::days(2 * 366);

/// A booking's slot, half-open: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Slot {
    /// The slot from `start` to `end`.
    ///
    /// # Errors
    /// The rule the end breaks.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, &'static str> {
        if end <= start {
            return Err("must be after start_time");
        }
        if end - start > MAX_SLOT {
            return Err("must be at most 7 days after start_time");
        }
        Ok(Self { start, end })
    }

    /// Its start (inclusive).
    #[must_use]
    pub const fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// Its end (exclusive).
    #[must_use]
    pub const fn end(&self) -> DateTime<Utc> {
        self.end
    }
}

/// A service request's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    /// Made, not yet worked on.
    Open,
    /// Being worked on.
    InProgress,
    /// Done (final).
    Done,
    /// Withdrawn or refused (final).
    Cancelled,
}

impl RequestStatus {
    /// Every status, in wire order.
    pub const ALL: [Self; 4] = [Self::Open, Self::InProgress, Self::Done, Self::Cancelled];

    /// The spelling in the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::InProgress => "IN_PROGRESS",
            Self::Done => "DONE",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The status of its spelling; the column's CHECK admits only these.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// OPEN ↔ IN_PROGRESS; either → DONE or CANCELLED; DONE and CANCELLED are
    /// final. Staying put is no transition.
    #[must_use]
    pub fn can_become(self, to: Self) -> bool {
        use RequestStatus::{Cancelled, Done, InProgress, Open};
        matches!(
            (self, to),
            (Open, InProgress | Done | Cancelled) | (InProgress, Open | Done | Cancelled)
        )
    }

    /// Whether it is still being handled.
    #[must_use]
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Open | Self::InProgress)
    }
}

/// A booking's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookingStatus {
    /// Asked for; holds no slot.
    Requested,
    /// Holds its slot.
    Confirmed,
    /// Cancelled (final).
    Cancelled,
}

impl BookingStatus {
    /// Every status, in wire order.
    pub const ALL: [Self; 3] = [Self::Requested, Self::Confirmed, Self::Cancelled];

    /// The spelling in the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The status of its spelling; the column's CHECK admits only these.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_say_what_is_wrong() {
        assert!(ServiceSlug::parse("haircut-30").is_ok());
        assert!(ServiceSlug::parse("a").is_ok());
        for bad in ["", "-a", "a-", "Hair", "a_b", &"a".repeat(64)] {
            assert!(ServiceSlug::parse(bad).is_err(), "{bad:?}");
        }
        assert!(CurrencyCode::parse("EUR").is_ok());
        assert!(CurrencyCode::parse("").is_ok());
        assert!(CurrencyCode::parse("eur").is_err());
        assert!(duration_minutes(0).is_err());
        assert!(duration_minutes(1441).is_err());
        assert!(price_minor_units(-1).is_err());
        assert!(unpriced_currency(100, "").is_some());
        assert!(unpriced_currency(0, "").is_none());
        let t = Utc::now();
        assert!(Slot::new(t, t).is_err());
        assert!(Slot::new(t, t + MAX_SLOT).is_ok());
        assert!(Slot::new(t, t + MAX_SLOT + Duration::seconds(1)).is_err());
    }

    #[test]
    fn requests_follow_their_lifecycle() {
        use RequestStatus::{Cancelled, Done, InProgress, Open};
        for (from, to) in [
            (Open, InProgress),
            (InProgress, Open),
            (Open, Done),
            (InProgress, Cancelled),
        ] {
            assert!(from.can_become(to), "{from:?} -> {to:?}");
        }
        for (from, to) in [(Done, Open), (Cancelled, InProgress), (Open, Open)] {
            assert!(!from.can_become(to), "{from:?} -> {to:?}");
        }
    }
}

//! Validated values of the task domain: private fields, a `parse` that says
//! what is wrong in words a caller can act on, and the status rules.

bulkhead_rpc::text_value!(
    /// A task's or compliance record's title: 1–255 characters after trimming.
    Title
);
bulkhead_rpc::text_value!(
    /// A task's description: at most 10,000 characters (may be empty).
    Description
);
bulkhead_rpc::text_value!(
    /// An idempotency key (AIP-155): 1–64 printable ASCII characters.
    RequestKey
);

impl Title {
    /// # Errors
    /// The rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("must not be empty");
        }
        if trimmed.chars().count() > 255 {
            return Err("must be at most 255 characters");
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl Description {
    /// # Errors
    /// The rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.chars().count() > 10_000 {
            return Err("must be at most 10000 characters");
        }
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err("must not contain control characters other than line breaks and tabs");
        }
        Ok(Self(text.to_owned()))
    }
}

impl RequestKey {
    /// # Errors
    /// The rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() || text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be 1 to 64 printable ASCII characters");
        }
        Ok(Self(text.to_owned()))
    }
}

/// A task's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Not started.
    Pending,
    /// Being worked on.
    InProgress,
    /// Done.
    Completed,
    /// Abandoned.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in wire order.
    pub const ALL: [Self; 4] = [
        Self::Pending,
        Self::InProgress,
        Self::Completed,
        Self::Cancelled,
    ];

    /// The spelling in the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The status of its spelling; the column's CHECK admits only these.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a task may move from `self` to `to`: PENDING ↔ IN_PROGRESS;
    /// either of them → COMPLETED or CANCELLED; COMPLETED or CANCELLED → PENDING
    /// only (an explicit reopen). Staying put is no transition.
    #[must_use]
    pub fn can_become(self, to: Self) -> bool {
        use TaskStatus::{Cancelled, Completed, InProgress, Pending};
        matches!(
            (self, to),
            (Pending, InProgress | Completed | Cancelled)
                | (InProgress, Pending | Completed | Cancelled)
                | (Completed | Cancelled, Pending)
        )
    }

    /// The statuses a task may come from to become `to`.
    #[must_use]
    pub fn sources(to: Self) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|from| from.can_become(to))
            .collect()
    }

    /// Whether the task is still open (it can be worked on or assigned).
    #[must_use]
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::InProgress)
    }
}

/// A compliance record's stored state (OVERDUE is read, never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComplianceStatus {
    /// Not done yet.
    Pending,
    /// Done.
    Completed,
}

impl ComplianceStatus {
    /// The spelling in the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Completed => "COMPLETED",
        }
    }

    /// The status of its spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Completed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// An entity version as an AIP-154 etag: opaque to callers, changed by every
/// update.
#[must_use]
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The version an etag names; a malformed etag names none (and so is stale).
#[must_use]
pub fn version_of(etag: &str) -> Option<i64> {
    etag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_lifecycle() {
        use TaskStatus::{Cancelled, Completed, InProgress, Pending};
        for (from, to) in [
            (Pending, InProgress),
            (InProgress, Pending),
            (Pending, Completed),
            (InProgress, Cancelled),
            (Completed, Pending),
            (Cancelled, Pending),
        ] {
            assert!(from.can_become(to), "{from:?} -> {to:?}");
        }
        for (from, to) in [
            (Completed, InProgress),
            (Cancelled, Completed),
            (Completed, Cancelled),
            (Pending, Pending),
        ] {
            assert!(!from.can_become(to), "{from:?} -> {to:?}");
        }
        assert_eq!(TaskStatus::sources(InProgress), [Pending]);
        assert_eq!(
            TaskStatus::sources(Pending),
            [InProgress, Completed, Cancelled]
        );
    }

    #[test]
    fn values_say_what_is_wrong() {
        assert_eq!(Title::parse("  Ship it ").expect("ok").as_str(), "Ship it");
        assert!(Title::parse("  ").is_err());
        assert!(Title::parse(&"é".repeat(255)).is_ok());
        assert!(Title::parse(&"é".repeat(256)).is_err());
        assert!(Description::parse(&"x".repeat(10_001)).is_err());
        assert!(Description::parse("a\0b").is_err());
        assert!(Description::parse("line\nbreak\ttab").is_ok());
        assert!(RequestKey::parse("retry-1").is_ok());
        assert!(RequestKey::parse("has space").is_err());
        assert_eq!(version_of(&etag(7)), Some(7));
        assert_eq!(version_of("7"), None);
    }
}

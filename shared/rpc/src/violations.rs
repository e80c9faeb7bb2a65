//! Every field violation of a request, reported at once.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// One bad field and what its rule is, in words a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request (`settings.locale`).
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// A request with at least one bad field: `INVALID_ARGUMENT` with a
/// `google.rpc.BadRequest` listing every violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: check {}", self.field_list())]
pub struct InvalidRequest {
    violations: Vec<FieldViolation>,
}

impl InvalidRequest {
    /// A request whose one bad field is `field`.
    #[must_use]
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            violations: vec![FieldViolation {
                field: field.into(),
                description: description.into(),
            }],
        }
    }

    /// The violations, in the order they were found.
    #[must_use]
    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    fn field_list(&self) -> String {
        let fields: Vec<&str> = self.violations.iter().map(|v| v.field.as_str()).collect();
        fields.join(", ")
    }
}

impl From<InvalidRequest> for Status {
    fn from(invalid: InvalidRequest) -> Self {
        let message = invalid.to_string();
        let mut details = ErrorDetails::new();
        for violation in invalid.violations {
            details.add_bad_request_violation(violation.field, violation.description);
        }
        Self::with_error_details(Code::InvalidArgument, message, details)
    }
}

/// Collects the violations of one request while its fields are parsed.
///
/// ```
/// # use bulkhead_rpc::FieldViolations;
/// let mut v = FieldViolations::new();
/// let size = v.check("page_size", "x".parse::<u32>());
/// let name = v.check("name", Ok::<_, &str>("acme"));
/// let err = v.build(|| Some((size?, name?))).expect_err("page_size is bad");
/// assert_eq!(err.violations()[0].field, "page_size");
/// ```
#[derive(Debug, Default)]
pub struct FieldViolations {
    violations: Vec<FieldViolation>,
}

impl FieldViolations {
    /// Nothing recorded yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `result`'s value, or records its error against `field`.
    pub fn check<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field, description);
                None
            }
        }
    }

    /// Records a violation.
    pub fn add(&mut self, field: &str, description: impl fmt::Display) {
        self.violations.push(FieldViolation {
            field: field.to_owned(),
            description: description.to_string(),
        });
    }

    /// Whether nothing was recorded so far.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` when nothing was recorded.
    ///
    /// # Errors
    /// [`InvalidRequest`] with every violation.
    pub fn finish(self) -> Result<(), InvalidRequest> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(InvalidRequest {
                violations: self.violations,
            })
        }
    }

    /// The value `make` assembles from the checked fields (each an `Option` that
    /// [`check`](Self::check) filled), when nothing was recorded.
    ///
    /// # Errors
    /// [`InvalidRequest`] with every violation; also when `make` finds a field
    /// missing that no violation explains (a bug in the conversion, reported
    /// as a bad request rather than a panic).
    pub fn build<T>(self, make: impl FnOnce() -> Option<T>) -> Result<T, InvalidRequest> {
        self.finish()?;
        make().ok_or_else(|| InvalidRequest::field("request", "is incomplete"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_reaches_the_bad_request_details() {
        let mut v = FieldViolations::new();
        let a: Option<u8> = v.check("a", Err("must be set"));
        v.add("b.c", "must be short");
        assert!(a.is_none());
        let invalid = v.finish().expect_err("two violations");
        assert_eq!(invalid.to_string(), "invalid request: check a, b.c");
        let status = Status::from(invalid);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .expect("BadRequest")
            .field_violations
            .iter()
            .map(|f| (f.field.as_str(), f.description.as_str()))
            .collect();
        assert_eq!(fields, [("a", "must be set"), ("b.c", "must be short")]);
    }

    #[test]
    fn build_gives_the_value_only_without_violations() {
        let mut v = FieldViolations::new();
        let x = v.check("x", Ok::<_, &str>(1));
        assert_eq!(v.build(|| x), Ok(1));
        let v = FieldViolations::new();
        let missing: Option<u8> = None;
        let err = v.build(|| missing).expect_err("a bug, not a panic");
        assert_eq!(err.violations()[0].field, "request");
    }
}

//! The caller's deadline (`grpc-timeout`), kept with the request so that the
//! calls a handler makes downstream carry what is left of it: a caller that
//! stops waiting after a second never leaves work running for longer below.

use std::time::{Duration, Instant};

/// When the caller stops waiting, as the guard read it from `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `headers` state, counted from now.
    #[must_use]
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let timeout = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)?;
        Instant::now().checked_add(timeout).map(Self)
    }

    /// The deadline the guard kept with `request`, if its caller sent one.
    #[must_use]
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Self> {
        request.extensions().get::<Self>().copied()
    }

    /// What is left of it (zero once passed).
    #[must_use]
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// The time a downstream call may take: what is left of `deadline`, and
    /// never more than `cap` (so that a hung dependency costs a caller who
    /// set no deadline `cap` at most, not forever).
    #[must_use]
    pub fn downstream(deadline: Option<Self>, cap: Duration) -> Duration {
        deadline.map_or(cap, |d| d.remaining().min(cap))
    }
}

/// A `grpc-timeout` header value (`100m`, `5S`…) as a duration.
#[must_use]
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_read_as_grpc_writes_them() {
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout("5"), None);
        assert_eq!(grpc_timeout(""), None);
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", "1500m".parse().expect("ascii"));
        let deadline = Deadline::from_headers(&headers).expect("a deadline");
        let left = Deadline::downstream(Some(deadline), Duration::from_secs(5));
        assert!(left <= Duration::from_millis(1500) && left > Duration::from_millis(1000));
        assert_eq!(
            Deadline::downstream(None, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}

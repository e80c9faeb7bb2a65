//! AIP-158 pagination: keyset cursors in opaque page tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::Violations;

/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Larger requests are coerced down to this (AIP-158).
pub const MAX_PAGE_SIZE: i64 = 100;

/// The page size to use; a negative one is a violation.
pub fn page_size(requested: i32, violations: &mut Violations) -> i64 {
    match requested {
        n if n < 0 => {
            violations.add("page_size", "must not be negative");
            DEFAULT_PAGE_SIZE
        }
        0 => DEFAULT_PAGE_SIZE,
        n => i64::from(n).min(MAX_PAGE_SIZE),
    }
}

/// The cursor in `token` for listing `kind`; a token of another list (or garbage)
/// is a violation.
pub fn decode(kind: &str, token: &str, violations: &mut Violations) -> Option<String> {
    if token.is_empty() {
        return None;
    }
    let decoded = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(&format!("{kind}:")).map(str::to_owned));
    if decoded.is_none() {
        violations.add("page_token", "is not a page token of this list");
    }
    decoded
}

/// The token for the page after `last`.
#[must_use]
pub fn encode(kind: &str, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{last}"))
}

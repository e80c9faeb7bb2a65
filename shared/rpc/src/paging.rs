//! AIP-158 pagination: keyset cursors in opaque page tokens.
//!
//! A token names the list it belongs to (`kind`), so a token of another list (or
//! of the same list under another filter) is refused as a bad `page_token`
//! rather than silently misread. Lists fetch one row more than the page size to
//! learn whether a next page exists ([`PageSize::fetch`], [`next_page`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Larger requests are coerced down to this (AIP-158).
pub const MAX_PAGE_SIZE: i64 = 100;

/// A checked page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(i64);

impl PageSize {
    /// The page size for a requested one: 0 means the default, larger than the
    /// maximum is coerced down.
    ///
    /// # Errors
    /// The rule, for a negative size.
    pub fn parse(requested: i32) -> Result<Self, &'static str> {
        match requested {
            n if n < 0 => Err("must not be negative"),
            0 => Ok(Self(DEFAULT_PAGE_SIZE)),
            n => Ok(Self(i64::from(n).min(MAX_PAGE_SIZE))),
        }
    }

    /// Rows in a page.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Rows to fetch: one more than a page, to learn whether another follows.
    #[must_use]
    pub const fn fetch(self) -> i64 {
        self.0 + 1
    }
}

/// The cursor in `token` for listing `kind`; `None` for the first page.
///
/// # Errors
/// The rule, for a token of another list (or garbage).
pub fn decode(kind: &str, token: &str) -> Result<Option<String>, &'static str> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(&format!("{kind}:")).map(str::to_owned))
        .map(Some)
        .ok_or("is not a page token of this list")
}

/// The token for the page after `last`.
#[must_use]
pub fn encode(kind: &str, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{last}"))
}

/// Trims the extra row fetched to learn whether another page exists, and returns
/// the next page's token (empty on the last page).
pub fn next_page<T>(
    rows: &mut Vec<T>,
    size: PageSize,
    kind: &str,
    key: impl Fn(&T) -> String,
) -> String {
    let limit = usize::try_from(size.get()).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
            .map(|last| encode(kind, &key(last)))
            .unwrap_or_default()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_coerce_and_refuse_negatives() {
        assert_eq!(PageSize::parse(0).map(PageSize::get), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(PageSize::parse(1000).map(PageSize::get), Ok(MAX_PAGE_SIZE));
        assert_eq!(PageSize::parse(7).map(PageSize::fetch), Ok(8));
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn tokens_belong_to_one_list() {
        let token = encode("members", "abc");
        assert_eq!(decode("members", &token), Ok(Some("abc".to_owned())));
        assert!(decode("tenants", &token).is_err());
        assert!(decode("members", "!!").is_err());
        assert_eq!(decode("members", ""), Ok(None));
    }

    #[test]
    fn the_extra_row_becomes_the_next_token() {
        let size = PageSize::parse(2).expect("size");
        let mut rows = vec![1, 2, 3];
        let token = next_page(&mut rows, size, "n", ToString::to_string);
        assert_eq!(rows, [1, 2]);
        assert_eq!(decode("n", &token), Ok(Some("2".to_owned())));
        let mut last = vec![1];
        assert_eq!(next_page(&mut last, size, "n", ToString::to_string), "");
    }
}

//! Validated values of the tenant domain: each has private fields and a `parse`
//! that says what is wrong in words a caller can act on.

bulkhead_rpc::text_value!(
    /// A tenant's slug: a lowercase DNS label of 3–63 characters.
    Slug
);
bulkhead_rpc::text_value!(
    /// A tenant's name: 1–200 characters.
    TenantName
);
bulkhead_rpc::text_value!(
    /// A tenant's domain: a valid lowercase hostname of two labels or more.
    Domain
);
bulkhead_rpc::text_value!(
    /// An organization's display name: 1–200 characters.
    DisplayName
);
bulkhead_rpc::text_value!(
    /// A logo URL: absolute `https` (or `http`) URL, at most 2048 characters.
    LogoUrl
);
bulkhead_rpc::text_value!(
    /// An IANA time zone name (`Europe/Paris`).
    Timezone
);
bulkhead_rpc::text_value!(
    /// A BCP 47 locale tag of the common shape (`en`, `en-US`, `zh-Hant-TW`).
    Locale
);

use bulkhead_rpc::fields::is_dns_label;

impl Slug {
    /// # Errors
    /// A description of the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if !(3..=63).contains(&text.len()) {
            return Err("must be 3 to 63 characters");
        }
        if !is_dns_label(text) {
            return Err("must be lowercase letters, digits and inner hyphens (a DNS label)");
        }
        Ok(Self(text.to_owned()))
    }
}

fn bounded_name(text: &str) -> Result<String, &'static str> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("must not be empty");
    }
    if trimmed.chars().count() > 200 {
        return Err("must be at most 200 characters");
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(trimmed.to_owned())
}

impl TenantName {
    /// # Errors
    /// A description of the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        bounded_name(text).map(Self)
    }
}

impl DisplayName {
    /// # Errors
    /// A description of the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        bounded_name(text).map(Self)
    }
}

impl Domain {
    /// Accepts any letter case and stores the lowercase form.
    ///
    /// # Errors
    /// A description of the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        if lower.len() > 253 {
            return Err("must be at most 253 characters");
        }
        let labels: Vec<&str> = lower.split('.').collect();
        if labels.len() < 2 || !labels.iter().all(|l| is_dns_label(l)) {
            return Err("must be a hostname such as app.example.com");
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("must be a hostname, not an IP address");
        }
        Ok(Self(lower))
    }
}

impl LogoUrl {
    /// # Errors
    /// A description of the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() > 2048 {
            return Err("must be at most 2048 characters");
        }
        let url = url::Url::parse(text).map_err(|_| "must be an absolute URL")?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err("must be an http(s) URL with a host");
        }
        Ok(Self(url.to_string()))
    }
}

impl Timezone {
    /// # Errors
    /// When the text is not an IANA zone name.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        text.parse::<chrono_tz::Tz>()
            .map(|tz| Self(tz.name().to_owned()))
            .map_err(|_| "must be an IANA time zone such as Europe/Paris")
    }
}

impl Locale {
    /// # Errors
    /// When the text is not a language tag of the form language[-Script][-REGION].
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const RULE: &str = "must be a language tag such as en, en-US or zh-Hant-TW";
        let mut parts = text.split('-');
        let language = parts.next().unwrap_or_default();
        if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(RULE);
        }
        let mut rest: Vec<&str> = parts.collect();
        if let Some(script) = rest.first().copied().filter(|s| s.len() == 4) {
            let mut chars = script.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_uppercase())
                && chars.all(|c| c.is_ascii_lowercase());
            if !ok {
                return Err(RULE);
            }
            rest.remove(0);
        }
        match rest.as_slice() {
            [] => {}
            [region]
                if (region.len() == 2 && region.bytes().all(|b| b.is_ascii_uppercase()))
                    || (region.len() == 3 && region.bytes().all(|b| b.is_ascii_digit())) => {}
            _ => return Err(RULE),
        }
        Ok(Self(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_dns_labels_of_3_to_63() {
        for ok in ["acme", "a-1", "x".repeat(63).as_str(), "123"] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Acme",
            "-acme",
            "acme-",
            "ac_me",
            "ac.me",
            &"x".repeat(64),
            "äcme",
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(TenantName::parse("  Acme  ").expect("ok").as_str(), "Acme");
        assert!(TenantName::parse("   ").is_err());
        assert!(TenantName::parse(&"é".repeat(200)).is_ok());
        assert!(TenantName::parse(&"é".repeat(201)).is_err());
        assert!(TenantName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn domains_are_hostnames() {
        assert_eq!(
            Domain::parse("App.Example.COM").expect("ok").as_str(),
            "app.example.com"
        );
        for bad in [
            "localhost",
            "exa mple.com",
            "-x.com",
            "x..com",
            "10.0.0.1",
            "",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_values_are_checked() {
        assert!(Timezone::parse("Europe/Paris").is_ok());
        assert!(Timezone::parse("Mars/Olympus").is_err());
        for ok in ["en", "en-US", "zh-Hant-TW", "es-419"] {
            assert!(Locale::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "EN", "en_US", "en-us", "english"] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
        assert!(LogoUrl::parse("https://cdn.example.com/logo.png").is_ok());
        assert!(LogoUrl::parse("javascript:alert(1)").is_err());
        assert!(LogoUrl::parse("/relative.png").is_err());
    }
}

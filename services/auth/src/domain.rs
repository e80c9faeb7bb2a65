//! Validated values of the auth domain: private fields, a `parse` that says what
//! is wrong in words a caller can act on.

use std::fmt;

/// An email address of a plausible shape, trimmed. Unique whatever its case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// # Errors
    /// The rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let email = text.trim();
        let plausible = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if plausible {
            Ok(Self(email.to_owned()))
        } else {
            Err("must be an address such as ada@example.com")
        }
    }

    /// The address as given (trimmed).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address in lowercase: what login limits are keyed by.
    #[must_use]
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A new password: 12 to 1024 characters. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// # Errors
    /// The rule the text breaks.
    pub fn parse(text: String) -> Result<Self, &'static str> {
        if text.chars().count() < 12 || text.len() > 1024 {
            Err("must be 12 to 1024 characters")
        } else {
            Ok(Self(text))
        }
    }

    /// The password, to hash it.
    #[must_use]
    pub fn expose(self) -> String {
        self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A user's display name: at most 200 characters, trimmed (may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisplayName(String);

impl DisplayName {
    /// # Errors
    /// The rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.chars().count() > 200 {
            return Err("must be at most 200 characters");
        }
        Ok(Self(text.trim().to_owned()))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_passwords_and_names_say_what_is_wrong() {
        let email = Email::parse("  Ada@Example.com ").expect("plausible");
        assert_eq!(
            (email.as_str(), email.key().as_str()),
            ("Ada@Example.com", "ada@example.com")
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@localhost",
            &format!("{}@x.io", "a".repeat(250)),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("twelve chars".into()).is_ok());
        assert!(Password::parse("é".repeat(513)).is_err(), "over 1024 bytes");
        assert_eq!(
            format!("{:?}", Password::parse("a secret password".into())),
            "Ok(Password(..))"
        );
        assert!(DisplayName::parse(&"x".repeat(201)).is_err());
        assert_eq!(DisplayName::parse(" Ada ").expect("ok").as_str(), "Ada");
    }
}

//! Identity values shared by every Bulkhead crate: the ids of tenants, users and
//! sessions, the two kinds of role, and the principals a request can carry.
//!
//! These are plain, validated values. What turns them into *authority* is the
//! `RequestContext` of `bulkhead-guard`, which only the guard layer can build from a
//! verified token; a value of this crate proves nothing on its own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The text is not a UUID in its canonical hyphenated form.
    #[error("{kind} must be a UUID, e.g. 0190a5b2-7c1e-7d3a-9f00-2b6a1c9e4d10")]
    NotUuid {
        /// Which id was being parsed.
        kind: &'static str,
    },
    /// The nil UUID never names anything.
    #[error("{kind} must not be the nil UUID")]
    Nil {
        /// Which id was being parsed.
        kind: &'static str,
    },
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an already-validated UUID (from the database or a verified token).
            #[must_use]
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// A new, time-ordered (v7) id.
            #[must_use]
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses client text: a hyphenated, non-nil UUID.
            ///
            /// # Errors
            /// [`IdError`] when the text is not such a UUID.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                // `Uuid::try_parse` also accepts braces, URNs and simple hex; ids on
                // the wire have exactly one spelling.
                if text.len() != 36 {
                    return Err(IdError::NotUuid { kind: $kind });
                }
                let id = Uuid::try_parse(text).map_err(|_| IdError::NotUuid { kind: $kind })?;
                if id.is_nil() {
                    return Err(IdError::Nil { kind: $kind });
                }
                Ok(Self(id))
            }

            /// The inner UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// The id of a tenant: the unit of isolation.
    TenantId,
    "tenant id"
);
id_type!(
    /// The id of a platform-wide user identity.
    UserId,
    "user id"
);
id_type!(
    /// The id of a login session (a refresh-token family).
    SessionId,
    "session id"
);

/// A role within one tenant, ordered from least to most powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TenantRole {
    /// Reads.
    Viewer,
    /// Creates and edits tasks.
    Member,
    /// Also deletes, manages members and settings, reads and exports audit.
    Admin,
    /// An admin who can also make or remove owners.
    Owner,
}

impl TenantRole {
    /// The wire spelling (`OWNER`, `ADMIN`, `MEMBER`, `VIEWER`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "VIEWER",
            Self::Member => "MEMBER",
            Self::Admin => "ADMIN",
            Self::Owner => "OWNER",
        }
    }

    /// The role of its spelling (`as_str`'s inverse); `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Viewer, Self::Member, Self::Admin, Self::Owner]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

/// A role on the platform, independent of tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlatformRole {
    /// An ordinary user.
    User,
    /// Operates the platform: creates tenants, (de)activates them.
    SuperAdmin,
}

impl PlatformRole {
    /// The wire and database spelling (`SUPER_ADMIN`, `USER`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::SuperAdmin => "SUPER_ADMIN",
        }
    }

    /// The role of its spelling (`as_str`'s inverse); `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        [Self::User, Self::SuperAdmin]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

/// A user acting inside one tenant, as a verified access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUser {
    /// The platform-wide user.
    pub user_id: UserId,
    /// The login session the token belongs to.
    pub session_id: SessionId,
    /// The active tenant: the only tenant this request may touch.
    pub tenant_id: TenantId,
    /// The active tenant's slug, for logs and display.
    pub tenant_slug: String,
    /// The user's role in the active tenant when the token was issued.
    pub tenant_role: TenantRole,
    /// The user's platform role.
    pub platform_role: PlatformRole,
}

/// A Bulkhead service, as a verified service token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// The service's name (`auth`, `tenant`, `task`, `audit`, …).
    pub name: String,
    /// What the service token allows.
    pub scopes: Vec<String>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal {
    /// A user, directly.
    User(TenantUser),
    /// A service on its own behalf (internal calls).
    Service(ServiceIdentity),
    /// A service forwarding a user's token: both were verified.
    ServiceForUser {
        /// The calling service.
        service: ServiceIdentity,
        /// The user on whose behalf it calls.
        user: TenantUser,
    },
}

impl Principal {
    /// The user behind the call, if any.
    #[must_use]
    pub fn user(&self) -> Option<&TenantUser> {
        match self {
            Self::User(user) | Self::ServiceForUser { user, .. } => Some(user),
            Self::Service(_) => None,
        }
    }

    /// The service making the call, if any.
    #[must_use]
    pub fn service(&self) -> Option<&ServiceIdentity> {
        match self {
            Self::Service(service) | Self::ServiceForUser { service, .. } => Some(service),
            Self::User(_) => None,
        }
    }

    /// The tenant the call is scoped to: the user's active tenant, never a header.
    #[must_use]
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.user().map(|u| u.tenant_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_their_own_spelling_only() {
        for role in [
            TenantRole::Viewer,
            TenantRole::Member,
            TenantRole::Admin,
            TenantRole::Owner,
        ] {
            assert_eq!(TenantRole::parse(role.as_str()), Some(role));
        }
        for role in [PlatformRole::User, PlatformRole::SuperAdmin] {
            assert_eq!(PlatformRole::parse(role.as_str()), Some(role));
        }
        assert_eq!(TenantRole::parse("owner"), None);
        assert_eq!(PlatformRole::parse("ADMIN"), None);
    }

    #[test]
    fn ids_accept_only_canonical_non_nil_uuids() {
        let id = TenantId::parse("0190a5b2-7c1e-7d3a-9f00-2b6a1c9e4d10").expect("canonical");
        assert_eq!(id.to_string(), "0190a5b2-7c1e-7d3a-9f00-2b6a1c9e4d10");
        for bad in [
            "",
            "not-a-uuid",
            "0190a5b27c1e7d3a9f002b6a1c9e4d10",
            "{0190a5b2-7c1e-7d3a-9f00-2b6a1c9e4d10}",
            "00000000-0000-0000-0000-000000000000",
            "0190a5b2-7c1e-7d3a-9f00-2b6a1c9e4d10'; drop table x; --",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn tenant_roles_are_ordered_by_power() {
        assert!(TenantRole::Owner > TenantRole::Admin);
        assert!(TenantRole::Admin > TenantRole::Member);
        assert!(TenantRole::Member > TenantRole::Viewer);
    }
}

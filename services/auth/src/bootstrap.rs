//! The first SUPER_ADMIN, made before anyone can log in (`bulkhead up`,
//! `bulkhead bootstrap`).

use bulkhead_context::{PlatformRole, UserId};
use bulkhead_db::Db;
use bulkhead_rpc::InvalidRequest;

use crate::domain::{Email, Password};
use crate::error::AuthError;
use crate::password::Passwords;
use crate::repo;

/// The outcome of [`bootstrap_admin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrapped {
    /// The user was created now, with the password given.
    Created(UserId),
    /// A user with this email existed, and the password given is theirs.
    Existing(UserId),
}

impl Bootstrapped {
    /// The SUPER_ADMIN's id.
    #[must_use]
    pub const fn user_id(self) -> UserId {
        match self {
            Self::Created(id) | Self::Existing(id) => id,
        }
    }
}

/// What to do when the SUPER_ADMIN exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// The password given must be theirs, or the bootstrap is refused (a
    /// password someone asked for explicitly is never silently not applied).
    Verify,
    /// Keep them as they are (their password may have changed since).
    Keep,
}

/// Makes sure a SUPER_ADMIN with this email exists (idempotent), on the
/// platform path. An existing user's password is never replaced.
///
/// # Errors
/// [`AuthError::Invalid`] for an unusable email or password,
/// [`AuthError::InvalidCredentials`] when the user exists with another password
/// and `existing` is [`Existing::Verify`], or a database failure.
pub async fn bootstrap_admin(
    db: &Db,
    email: &str,
    password: &str,
    existing: Existing,
) -> Result<Bootstrapped, AuthError> {
    let email = Email::parse(email).map_err(|rule| InvalidRequest::field("email", rule))?;
    let password = Password::parse(password.to_owned())
        .map_err(|rule| InvalidRequest::field("password", rule))?
        .expose();
    let passwords = Passwords::new(1);
    let found = db
        .platform_tx(async |tx| repo::user_by_email(tx, email.as_str()).await)
        .await?;
    if let Some(user) = found {
        return if existing == Existing::Keep
            || passwords
                .verify(password, Some(user.password_hash.clone()))
                .await?
        {
            Ok(Bootstrapped::Existing(UserId::from_uuid(user.id)))
        } else {
            Err(AuthError::InvalidCredentials)
        };
    }
    let hash = passwords.hash(password).await?;
    let (user, created) = db
        .platform_tx(async |tx| {
            repo::ensure_user(tx, email.as_str(), &hash, PlatformRole::SuperAdmin).await
        })
        .await?;
    let id = UserId::from_uuid(user.id);
    Ok(if created {
        Bootstrapped::Created(id)
    } else {
        // Created by a concurrent bootstrap with (perhaps) another password.
        Bootstrapped::Existing(id)
    })
}

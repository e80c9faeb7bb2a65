//! Requests as domain values (parse, don't validate): each conversion reports
//! every bad field at once, so handlers start from valid input. Requests that
//! carry secrets are taken by value, so the secret is moved, not copied.

use bulkhead_context::{PlatformRole, TenantId, UserId};
use bulkhead_proto::auth::v1 as pb;
use bulkhead_rpc::{FieldViolations, InvalidRequest, fields};

use crate::domain::{DisplayName, Email, Password};
use crate::error::AuthError;
use crate::repo::Revoke;

/// A login attempt.
#[derive(Debug)]
pub struct Login {
    /// Who.
    pub email: Email,
    /// The password to check (any text: only a hash decides).
    pub password: String,
    /// The tenant asked for; none means the default membership, else the first.
    pub tenant_slug: Option<String>,
}

impl TryFrom<pb::LoginRequest> for Login {
    type Error = AuthError;

    /// A malformed email gets the same answer as a wrong password: nothing to learn.
    fn try_from(r: pb::LoginRequest) -> Result<Self, AuthError> {
        Ok(Self {
            email: Email::parse(&r.email).map_err(|_| AuthError::InvalidCredentials)?,
            password: r.password,
            tenant_slug: Some(r.tenant_slug).filter(|s| !s.is_empty()),
        })
    }
}

/// The tenant a `SwitchTenant` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchTarget {
    /// By id.
    Id(TenantId),
    /// By slug.
    Slug(String),
}

impl TryFrom<&pb::SwitchTenantRequest> for SwitchTarget {
    type Error = InvalidRequest;

    fn try_from(r: &pb::SwitchTenantRequest) -> Result<Self, InvalidRequest> {
        use pb::switch_tenant_request::Tenant;
        match &r.tenant {
            Some(Tenant::TenantId(id)) => fields::tenant_id(id)
                .map(Self::Id)
                .map_err(|rule| InvalidRequest::field("tenant_id", rule)),
            Some(Tenant::TenantSlug(slug)) if !slug.is_empty() => Ok(Self::Slug(slug.clone())),
            _ => Err(InvalidRequest::field(
                "tenant",
                "set tenant_id or tenant_slug",
            )),
        }
    }
}

/// A new user.
#[derive(Debug)]
pub struct CreateUser {
    /// Their email, unique whatever its case.
    pub email: Email,
    /// Their first password.
    pub password: Password,
    /// How they are shown.
    pub display_name: DisplayName,
    /// `USER` unless `SUPER_ADMIN` is asked (and allowed).
    pub platform_role: PlatformRole,
}

impl TryFrom<pb::CreateUserRequest> for CreateUser {
    type Error = InvalidRequest;

    fn try_from(r: pb::CreateUserRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let email = v.check("email", Email::parse(&r.email));
        let password = v.check("password", Password::parse(r.password));
        let display_name = v.check("display_name", DisplayName::parse(&r.display_name));
        let platform_role = v.check(
            "platform_role",
            match pb::PlatformRole::try_from(r.platform_role) {
                Ok(pb::PlatformRole::SuperAdmin) => Ok(PlatformRole::SuperAdmin),
                Ok(pb::PlatformRole::User | pb::PlatformRole::Unspecified) => {
                    Ok(PlatformRole::User)
                }
                Err(_) => Err("must be SUPER_ADMIN or USER"),
            },
        );
        v.build(|| {
            Some(Self {
                email: email?,
                password: password?,
                display_name: display_name?,
                platform_role: platform_role?,
            })
        })
    }
}

/// A password change by the user themself.
#[derive(Debug)]
pub struct ChangePassword {
    /// The password they have now (checked against the hash).
    pub current: String,
    /// The new one.
    pub new: Password,
}

impl TryFrom<pb::ChangePasswordRequest> for ChangePassword {
    type Error = InvalidRequest;

    fn try_from(r: pb::ChangePasswordRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let new = v.check("new_password", Password::parse(r.new_password));
        let current = r.current_password;
        v.build(|| Some(Self { current, new: new? }))
    }
}

/// An internal request to end sessions.
#[derive(Debug, Clone)]
pub struct RevokeSessions {
    /// Whose.
    pub which: Revoke,
    /// Why (kept with the sessions and audited).
    pub reason: String,
    /// The tenant the audit event belongs to (the nil tenant when none).
    pub audit_tenant: TenantId,
}

impl TryFrom<pb::RevokeSessionsRequest> for RevokeSessions {
    type Error = InvalidRequest;

    fn try_from(r: pb::RevokeSessionsRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let tenant_text = r.tenant_id.as_deref().filter(|t| !t.is_empty());
        let tenant = tenant_text.map(|t| v.check("tenant_id", fields::tenant_id(t)));
        let user = (!r.user_id.is_empty()).then(|| v.check("user_id", fields::user_id(&r.user_id)));
        if user.is_none() && tenant.is_none() {
            v.add("user_id", "set user_id, tenant_id or both");
        }
        let reason = if r.reason.is_empty() {
            "revoked".to_owned()
        } else {
            r.reason
        };
        v.build(|| {
            // Each is absent (`None`), or present and, once built, valid.
            let tenant: Option<TenantId> = match tenant {
                None => None,
                Some(checked) => Some(checked?),
            };
            let user: Option<UserId> = match user {
                None => None,
                Some(checked) => Some(checked?),
            };
            let which = match (user, tenant) {
                (Some(user), tenant) => Revoke::User(user, tenant),
                (None, Some(tenant)) => Revoke::Tenant(tenant),
                (None, None) => return None,
            };
            Some(Self {
                which,
                reason,
                audit_tenant: tenant.unwrap_or_else(|| TenantId::from_uuid(uuid::Uuid::nil())),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(err: &InvalidRequest) -> Vec<&str> {
        err.violations().iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn create_user_reports_every_bad_field() {
        let err = CreateUser::try_from(pb::CreateUserRequest {
            email: "nope".into(),
            password: "short".into(),
            display_name: "x".repeat(201),
            platform_role: 99,
        })
        .expect_err("all four are bad");
        assert_eq!(
            fields_of(&err),
            ["email", "password", "display_name", "platform_role"]
        );
    }

    #[test]
    fn revoke_sessions_needs_a_user_or_a_tenant_and_says_which_is_malformed() {
        let err =
            RevokeSessions::try_from(pb::RevokeSessionsRequest::default()).expect_err("neither");
        assert_eq!(fields_of(&err), ["user_id"]);
        let err = RevokeSessions::try_from(pb::RevokeSessionsRequest {
            user_id: "x".into(),
            tenant_id: Some("y".into()),
            reason: String::new(),
        })
        .expect_err("both malformed");
        assert_eq!(fields_of(&err), ["tenant_id", "user_id"]);
        let tenant = TenantId::new_v7();
        let ok = RevokeSessions::try_from(pb::RevokeSessionsRequest {
            user_id: String::new(),
            tenant_id: Some(tenant.to_string()),
            reason: String::new(),
        })
        .expect("a tenant alone");
        assert!(matches!(ok.which, Revoke::Tenant(t) if t == tenant));
        assert_eq!((ok.reason.as_str(), ok.audit_tenant), ("revoked", tenant));
    }

    #[test]
    fn switch_needs_an_id_or_a_slug() {
        let none = pb::SwitchTenantRequest { tenant: None };
        assert_eq!(
            fields_of(&SwitchTarget::try_from(&none).expect_err("none")),
            ["tenant"]
        );
        let bad = pb::SwitchTenantRequest {
            tenant: Some(pb::switch_tenant_request::Tenant::TenantId("x".into())),
        };
        assert_eq!(
            fields_of(&SwitchTarget::try_from(&bad).expect_err("bad")),
            ["tenant_id"]
        );
    }
}

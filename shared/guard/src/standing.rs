//! What may change about a verified identity while its call is under way
//! (the token stays valid): the guard checks it on arrival, and the handler
//! again as it takes the [`crate::RequestContext`], after any wait in its
//! tenant's queue and after the request's message arrived (a caller may hold
//! it back for up to the handler timeout).

use bulkhead_context::{Principal, TenantUser};

use crate::{GuardError, InactiveTenants, RevokedSessions};

/// What may change about a verified identity after its token was signed:
/// its session revoked, its tenant deactivated.
#[derive(Debug, Clone)]
pub(crate) struct Standing {
    revoked: RevokedSessions,
    inactive: InactiveTenants,
}

impl Standing {
    pub(crate) const fn new(revoked: RevokedSessions, inactive: InactiveTenants) -> Self {
        Self { revoked, inactive }
    }

    pub(crate) fn with_inactive(self, inactive: InactiveTenants) -> Self {
        Self { inactive, ..self }
    }

    /// The user's session is not revoked, and revocations are heard.
    pub(crate) fn session(&self, user: &TenantUser) -> Result<(), GuardError> {
        if self.revoked.is_revoked(user.session_id) {
            return Err(GuardError::Revoked);
        }
        // Fail closed: a revocation may be on its way and unheard.
        if !self.revoked.is_current() {
            return Err(GuardError::RevocationFeedLost);
        }
        Ok(())
    }

    /// The principal's tenant, if it has one, is active.
    pub(crate) fn tenant(&self, principal: &Principal) -> Result<(), GuardError> {
        if principal
            .tenant_id()
            .is_some_and(|t| self.inactive.contains(t))
        {
            return Err(GuardError::TenantInactive);
        }
        Ok(())
    }

    /// Both, as on arrival (for a context taken later).
    pub(crate) fn check(&self, principal: &Principal) -> Result<(), GuardError> {
        if let Some(user) = principal.user() {
            self.session(user)?;
        }
        self.tenant(principal)
    }
}

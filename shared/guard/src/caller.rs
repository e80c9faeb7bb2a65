//! What the guard learned of a caller, for the layers outside it (metrics):
//! a slot the outer layer puts on the request and reads when the call ends.

use std::sync::{Arc, OnceLock};

use bulkhead_context::TenantId;

/// The tenant the guard authenticated the caller in, once it did.
#[derive(Debug, Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<TenantId>>);

impl CallerSlot {
    /// Records the caller's tenant (the first time only).
    pub fn set(&self, tenant: TenantId) {
        let _ = self.0.set(tenant);
    }

    /// The caller's tenant, if the guard authenticated one.
    #[must_use]
    pub fn tenant(&self) -> Option<TenantId> {
        self.0.get().copied()
    }
}

//! All generated protobuf and gRPC code of Bulkhead, one module per service package,
//! plus the encoded file descriptor set that server reflection serves.

#![allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations
)]

/// `bulkhead.auth.v1`: users, logins, tokens and revocation.
pub mod auth {
    /// Version 1 of the Auth API.
    pub mod v1 {
        tonic::include_proto!("bulkhead.auth.v1");
    }
}

/// `bulkhead.tenant.v1`: tenants, memberships and organization settings.
pub mod tenant {
    /// Version 1 of the Tenant API.
    pub mod v1 {
        tonic::include_proto!("bulkhead.tenant.v1");
    }
}

/// `bulkhead.task.v1`: tasks and compliance records.
pub mod task {
    /// Version 1 of the Task API.
    pub mod v1 {
        tonic::include_proto!("bulkhead.task.v1");
    }
}

/// `bulkhead.audit.v1`: the append-only, hash-chained audit log.
pub mod audit {
    /// Version 1 of the Audit API.
    pub mod v1 {
        tonic::include_proto!("bulkhead.audit.v1");
    }
}

/// The encoded `FileDescriptorSet` of every Bulkhead proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bulkhead_descriptor.bin"));

/// The method names (`Login`) of the gRPC service `service`
/// (`bulkhead.auth.v1.AuthService`), from the descriptor set; none for a
/// service that does not exist.
///
/// # Panics
/// Never: the descriptor set is built with this crate.
#[must_use]
pub fn method_names(service: &str) -> Vec<String> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the descriptor set built with this crate");
    set.file
        .iter()
        .flat_map(|f| f.service.iter().map(move |s| (f.package(), s)))
        .filter(|(package, s)| format!("{package}.{}", s.name()) == service)
        .flat_map(|(_, s)| s.method.iter().map(|m| m.name().to_owned()))
        .collect()
}

/// Roles between the wire and the domain, in one place.
mod roles {
    use bulkhead_context::{PlatformRole, TenantRole};

    use crate::auth::v1::PlatformRole as PbPlatformRole;
    use crate::tenant::v1::TenantRole as PbTenantRole;

    impl From<TenantRole> for PbTenantRole {
        fn from(role: TenantRole) -> Self {
            match role {
                TenantRole::Owner => Self::Owner,
                TenantRole::Admin => Self::Admin,
                TenantRole::Member => Self::Member,
                TenantRole::Viewer => Self::Viewer,
            }
        }
    }

    impl PbTenantRole {
        /// The domain role; `UNSPECIFIED` has none.
        #[must_use]
        pub fn to_domain(self) -> Option<TenantRole> {
            match self {
                Self::Owner => Some(TenantRole::Owner),
                Self::Admin => Some(TenantRole::Admin),
                Self::Member => Some(TenantRole::Member),
                Self::Viewer => Some(TenantRole::Viewer),
                Self::Unspecified => None,
            }
        }

        /// The domain role of a wire number; unknown numbers and `UNSPECIFIED` have none.
        #[must_use]
        pub fn domain_from_i32(value: i32) -> Option<TenantRole> {
            Self::try_from(value).ok()?.to_domain()
        }
    }

    impl From<PlatformRole> for PbPlatformRole {
        fn from(role: PlatformRole) -> Self {
            match role {
                PlatformRole::SuperAdmin => Self::SuperAdmin,
                PlatformRole::User => Self::User,
            }
        }
    }
}

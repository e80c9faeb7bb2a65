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

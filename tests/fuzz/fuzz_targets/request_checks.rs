//! Every RPC's request checks on arbitrary bytes: the first byte picks the
//! RPC (of the descriptor set), the rest is its body. Never a panic; a
//! refusal is INVALID_ARGUMENT (Login: UNAUTHENTICATED, as a wrong password).
#![no_main]

use std::sync::OnceLock;

use bulkhead_context::TenantId;
use libfuzzer_sys::fuzz_target;
use tonic::Code;

const SERVICES: [&str; 5] = [
    "bulkhead.auth.v1.AuthService",
    "bulkhead.tenant.v1.TenantService",
    "bulkhead.task.v1.TaskService",
    "bulkhead.task.v1.CatalogService",
    "bulkhead.audit.v1.AuditService",
];

fn rpcs() -> &'static [String] {
    static RPCS: OnceLock<Vec<String>> = OnceLock::new();
    RPCS.get_or_init(|| {
        SERVICES
            .iter()
            .flat_map(|s| {
                bulkhead_proto::method_names(s)
                    .into_iter()
                    .map(move |m| format!("/{s}/{m}"))
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((pick, body)) = data.split_first() else {
        return;
    };
    let rpcs = rpcs();
    let path = &rpcs[usize::from(*pick) % rpcs.len()];
    let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(7));
    let checked = bulkhead_auth::checks::check_request(path, body)
        .or_else(|| bulkhead_tenant::checks::check_request(path, body))
        .or_else(|| bulkhead_task::checks::check_request(path, body, tenant))
        .or_else(|| bulkhead_audit::checks::check_request(path, body, tenant))
        .expect("every RPC has a checker");
    if let Err(status) = checked {
        assert!(
            status.code() == Code::InvalidArgument
                || (path.ends_with("/Login") && status.code() == Code::Unauthenticated),
            "{path}: {status:?}"
        );
    }
});

//! The four services of the binary, each a [`ServiceModule`]: `up` and `serve`
//! iterate over them and never look inside one.

use std::sync::Arc;

use bulkhead_server::{CredentialsFactory, ServiceModule};

/// A Bulkhead service, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ServiceKind {
    /// Users, logins, tokens.
    Auth,
    /// Tenants, memberships, settings.
    Tenant,
    /// Tasks, compliance records and the catalog (services, requests, bookings).
    Task,
    /// The audit log.
    Audit,
}

impl ServiceKind {
    /// All four, in port order.
    pub const ALL: [Self; 4] = [Self::Auth, Self::Tenant, Self::Task, Self::Audit];

    /// The short name (`tenant`): its command-line spelling, which is also its
    /// module's name (a test checks both).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Tenant => "tenant",
            Self::Task => "task",
            Self::Audit => "audit",
        }
    }

    /// Its module, with default settings (Auth without keys): enough to know
    /// what it is.
    #[must_use]
    pub fn module(self) -> Arc<dyn ServiceModule> {
        module(self, Settings::default())
    }

    /// The fully-qualified name of its primary gRPC service.
    #[must_use]
    pub fn grpc_name(self) -> &'static str {
        self.module().grpc_name()
    }

    /// Every gRPC service on its port, the primary one first.
    #[must_use]
    pub fn grpc_services(self) -> &'static [&'static str] {
        self.module().grpc_services()
    }

    /// Its roles, database and migrations.
    #[must_use]
    pub fn schema(self) -> &'static bulkhead_db::schema::ServiceSchema {
        self.module().schema()
    }
}

/// What the services that have settings are configured with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Auth: its signing keys and settings.
    pub auth: bulkhead_auth::AuthModule,
    /// Task: whether SUPER_ADMINs read across tenants.
    pub task: bulkhead_task::TaskModule,
    /// Audit: its checkpoint key.
    pub audit: bulkhead_audit::AuditModule,
}

/// The four services, in port order, configured as `settings` says.
#[must_use]
pub fn modules(settings: Settings) -> Vec<Arc<dyn ServiceModule>> {
    vec![
        Arc::new(settings.auth),
        Arc::new(bulkhead_tenant::TenantModule),
        Arc::new(settings.task),
        Arc::new(settings.audit),
    ]
}

/// The module of `kind`.
///
/// # Panics
/// Never: [`modules`] has one module per kind (a test checks it).
#[must_use]
pub fn module(kind: ServiceKind, settings: Settings) -> Arc<dyn ServiceModule> {
    modules(settings)
        .into_iter()
        .find(|m| m.name() == kind.name())
        .expect("a module for every service kind")
}

/// Credentials minted in this process with Auth's signing key (`up`, and Auth
/// itself): no call to `IssueServiceToken` needed.
#[must_use]
pub fn local_credentials(
    key: Arc<bulkhead_guard::token::SigningKey>,
    config: bulkhead_guard::VerifierConfig,
) -> CredentialsFactory {
    Arc::new(move |service: &str| {
        Arc::new(bulkhead_clients::LocalServiceTokens::new(
            key.clone(),
            service,
            config.clone(),
        )) as Arc<dyn bulkhead_clients::ServiceCredentials>
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_every_service_has_a_policy_entry() {
        for module in modules(Settings::default()) {
            for service in module.grpc_services() {
                let missing = module
                    .policy()
                    .methods_without_rule(bulkhead_proto::FILE_DESCRIPTOR_SET, service);
                assert!(
                    missing.is_empty(),
                    "{service}: RPCs without a rule: {missing:?}"
                );
            }
        }
    }

    #[test]
    fn every_kind_has_its_module_in_port_order() {
        let modules = modules(Settings::default());
        let names: Vec<&str> = modules.iter().map(|m| m.name()).collect();
        let kinds: Vec<&str> = ServiceKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, kinds);
        let ports: Vec<u16> = modules.iter().map(|m| m.default_port()).collect();
        assert_eq!(ports, [50051, 50052, 50053, 50054]);
        for kind in ServiceKind::ALL {
            use clap::ValueEnum as _;
            let spelled = kind.to_possible_value().expect("listed");
            assert_eq!(spelled.get_name(), kind.name());
            assert_eq!(module(kind, Settings::default()).name(), kind.name());
        }
    }
}

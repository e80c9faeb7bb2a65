//! Per-service policy tables: method → who may call it.
//!
//! A method missing from the table is denied. A test of the `bulkhead` binary checks
//! that every method of every service's proto has an entry
//! ([`Policy::methods_without_rule`]).

use std::collections::HashMap;

use bulkhead_context::{PlatformRole, Principal, TenantRole};
use prost::Message as _;

/// Who may call one method. Alternatives combine with "or".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rule {
    public: bool,
    min_tenant_role: Option<TenantRole>,
    super_admin: bool,
    service: bool,
    /// With `service`: only these services (by the name in their token); empty:
    /// any service.
    services: &'static [&'static str],
}

impl Rule {
    /// Anyone, without a token (login, key set, health, reflection).
    #[must_use]
    pub const fn public() -> Self {
        Self {
            public: true,
            min_tenant_role: None,
            super_admin: false,
            service: false,
            services: &[],
        }
    }

    /// A user whose role in their active tenant is at least `role`.
    #[must_use]
    pub const fn tenant_role(role: TenantRole) -> Self {
        Self {
            public: false,
            min_tenant_role: Some(role),
            super_admin: false,
            service: false,
            services: &[],
        }
    }

    /// A user with the platform role `SUPER_ADMIN`.
    #[must_use]
    pub const fn super_admin() -> Self {
        Self {
            public: false,
            min_tenant_role: None,
            super_admin: true,
            service: false,
            services: &[],
        }
    }

    /// A service principal (internal RPCs).
    #[must_use]
    pub const fn service() -> Self {
        Self {
            public: false,
            min_tenant_role: None,
            super_admin: false,
            service: true,
            services: &[],
        }
    }

    /// Only the named services (internal RPCs with one known caller): the name
    /// comes from the service's token, never from the request.
    #[must_use]
    pub const fn service_named(services: &'static [&'static str]) -> Self {
        Self {
            public: false,
            min_tenant_role: None,
            super_admin: false,
            service: true,
            services,
        }
    }

    /// This rule, or a `SUPER_ADMIN` user.
    #[must_use]
    pub const fn or_super_admin(mut self) -> Self {
        self.super_admin = true;
        self
    }

    /// This rule, or one of the named services (by the name in their token).
    #[must_use]
    pub const fn or_service_named(mut self, services: &'static [&'static str]) -> Self {
        self.service = true;
        self.services = services;
        self
    }

    /// This rule, or any service (for a public method services keep up
    /// with: the key set, their tokens; a service's call to it then counts
    /// as the service's for its share, not as an anonymous caller's).
    #[must_use]
    pub const fn or_any_service(mut self) -> Self {
        self.service = true;
        self
    }

    /// Whether no token is needed.
    #[must_use]
    pub const fn is_public(&self) -> bool {
        self.public
    }

    /// Whether the service named `name` may call the method as a service.
    #[must_use]
    pub fn allows_service(&self, name: &str) -> bool {
        self.service && (self.services.is_empty() || self.services.contains(&name))
    }

    /// Whether `principal` may call the method.
    #[must_use]
    pub fn allows(&self, principal: &Principal) -> bool {
        let user_ok = principal.user().is_some_and(|user| {
            self.min_tenant_role
                .is_some_and(|min| user.tenant_role >= min)
                || (self.super_admin && user.platform_role == PlatformRole::SuperAdmin)
        });
        let service_ok = self.service
            && principal.service().is_some_and(|service| {
                self.services.is_empty() || self.services.contains(&service.name.as_str())
            });
        self.public || user_ok || service_ok
    }
}

/// A service's table of rules, keyed by gRPC path (`/pkg.Service/Method`).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: HashMap<String, Rule>,
}

/// Health checks, which every server exposes without a token.
const HEALTH: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// Reflection, which every server exposes without a token: the one method
/// whose requests stream (for as long as its client likes).
pub const REFLECTION: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

impl Policy {
    /// A table with only health and reflection (public).
    #[must_use]
    pub fn new() -> Self {
        let mut policy = Self::default();
        for path in HEALTH.into_iter().chain(REFLECTION) {
            policy.rules.insert(path.to_owned(), Rule::public());
        }
        policy
    }

    /// Adds the rule for `service`'s `method` (`"bulkhead.tenant.v1.TenantService"`,
    /// `"GetTenant"`).
    #[must_use]
    pub fn allow(mut self, service: &str, method: &str, rule: Rule) -> Self {
        self.rules.insert(format!("/{service}/{method}"), rule);
        self
    }

    /// Every internal method (not public) a service principal may call, with
    /// the services its rule names (an empty list: any service), sorted by
    /// path: what a test holds the internal-RPC matrix to.
    #[must_use]
    pub fn service_callers(&self) -> Vec<(String, Vec<&'static str>)> {
        let mut callers: Vec<(String, Vec<&'static str>)> = self
            .rules
            .iter()
            .filter(|(_, rule)| rule.service && !rule.public)
            .map(|(path, rule)| (path.clone(), rule.services.to_vec()))
            .collect();
        callers.sort();
        callers
    }

    /// The rule for a gRPC path, if the table has one.
    #[must_use]
    pub fn rule(&self, path: &str) -> Option<&Rule> {
        self.rules.get(path)
    }

    /// The methods of `service` in the encoded descriptor set `fds` that have no rule:
    /// the policy test of every service asserts this is empty.
    ///
    /// # Panics
    /// When `fds` is not an encoded `FileDescriptorSet`.
    #[must_use]
    pub fn methods_without_rule(&self, fds: &[u8], service: &str) -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(fds).expect("a FileDescriptorSet");
        let mut missing = Vec::new();
        let mut found_service = false;
        for file in &set.file {
            for svc in &file.service {
                let full = format!("{}.{}", file.package(), svc.name());
                if full != service {
                    continue;
                }
                found_service = true;
                for method in &svc.method {
                    let path = format!("/{full}/{}", method.name());
                    if !self.rules.contains_key(&path) {
                        missing.push(path);
                    }
                }
            }
        }
        assert!(found_service, "{service} is not in the descriptor set");
        missing
    }
}

#[cfg(test)]
mod tests {
    use bulkhead_context::{ServiceIdentity, SessionId, TenantId, TenantUser, UserId};

    use super::*;

    fn user(role: TenantRole, platform: PlatformRole) -> Principal {
        Principal::User(TenantUser {
            user_id: UserId::new_v7(),
            session_id: SessionId::new_v7(),
            tenant_id: TenantId::new_v7(),
            tenant_slug: "acme".into(),
            tenant_role: role,
            platform_role: platform,
        })
    }

    fn service() -> Principal {
        Principal::Service(ServiceIdentity {
            name: "tenant".into(),
            scopes: vec![],
        })
    }

    #[test]
    fn tenant_role_rules_admit_that_role_and_above() {
        let rule = Rule::tenant_role(TenantRole::Admin);
        assert!(!rule.allows(&user(TenantRole::Viewer, PlatformRole::User)));
        assert!(!rule.allows(&user(TenantRole::Member, PlatformRole::User)));
        assert!(rule.allows(&user(TenantRole::Admin, PlatformRole::User)));
        assert!(rule.allows(&user(TenantRole::Owner, PlatformRole::User)));
        assert!(!rule.allows(&service()));
        // No bypass: a SUPER_ADMIN viewer is still a viewer here.
        assert!(!rule.allows(&user(TenantRole::Viewer, PlatformRole::SuperAdmin)));
    }

    #[test]
    fn a_named_service_rule_admits_only_those_services() {
        let rule = Rule::service_named(&["tenant"]);
        assert!(rule.allows(&service()));
        let other = Principal::Service(ServiceIdentity {
            name: "audit".into(),
            scopes: vec![],
        });
        assert!(!rule.allows(&other));
        assert!(!rule.allows(&user(TenantRole::Owner, PlatformRole::SuperAdmin)));
    }

    #[test]
    fn super_admin_and_service_rules_are_exact() {
        let rule = Rule::super_admin();
        assert!(rule.allows(&user(TenantRole::Viewer, PlatformRole::SuperAdmin)));
        assert!(!rule.allows(&user(TenantRole::Owner, PlatformRole::User)));
        assert!(!rule.allows(&service()));
        let rule = Rule::service();
        assert!(rule.allows(&service()));
        assert!(!rule.allows(&user(TenantRole::Owner, PlatformRole::SuperAdmin)));
        let owner_or_task = Rule::tenant_role(TenantRole::Owner).or_service_named(&["task"]);
        assert!(owner_or_task.allows(&user(TenantRole::Owner, PlatformRole::User)));
        let named = |name: &str| {
            Principal::Service(bulkhead_context::ServiceIdentity {
                name: name.into(),
                scopes: vec![],
            })
        };
        assert!(owner_or_task.allows(&named("task")));
        assert!(!owner_or_task.allows(&named("audit")));
    }
}

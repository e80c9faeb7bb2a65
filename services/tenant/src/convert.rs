//! Proto ↔ domain conversions: proto types stop here.

use bulkhead_proto::tenant::v1 as pb;
use bulkhead_rpc::timestamp;

use crate::repo::{Membership, SettingsRow, Tenant};

/// A tenant on the wire.
#[must_use]
pub fn tenant(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        slug: t.slug.clone(),
        name: t.name.clone(),
        domain: t.domain.clone().unwrap_or_default(),
        is_active: t.is_active,
        is_default: t.is_default,
        create_time: Some(timestamp(t.create_time)),
        update_time: Some(timestamp(t.update_time)),
    }
}

/// A membership on the wire.
#[must_use]
pub fn membership(m: &Membership) -> pb::Membership {
    pb::Membership {
        tenant_id: m.tenant_id.to_string(),
        user_id: m.user_id.to_string(),
        role: pb::TenantRole::from(m.role()).into(),
        is_default: m.is_default,
        create_time: Some(timestamp(m.create_time)),
        update_time: Some(timestamp(m.update_time)),
    }
}

/// The effective settings: the tenant's overrides merged over the global default.
#[must_use]
pub fn effective_settings(
    global: &SettingsRow,
    own: Option<&SettingsRow>,
) -> pb::OrganizationSettings {
    let pick = |field: fn(&SettingsRow) -> &Option<String>| {
        own.and_then(|o| field(o).clone())
            .or_else(|| field(global).clone())
            .unwrap_or_default()
    };
    let update_time = own.map_or(global.update_time, |o| {
        o.update_time.max(global.update_time)
    });
    pb::OrganizationSettings {
        display_name: pick(|s| &s.display_name),
        logo_url: pick(|s| &s.logo_url),
        timezone: pick(|s| &s.timezone),
        locale: pick(|s| &s.locale),
        is_global_default: false,
        has_tenant_override: own.is_some(),
        update_time: Some(timestamp(update_time)),
    }
}

/// The global default on the wire.
#[must_use]
pub fn global_settings(global: &SettingsRow) -> pb::OrganizationSettings {
    pb::OrganizationSettings {
        is_global_default: true,
        has_tenant_override: false,
        ..effective_settings(global, None)
    }
}

//! The Tenant service through real gRPC on a socket, the real guard and a real
//! Postgres: every RPC's happy path, validation, role rules and tenant isolation.

mod helpers;

use bulkhead_context::{TenantRole, UserId};
use bulkhead_proto::tenant::v1 as pb;
use bulkhead_testkit::mask;
use helpers::*;
use tonic::Code;

// --- CreateTenant ------------------------------------------------------------------

#[tokio::test]
async fn super_admin_creates_a_tenant_born_with_an_owner_and_audited() {
    let h = spawn_service().await;
    let owner = UserId::new_v7();
    let response = h
        .client
        .clone()
        .create_tenant(h.request(
            &super_admin(),
            pb::CreateTenantRequest {
                slug: "acme".into(),
                name: "  Acme Corp ".into(),
                domain: "App.Acme.com".into(),
                owner_user_id: owner.to_string(),
            },
        ))
        .await
        .expect("created")
        .into_inner();
    let tenant = response.tenant.expect("tenant");
    assert_eq!(
        (tenant.slug.as_str(), tenant.name.as_str()),
        ("acme", "Acme Corp")
    );
    assert_eq!(tenant.domain, "app.acme.com");
    assert!(tenant.is_active);
    let membership = response.owner_membership.expect("owner");
    assert_eq!(membership.user_id, owner.to_string());
    assert_eq!(membership.role, pb::TenantRole::Owner as i32);
    assert!(
        membership.is_default,
        "the owner's first membership is their default"
    );

    let events = h.outbox(&tenant.id, "audit").await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, vec!["tenant.create", "membership.create"]);
    assert_eq!(events[0]["new_value"]["slug"], "acme");
    assert!(
        events[0]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
}

#[tokio::test]
async fn create_tenant_reports_every_bad_field_and_writes_nothing() {
    let h = spawn_service().await;
    let result = h
        .client
        .clone()
        .create_tenant(h.request(
            &super_admin(),
            pb::CreateTenantRequest {
                slug: "A".into(),
                name: " ".into(),
                domain: "not a host".into(),
                owner_user_id: "nobody".into(),
            },
        ))
        .await;
    assert_eq!(
        violated_fields(result),
        vec!["domain", "name", "owner_user_id", "slug"]
    );
    let list = h
        .client
        .clone()
        .list_tenants(h.request(&super_admin(), pb::ListTenantsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert!(list.tenants.is_empty());
}

#[tokio::test]
async fn duplicate_slug_or_domain_already_exists() {
    let h = spawn_service().await;
    let create = |slug: &str, domain: &str| pb::CreateTenantRequest {
        slug: slug.into(),
        name: "x".into(),
        domain: domain.into(),
        owner_user_id: UserId::new_v7().to_string(),
    };
    h.client
        .clone()
        .create_tenant(h.request(&super_admin(), create("taken", "taken.example.com")))
        .await
        .expect("first");
    for request in [create("taken", ""), create("other", "TAKEN.example.com")] {
        assert_code(
            h.client
                .clone()
                .create_tenant(h.request(&super_admin(), request))
                .await,
            Code::AlreadyExists,
        );
    }
}

#[tokio::test]
async fn only_super_admins_create_tenants() {
    let h = spawn_service().await;
    let (tenant, owner) = h.tenant("acme").await;
    let request = || pb::CreateTenantRequest {
        slug: "newco".into(),
        name: "New".into(),
        domain: String::new(),
        owner_user_id: UserId::new_v7().to_string(),
    };
    for role in [TenantRole::Viewer, TenantRole::Member, TenantRole::Admin] {
        let caller = h.member(&tenant, &owner, role).await;
        assert_code(
            h.client
                .clone()
                .create_tenant(h.request(&caller, request()))
                .await,
            Code::PermissionDenied,
        );
    }
    assert_code(
        h.client
            .clone()
            .create_tenant(h.request(&owner, request()))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        h.client
            .clone()
            .create_tenant(h.request(&Caller::Service, request()))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        h.client
            .clone()
            .create_tenant(h.request(&Caller::Nobody, request()))
            .await,
        Code::Unauthenticated,
    );
}

// --- GetTenant / ListTenants / UpdateTenant ------------------------------------------

#[tokio::test]
async fn members_get_their_tenant_and_strangers_get_not_found() {
    let h = spawn_service().await;
    let (acme, acme_owner) = h.tenant("acme").await;
    let (globex, _) = h.tenant("globex").await;
    let viewer = h.member(&acme, &acme_owner, TenantRole::Viewer).await;
    for key in [
        pb::get_tenant_request::Tenant::TenantId(acme.id.clone()),
        pb::get_tenant_request::Tenant::TenantSlug("acme".into()),
    ] {
        let got = h
            .client
            .clone()
            .get_tenant(h.request(&viewer, pb::GetTenantRequest { tenant: Some(key) }))
            .await
            .expect("a member sees their tenant")
            .into_inner();
        assert_eq!(got.tenant.expect("tenant").id, acme.id);
    }
    for key in [
        pb::get_tenant_request::Tenant::TenantId(globex.id.clone()),
        pb::get_tenant_request::Tenant::TenantSlug("globex".into()),
        pb::get_tenant_request::Tenant::TenantSlug("no-such-tenant".into()),
    ] {
        assert_code(
            h.client
                .clone()
                .get_tenant(h.request(&viewer, pb::GetTenantRequest { tenant: Some(key) }))
                .await,
            Code::NotFound,
        );
    }
    let got = h
        .client
        .clone()
        .get_tenant(h.request(
            &super_admin(),
            pb::GetTenantRequest {
                tenant: Some(pb::get_tenant_request::Tenant::TenantSlug("globex".into())),
            },
        ))
        .await
        .expect("super admin sees all");
    assert_eq!(got.into_inner().tenant.expect("tenant").id, globex.id);
    assert_eq!(
        violated_fields(
            h.client
                .clone()
                .get_tenant(h.request(&viewer, pb::GetTenantRequest { tenant: None }))
                .await
        ),
        vec!["tenant"]
    );
}

#[tokio::test]
async fn list_tenants_pages_through_all_for_super_admin_and_own_for_members() {
    let h = spawn_service().await;
    let mut owners = Vec::new();
    for slug in ["alpha", "bravo", "charlie", "delta", "echo"] {
        owners.push(h.tenant(slug).await);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client
            .clone()
            .list_tenants(h.request(
                &super_admin(),
                pb::ListTenantsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    inactive_only: false,
                },
            ))
            .await
            .expect("page")
            .into_inner();
        assert!(page.tenants.len() <= 2);
        seen.extend(page.tenants.into_iter().map(|t| t.slug));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec!["alpha", "bravo", "charlie", "delta", "echo"]);

    let (_, bravo_owner) = &owners[1];
    let own = h
        .client
        .clone()
        .list_tenants(h.request(bravo_owner, pb::ListTenantsRequest::default()))
        .await
        .expect("own")
        .into_inner();
    assert_eq!(
        own.tenants
            .iter()
            .map(|t| t.slug.as_str())
            .collect::<Vec<_>>(),
        vec!["bravo"]
    );

    let bad = h
        .client
        .clone()
        .list_tenants(h.request(
            bravo_owner,
            pb::ListTenantsRequest {
                page_size: -1,
                page_token: "garbage!".into(),
                inactive_only: false,
            },
        ))
        .await;
    assert_eq!(violated_fields(bad), vec!["page_size", "page_token"]);
}

#[tokio::test]
async fn owners_and_admins_update_their_tenant_with_a_mask() {
    let h = spawn_service().await;
    let (tenant, owner) = h.tenant("acme").await;
    let admin = h.member(&tenant, &owner, TenantRole::Admin).await;
    let member = h.member(&tenant, &owner, TenantRole::Member).await;
    let update = |name: &str, domain: &str, paths: &[&str]| pb::UpdateTenantRequest {
        name: name.into(),
        domain: domain.into(),
        update_mask: mask(paths),
    };
    let updated = h
        .client
        .clone()
        .update_tenant(h.request(
            &admin,
            update("Acme Renamed", "ignored.example.com", &["name"]),
        ))
        .await
        .expect("admin updates")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(updated.name, "Acme Renamed");
    assert_eq!(updated.domain, "", "domain was not in the mask");
    assert_code(
        h.client
            .clone()
            .update_tenant(h.request(&member, update("x", "", &["name"])))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        violated_fields(
            h.client
                .clone()
                .update_tenant(h.request(&owner, update("", "bad host", &["name", "domain"])))
                .await
        ),
        vec!["domain", "name"]
    );
    assert_eq!(
        violated_fields(
            h.client
                .clone()
                .update_tenant(h.request(&owner, update("x", "", &["slug"])))
                .await
        ),
        vec!["update_mask"]
    );
    let events = h.outbox(&tenant.id, "audit").await;
    let last = events.last().expect("an event");
    assert_eq!(last["action"], "tenant.update");
    assert_eq!(last["old_value"]["name"], "acme inc");
    assert_eq!(last["new_value"]["name"], "Acme Renamed");
}

// --- members -----------------------------------------------------------------------

#[tokio::test]
async fn member_management_follows_the_role_rules() {
    let h = spawn_service().await;
    let (tenant, owner) = h.tenant("acme").await;
    let admin = h.member(&tenant, &owner, TenantRole::Admin).await;
    let member = h.member(&tenant, &admin, TenantRole::Member).await;
    let viewer = h.member(&tenant, &admin, TenantRole::Viewer).await;

    let add = |role: pb::TenantRole| pb::AddMemberRequest {
        user_id: UserId::new_v7().to_string(),
        role: role.into(),
    };
    // Only an OWNER grants OWNER.
    assert_code(
        h.client
            .clone()
            .add_member(h.request(&admin, add(pb::TenantRole::Owner)))
            .await,
        Code::PermissionDenied,
    );
    h.client
        .clone()
        .add_member(h.request(&owner, add(pb::TenantRole::Owner)))
        .await
        .expect("an owner grants owner");
    for caller in [&member, &viewer] {
        assert_code(
            h.client
                .clone()
                .add_member(h.request(caller, add(pb::TenantRole::Viewer)))
                .await,
            Code::PermissionDenied,
        );
    }
    assert_eq!(
        violated_fields(
            h.client
                .clone()
                .add_member(h.request(
                    &owner,
                    pb::AddMemberRequest {
                        user_id: "x".into(),
                        role: 0
                    }
                ))
                .await
        ),
        vec!["role", "user_id"]
    );
    let again = pb::AddMemberRequest {
        user_id: member.user().user_id.to_string(),
        role: pb::TenantRole::Viewer.into(),
    };
    assert_code(
        h.client.clone().add_member(h.request(&owner, again)).await,
        Code::AlreadyExists,
    );

    // An ADMIN cannot touch an OWNER; an OWNER can.
    let owner_id = owner.user().user_id.to_string();
    assert_code(
        h.client
            .clone()
            .update_member_role(h.request(
                &admin,
                pb::UpdateMemberRoleRequest {
                    user_id: owner_id.clone(),
                    role: pb::TenantRole::Viewer.into(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        h.client
            .clone()
            .remove_member(h.request(
                &admin,
                pb::RemoveMemberRequest {
                    user_id: owner_id.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    // Lowering a role asks Auth to end the member's sessions; removing too.
    let member_id = member.user().user_id.to_string();
    let lowered = h
        .client
        .clone()
        .update_member_role(h.request(
            &admin,
            pb::UpdateMemberRoleRequest {
                user_id: member_id.clone(),
                role: pb::TenantRole::Viewer.into(),
            },
        ))
        .await
        .expect("lowered")
        .into_inner();
    assert_eq!(
        lowered.membership.expect("membership").role,
        pb::TenantRole::Viewer as i32
    );
    h.client
        .clone()
        .remove_member(h.request(
            &admin,
            pb::RemoveMemberRequest {
                user_id: member_id.clone(),
            },
        ))
        .await
        .expect("removed");
    assert_code(
        h.client
            .clone()
            .remove_member(h.request(
                &admin,
                pb::RemoveMemberRequest {
                    user_id: member_id.clone(),
                },
            ))
            .await,
        Code::NotFound,
    );
    let revocations = h.outbox(&tenant.id, "auth.revoke").await;
    assert_eq!(revocations.len(), 2);
    assert!(
        revocations
            .iter()
            .all(|r| r["user_id"] == member_id.as_str())
    );
    let actions: Vec<String> = h
        .outbox(&tenant.id, "audit")
        .await
        .iter()
        .map(|e| e["action"].as_str().expect("action").to_owned())
        .collect();
    assert!(actions.ends_with(&[
        "membership.update".to_owned(),
        "membership.delete".to_owned()
    ]));
}

#[tokio::test]
async fn the_last_owner_can_be_neither_removed_nor_demoted() {
    let h = spawn_service().await;
    let (_tenant, owner) = h.tenant("acme").await;
    let me = owner.user().user_id.to_string();
    assert_code(
        h.client
            .clone()
            .remove_member(h.request(
                &owner,
                pb::RemoveMemberRequest {
                    user_id: me.clone(),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_code(
        h.client
            .clone()
            .update_member_role(h.request(
                &owner,
                pb::UpdateMemberRoleRequest {
                    user_id: me,
                    role: pb::TenantRole::Admin.into(),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn twenty_concurrent_demotions_and_removals_leave_an_owner() {
    let h = spawn_service().await;
    let (tenant, owner) = h.tenant("acme").await;
    let mut owners = vec![owner.clone()];
    for _ in 0..3 {
        owners.push(h.member(&tenant, &owner, TenantRole::Owner).await);
    }
    let mut calls = Vec::new();
    for i in 0..20 {
        let caller = owners[i % owners.len()].clone();
        let target = owners[(i + 1) % owners.len()].user().user_id.to_string();
        let mut client = h.client.clone();
        let request = h.request(&caller, ());
        let (metadata, extensions, ()) = request.into_parts();
        calls.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let r = tonic::Request::from_parts(
                    metadata,
                    extensions,
                    pb::RemoveMemberRequest { user_id: target },
                );
                client.remove_member(r).await.map(drop)
            } else {
                let r = tonic::Request::from_parts(
                    metadata,
                    extensions,
                    pb::UpdateMemberRoleRequest {
                        user_id: target,
                        role: pb::TenantRole::Member.into(),
                    },
                );
                client.update_member_role(r).await.map(drop)
            }
        }));
    }
    for call in calls {
        if let Err(status) = call.await.expect("task") {
            assert!(
                matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::NotFound | Code::PermissionDenied
                ),
                "{status:?}"
            );
        }
    }
    let remaining = h
        .client
        .clone()
        .list_members(h.request(
            &super_admin_in(&tenant),
            pb::ListMembersRequest {
                role: pb::TenantRole::Owner.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .memberships;
    assert!(!remaining.is_empty(), "a tenant always keeps an OWNER");
}

/// A viewer token for `tenant` whose user is not a member: reads go through RLS by tenant.
fn super_admin_in(tenant: &pb::Tenant) -> Caller {
    user_in(tenant, UserId::new_v7(), TenantRole::Viewer)
}

#[tokio::test]
async fn list_members_pages_and_filters_by_role() {
    let h = spawn_service().await;
    let (tenant, owner) = h.tenant("acme").await;
    for _ in 0..4 {
        h.member(&tenant, &owner, TenantRole::Viewer).await;
    }
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client
            .clone()
            .list_members(h.request(
                &owner,
                pb::ListMembersRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    role: 0,
                },
            ))
            .await
            .expect("page")
            .into_inner();
        all.extend(page.memberships);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all.len(), 5);
    let viewers = h
        .client
        .clone()
        .list_members(h.request(
            &owner,
            pb::ListMembersRequest {
                role: pb::TenantRole::Viewer.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(viewers.memberships.len(), 4);
}

// --- settings ----------------------------------------------------------------------

#[tokio::test]
async fn settings_merge_tenant_overrides_over_the_global_default() {
    let h = spawn_service().await;
    let (tenant, owner) = h.tenant("acme").await;
    let viewer = h.member(&tenant, &owner, TenantRole::Viewer).await;
    let get = |caller: &Caller| {
        let mut client = h.client.clone();
        let request = h.request(caller, pb::GetSettingsRequest::default());
        async move { client.get_settings(request).await }
    };
    let before = get(&viewer)
        .await
        .expect("get")
        .into_inner()
        .settings
        .expect("settings");
    assert_eq!(
        (
            before.display_name.as_str(),
            before.timezone.as_str(),
            before.locale.as_str()
        ),
        ("Bulkhead", "UTC", "en-US")
    );
    assert!(!before.has_tenant_override);

    let settings = pb::OrganizationSettings {
        display_name: "Acme".into(),
        timezone: "Europe/Paris".into(),
        ..Default::default()
    };
    let updated = h
        .client
        .clone()
        .update_settings(h.request(
            &owner,
            pb::UpdateSettingsRequest {
                settings: Some(settings),
                update_mask: mask(&["display_name", "timezone"]),
                global_default: false,
            },
        ))
        .await
        .expect("update")
        .into_inner()
        .settings
        .expect("settings");
    assert_eq!(
        (
            updated.display_name.as_str(),
            updated.timezone.as_str(),
            updated.locale.as_str()
        ),
        ("Acme", "Europe/Paris", "en-US")
    );
    assert!(updated.has_tenant_override);

    // The global default changes show through where the tenant has no override.
    let global = pb::OrganizationSettings {
        locale: "fr-FR".into(),
        display_name: "Platform".into(),
        ..Default::default()
    };
    h.client
        .clone()
        .update_settings(h.request(
            &super_admin(),
            pb::UpdateSettingsRequest {
                settings: Some(global.clone()),
                update_mask: mask(&["locale", "display_name"]),
                global_default: true,
            },
        ))
        .await
        .expect("super admin updates the default");
    let merged = get(&viewer)
        .await
        .expect("get")
        .into_inner()
        .settings
        .expect("settings");
    assert_eq!(
        (merged.display_name.as_str(), merged.locale.as_str()),
        ("Acme", "fr-FR")
    );

    // Clearing an override lets the default show through again.
    let cleared = h
        .client
        .clone()
        .update_settings(h.request(
            &owner,
            pb::UpdateSettingsRequest {
                settings: Some(pb::OrganizationSettings::default()),
                update_mask: mask(&["display_name"]),
                global_default: false,
            },
        ))
        .await
        .expect("clear")
        .into_inner()
        .settings
        .expect("settings");
    assert_eq!(cleared.display_name, "Platform");

    // Only a SUPER_ADMIN touches the default; viewers change nothing; bad values are named.
    assert_code(
        h.client
            .clone()
            .update_settings(h.request(
                &owner,
                pb::UpdateSettingsRequest {
                    settings: Some(global),
                    update_mask: mask(&["locale"]),
                    global_default: true,
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        h.client
            .clone()
            .update_settings(h.request(
                &viewer,
                pb::UpdateSettingsRequest {
                    settings: None,
                    update_mask: mask(&["locale"]),
                    global_default: false,
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    let bad = pb::OrganizationSettings {
        timezone: "Mars/Base".into(),
        locale: "english".into(),
        logo_url: "ftp://x".into(),
        display_name: String::new(),
        ..Default::default()
    };
    assert_eq!(
        violated_fields(
            h.client
                .clone()
                .update_settings(h.request(
                    &owner,
                    pb::UpdateSettingsRequest {
                        settings: Some(bad),
                        update_mask: mask(&["timezone", "locale", "logo_url", "colour"]),
                        global_default: false
                    }
                ))
                .await
        ),
        vec![
            "settings.locale",
            "settings.logo_url",
            "settings.timezone",
            "update_mask"
        ]
    );
}

#[tokio::test]
async fn partial_unique_indexes_allow_one_global_and_one_per_tenant_and_one_default() {
    use diesel_async::RunQueryDsl as _;
    let h = spawn_service().await;
    let (tenant, _) = h.tenant("acme").await;
    h.tenant("globex").await;
    let mut conn = h.database.admin_connection().await;
    let second_global = diesel::sql_query(
        "INSERT INTO organization_settings (id, tenant_id, display_name) VALUES (gen_random_uuid(), NULL, 'x')",
    )
    .execute(&mut conn)
    .await;
    assert!(second_global.is_err(), "one global default only");
    let first = format!(
        "INSERT INTO organization_settings (id, tenant_id) VALUES (gen_random_uuid(), '{}')",
        tenant.id
    );
    diesel::sql_query(&first)
        .execute(&mut conn)
        .await
        .expect("a tenant's first row");
    assert!(
        diesel::sql_query(&first).execute(&mut conn).await.is_err(),
        "one row per tenant"
    );
    diesel::sql_query("UPDATE tenants SET is_default = true WHERE slug = 'acme'")
        .execute(&mut conn)
        .await
        .expect("one default tenant");
    assert!(
        diesel::sql_query("UPDATE tenants SET is_default = true WHERE slug = 'globex'")
            .execute(&mut conn)
            .await
            .is_err(),
        "at most one default tenant"
    );
}

// --- internal RPCs -----------------------------------------------------------------

#[tokio::test]
async fn internal_rpcs_serve_services_only() {
    let h = spawn_service().await;
    let (acme, owner) = h.tenant("acme").await;
    let (globex, globex_owner) = h.tenant("globex").await;
    let user = owner.user().user_id;
    // The same person joins globex as a VIEWER.
    h.client
        .clone()
        .add_member(h.request(
            &globex_owner,
            pb::AddMemberRequest {
                user_id: user.to_string(),
                role: pb::TenantRole::Viewer.into(),
            },
        ))
        .await
        .expect("add");
    let list = |caller: &Caller| {
        let mut client = h.client.clone();
        let request = h.request(
            caller,
            pb::ListUserMembershipsRequest {
                user_id: user.to_string(),
            },
        );
        async move { client.list_user_memberships(request).await }
    };
    let memberships = h
        .client
        .clone()
        .list_user_memberships(h.as_auth(pb::ListUserMembershipsRequest {
            user_id: user.to_string(),
        }))
        .await
        .expect("auth")
        .into_inner()
        .memberships;
    let slugs: Vec<&str> = memberships
        .iter()
        .map(|m| m.tenant.as_ref().expect("tenant").slug.as_str())
        .collect();
    assert_eq!(slugs, vec!["acme", "globex"]);
    assert_code(list(&owner).await, Code::PermissionDenied);
    assert_code(list(&Caller::Nobody).await, Code::Unauthenticated);

    // CheckMembership answers in the tenant of the user the service acts for.
    let check = |caller: &Caller, who: UserId| {
        let mut client = h.client.clone();
        let request = h.request(
            caller,
            pb::CheckMembershipRequest {
                user_id: who.to_string(),
            },
        );
        async move { client.check_membership(request).await }
    };
    let as_task_for_owner = Caller::ServiceFor(owner.user().clone());
    let role = check(&as_task_for_owner, user)
        .await
        .expect("member")
        .into_inner()
        .role;
    assert_eq!(role, pb::TenantRole::Owner as i32);
    assert_code(
        check(&as_task_for_owner, UserId::new_v7()).await,
        Code::NotFound,
    );
    assert_code(check(&Caller::Service, user).await, Code::PermissionDenied);
    assert_code(check(&owner, user).await, Code::PermissionDenied);
    let _ = (acme, globex);
}

// --- deactivation ------------------------------------------------------------------

#[tokio::test]
async fn a_deactivated_tenant_answers_failed_precondition_at_once() {
    let h = spawn_service().await;
    let (tenant, owner) = h.tenant("acme").await;
    let set = |active: bool| pb::SetTenantActiveRequest {
        tenant_id: tenant.id.clone(),
        is_active: active,
    };
    assert_code(
        h.client
            .clone()
            .set_tenant_active(h.request(&owner, set(false)))
            .await,
        Code::PermissionDenied,
    );
    let off = h
        .client
        .clone()
        .set_tenant_active(h.request(&super_admin(), set(false)))
        .await
        .expect("deactivated")
        .into_inner();
    assert!(!off.tenant.expect("tenant").is_active);
    let status = assert_code(
        h.client
            .clone()
            .list_members(h.request(&owner, pb::ListMembersRequest::default()))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(status.message(), "tenant inactive");
    assert_code(
        h.client
            .clone()
            .get_settings(h.request(&owner, pb::GetSettingsRequest::default()))
            .await,
        Code::FailedPrecondition,
    );
    let revoke = h.outbox(&tenant.id, "auth.revoke").await;
    assert_eq!(revoke.len(), 1);
    assert_eq!(
        revoke[0]["user_id"],
        serde_json::Value::Null,
        "every session of the tenant"
    );
    // A membership lookup for Auth skips inactive tenants.
    let memberships = h
        .client
        .clone()
        .list_user_memberships(h.as_auth(pb::ListUserMembershipsRequest {
            user_id: owner.user().user_id.to_string(),
        }))
        .await
        .expect("list")
        .into_inner()
        .memberships;
    assert!(memberships.is_empty());

    h.client
        .clone()
        .set_tenant_active(h.request(&super_admin(), set(true)))
        .await
        .expect("reactivated");
    h.client
        .clone()
        .list_members(h.request(&owner, pb::ListMembersRequest::default()))
        .await
        .expect("works again");
}

// --- isolation ---------------------------------------------------------------------

/// A member (even the OWNER) of tenant A reaches nothing of tenant B through any RPC.
#[tokio::test]
async fn an_owner_of_a_sees_and_changes_nothing_of_b_through_any_rpc() {
    let h = spawn_service().await;
    let (a, a_owner) = h.tenant("tenant-a").await;
    let (b, b_owner) = h.tenant("tenant-b").await;
    let b_member = h.member(&b, &b_owner, TenantRole::Member).await;
    let b_member_id = b_member.user().user_id.to_string();
    let b_owner_id = b_owner.user().user_id.to_string();
    let c = || h.client.clone();

    // CreateTenant, SetTenantActive: platform only.
    assert_code(
        c().create_tenant(h.request(
            &a_owner,
            pb::CreateTenantRequest {
                slug: "tenant-b".into(),
                name: "x".into(),
                domain: String::new(),
                owner_user_id: b_owner_id.clone(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    assert_code(
        c().set_tenant_active(h.request(
            &a_owner,
            pb::SetTenantActiveRequest {
                tenant_id: b.id.clone(),
                is_active: false,
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    // GetTenant: B does not exist for A.
    assert_code(
        c().get_tenant(h.request(
            &a_owner,
            pb::GetTenantRequest {
                tenant: Some(pb::get_tenant_request::Tenant::TenantId(b.id.clone())),
            },
        ))
        .await,
        Code::NotFound,
    );
    // ListTenants: only A.
    let listed = c()
        .list_tenants(h.request(&a_owner, pb::ListTenantsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed
            .tenants
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        vec![a.id.as_str()]
    );
    // UpdateTenant: changes A only.
    c().update_tenant(h.request(
        &a_owner,
        pb::UpdateTenantRequest {
            name: "A renamed".into(),
            domain: String::new(),
            update_mask: mask(&["name"]),
        },
    ))
    .await
    .expect("own");
    // Member RPCs name B's users: they are not in A.
    assert_code(
        c().remove_member(h.request(
            &a_owner,
            pb::RemoveMemberRequest {
                user_id: b_member_id.clone(),
            },
        ))
        .await,
        Code::NotFound,
    );
    assert_code(
        c().update_member_role(h.request(
            &a_owner,
            pb::UpdateMemberRoleRequest {
                user_id: b_owner_id.clone(),
                role: pb::TenantRole::Viewer.into(),
            },
        ))
        .await,
        Code::NotFound,
    );
    // AddMember adds B's user to A (a new membership of A), never to B.
    c().add_member(h.request(
        &a_owner,
        pb::AddMemberRequest {
            user_id: b_member_id.clone(),
            role: pb::TenantRole::Viewer.into(),
        },
    ))
    .await
    .expect("adds to A");
    let a_members = c()
        .list_members(h.request(&a_owner, pb::ListMembersRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .memberships;
    assert!(a_members.iter().all(|m| m.tenant_id == a.id));
    // Settings: A's only.
    c().update_settings(h.request(
        &a_owner,
        pb::UpdateSettingsRequest {
            settings: Some(pb::OrganizationSettings {
                display_name: "A only".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
            global_default: false,
        },
    ))
    .await
    .expect("own settings");
    // Internal RPCs: not for users.
    assert_code(
        c().list_user_memberships(h.request(
            &a_owner,
            pb::ListUserMembershipsRequest {
                user_id: b_owner_id.clone(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    assert_code(
        c().check_membership(h.request(
            &a_owner,
            pb::CheckMembershipRequest {
                user_id: b_owner_id.clone(),
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    // A forged x-tenant-id naming B is refused outright.
    let mut forged = h.request(&a_owner, pb::ListMembersRequest::default());
    forged
        .metadata_mut()
        .insert("x-tenant-id", b.id.parse().expect("ascii"));
    assert_code(c().list_members(forged).await, Code::PermissionDenied);

    // B is exactly as it was.
    let b_view = h.request(
        &b_owner,
        pb::GetTenantRequest {
            tenant: Some(pb::get_tenant_request::Tenant::TenantId(b.id.clone())),
        },
    );
    let b_now = c()
        .get_tenant(b_view)
        .await
        .expect("b")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(
        (b_now.name.as_str(), b_now.is_active),
        ("tenant-b inc", true)
    );
    let b_members = c()
        .list_members(h.request(&b_owner, pb::ListMembersRequest::default()))
        .await
        .expect("b members")
        .into_inner()
        .memberships;
    assert_eq!(b_members.len(), 2);
    assert!(b_members.iter().all(|m| m.tenant_id == b.id));
    let b_settings = c()
        .get_settings(h.request(&b_owner, pb::GetSettingsRequest::default()))
        .await
        .expect("b settings")
        .into_inner()
        .settings
        .expect("settings");
    assert_eq!(b_settings.display_name, "Bulkhead");
    assert!(!b_settings.has_tenant_override);
}

// --- the role matrix ------------------------------------------------------------------

/// What a caller gets from an RPC: refused by the guard or the live-role check, or
/// let through to an answer about the request itself (OK, or a domain refusal such
/// as NOT_FOUND for a user who is no member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    Denied,
    Unauthenticated,
}

/// # Panics
/// On a status no caller should ever get: a missing handler (UNIMPLEMENTED) or a
/// failure of the service itself is never counted as "allowed".
fn outcome(result: Result<(), tonic::Status>) -> Outcome {
    match result {
        Ok(()) => Outcome::Allowed,
        Err(s) if s.code() == Code::Unauthenticated => Outcome::Unauthenticated,
        Err(s) if s.code() == Code::PermissionDenied => Outcome::Denied,
        Err(s)
            if matches!(
                s.code(),
                Code::NotFound
                    | Code::AlreadyExists
                    | Code::InvalidArgument
                    | Code::FailedPrecondition
            ) =>
        {
            Outcome::Allowed
        }
        Err(s) => panic!("an answer no caller should get: {s:?}"),
    }
}

/// Every RPC against every kind of caller: VIEWER, MEMBER, ADMIN, OWNER,
/// SUPER_ADMIN, a service, a service acting for an OWNER, and nobody.
#[tokio::test]
async fn every_rpc_admits_exactly_the_roles_its_rule_names() {
    use Outcome::{Allowed as A, Denied as D, Unauthenticated as U};
    let h = spawn_service().await;
    let (tenant, owner) = h.tenant("acme").await;
    let admin = h.member(&tenant, &owner, TenantRole::Admin).await;
    let member = h.member(&tenant, &owner, TenantRole::Member).await;
    let viewer = h.member(&tenant, &owner, TenantRole::Viewer).await;
    let callers = [
        viewer.clone(),
        member.clone(),
        admin.clone(),
        owner.clone(),
        super_admin(),
        Caller::Service,
        Caller::ServiceFor(owner.user().clone()),
        Caller::Nobody,
    ];
    let someone = UserId::new_v7().to_string();
    let new_member = |role: pb::TenantRole| pb::AddMemberRequest {
        user_id: UserId::new_v7().to_string(),
        role: role.into(),
    };

    //                                 viewer member admin owner super service svc+owner nobody
    let table: Vec<(&str, [Outcome; 8])> = vec![
        ("CreateTenant", [D, D, D, D, A, D, D, U]),
        ("GetTenant", [A, A, A, A, A, D, A, U]),
        ("ListTenants", [A, A, A, A, A, A, A, U]),
        ("UpdateTenant", [D, D, A, A, D, D, A, U]),
        ("SetTenantActive", [D, D, D, D, A, D, D, U]),
        ("AddMember", [D, D, A, A, D, D, A, U]),
        ("RemoveMember", [D, D, A, A, D, D, A, U]),
        ("UpdateMemberRole", [D, D, A, A, D, D, A, U]),
        ("ListMembers", [A, A, A, A, A, D, A, U]),
        ("GetSettings", [A, A, A, A, A, D, A, U]),
        ("UpdateSettings", [D, D, A, A, A, D, A, U]),
        // Auth's alone: Task's token (the matrix's service) is refused; Auth's
        // is checked below.
        ("ListUserMemberships", [D, D, D, D, D, D, D, U]),
        // "The caller's tenant" is the user's the service acts for: a bare service has none.
        ("CheckMembership", [D, D, D, D, D, D, A, U]),
    ];
    let methods = bulkhead_proto::method_names(bulkhead_tenant::SERVICE_NAME);
    let mut listed: Vec<&str> = table.iter().map(|(m, _)| *m).collect();
    listed.sort_unstable();
    let mut all: Vec<&str> = methods.iter().map(String::as_str).collect();
    all.sort_unstable();
    assert_eq!(listed, all, "the matrix lists every RPC of TenantService");

    for (method, expected) in &table {
        for (caller, want) in callers.iter().zip(expected) {
            let mut c = h.client.clone();
            let got = match *method {
                "CreateTenant" => outcome(
                    c.create_tenant(h.request(
                        caller,
                        pb::CreateTenantRequest {
                            slug: "x-y-z".into(),
                            name: "x".into(),
                            domain: String::new(),
                            owner_user_id: someone.clone(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                // A nonsense slug: the rule is checked before the lookup answers NOT_FOUND.
                "GetTenant" => outcome(
                    c.get_tenant(h.request(
                        caller,
                        pb::GetTenantRequest {
                            tenant: Some(pb::get_tenant_request::Tenant::TenantSlug(
                                "no-such".into(),
                            )),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "ListTenants" => outcome(
                    c.list_tenants(h.request(caller, pb::ListTenantsRequest::default()))
                        .await
                        .map(drop),
                ),
                "UpdateTenant" => outcome(
                    c.update_tenant(h.request(
                        caller,
                        pb::UpdateTenantRequest {
                            name: "Acme".into(),
                            domain: String::new(),
                            update_mask: mask(&["name"]),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "SetTenantActive" => outcome(
                    c.set_tenant_active(h.request(
                        caller,
                        pb::SetTenantActiveRequest {
                            tenant_id: tenant.id.clone(),
                            is_active: true,
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "AddMember" => outcome(
                    c.add_member(h.request(caller, new_member(pb::TenantRole::Viewer)))
                        .await
                        .map(drop),
                ),
                "RemoveMember" => outcome(
                    c.remove_member(h.request(
                        caller,
                        pb::RemoveMemberRequest {
                            user_id: someone.clone(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "UpdateMemberRole" => outcome(
                    c.update_member_role(h.request(
                        caller,
                        pb::UpdateMemberRoleRequest {
                            user_id: someone.clone(),
                            role: pb::TenantRole::Viewer.into(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "ListMembers" => outcome(
                    c.list_members(h.request(caller, pb::ListMembersRequest::default()))
                        .await
                        .map(drop),
                ),
                "GetSettings" => outcome(
                    c.get_settings(h.request(caller, pb::GetSettingsRequest::default()))
                        .await
                        .map(drop),
                ),
                "UpdateSettings" => {
                    // SUPER_ADMIN edits the global default; tenant roles their own tenant's.
                    let global = matches!(caller, Caller::User(u) if u.platform_role == bulkhead_context::PlatformRole::SuperAdmin);
                    outcome(
                        c.update_settings(h.request(
                            caller,
                            pb::UpdateSettingsRequest {
                                settings: Some(pb::OrganizationSettings {
                                    locale: "en-GB".into(),
                                    ..Default::default()
                                }),
                                update_mask: mask(&["locale"]),
                                global_default: global,
                            },
                        ))
                        .await
                        .map(drop),
                    )
                }
                "ListUserMemberships" => outcome(
                    c.list_user_memberships(h.request(
                        caller,
                        pb::ListUserMembershipsRequest {
                            user_id: someone.clone(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                "CheckMembership" => outcome(
                    c.check_membership(h.request(
                        caller,
                        pb::CheckMembershipRequest {
                            user_id: someone.clone(),
                        },
                    ))
                    .await
                    .map(drop),
                ),
                other => panic!("no call for {other}"),
            };
            assert_eq!(got, *want, "{method} as {caller:?}");
        }
    }
}

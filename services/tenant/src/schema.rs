//! Diesel's view of the tables in `migrations/` (kept in step with them by hand:
//! the diesel CLI, which needs libpq, is not part of this toolchain).

diesel::table! {
    tenants (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        domain -> Nullable<Text>,
        is_active -> Bool,
        is_default -> Bool,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    memberships (tenant_id, user_id) {
        tenant_id -> Uuid,
        user_id -> Uuid,
        role -> Text,
        is_default -> Bool,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    organization_settings (id) {
        id -> Uuid,
        tenant_id -> Nullable<Uuid>,
        display_name -> Nullable<Text>,
        logo_url -> Nullable<Text>,
        timezone -> Nullable<Text>,
        locale -> Nullable<Text>,
        update_time -> Timestamptz,
    }
}

diesel::joinable!(memberships -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(tenants, memberships, organization_settings);

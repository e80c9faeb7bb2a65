//! Diesel's view of the tables in `migrations/` (kept in step by hand).

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        display_name -> Text,
        platform_role -> Text,
        is_active -> Bool,
        password_hash -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        tenant_id -> Uuid,
        refresh_hash -> Bytea,
        refresh_expires_at -> Timestamptz,
        access_expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoke_reason -> Nullable<Text>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        switched_from -> Nullable<Uuid>,
    }
}

diesel::table! {
    refresh_tokens (hash) {
        hash -> Bytea,
        session_id -> Uuid,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    break_glass_sessions (id) {
        id -> Uuid,
        access_expires_at -> Timestamptz,
        create_time -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoke_reason -> Nullable<Text>,
    }
}

diesel::table! {
    membership_changes (tenant_id, user_id) {
        tenant_id -> Uuid,
        user_id -> Uuid,
        change_order -> Int8,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    refresh_tokens,
    break_glass_sessions,
    membership_changes
);

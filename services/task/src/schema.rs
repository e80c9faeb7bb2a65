//! Diesel's view of the tables in `migrations/` (kept in step with them by hand:
//! the diesel CLI, which needs libpq, is not part of this toolchain).

diesel::table! {
    tasks (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        title -> Text,
        description -> Text,
        status -> Text,
        assignee_id -> Nullable<Uuid>,
        assignee_member_since -> Nullable<Timestamptz>,
        created_by -> Uuid,
        request_id -> Nullable<Text>,
        version -> BigInt,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    compliance_records (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        title -> Text,
        status -> Text,
        due_time -> Timestamptz,
        task_id -> Nullable<Uuid>,
        version -> BigInt,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    member_removals (tenant_id, user_id) {
        tenant_id -> Uuid,
        user_id -> Uuid,
        ended_membership_since -> Timestamptz,
    }
}

diesel::table! {
    services (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        slug -> Text,
        name -> Text,
        description -> Text,
        active -> Bool,
        duration_minutes -> Integer,
        price_minor_units -> BigInt,
        currency_code -> Text,
        version -> BigInt,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    service_requests (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        service_id -> Uuid,
        requester_id -> Uuid,
        details -> Text,
        status -> Text,
        version -> BigInt,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    bookings (tenant_id, id) {
        tenant_id -> Uuid,
        id -> Uuid,
        service_id -> Uuid,
        booker_id -> Uuid,
        start_time -> Timestamptz,
        end_time -> Timestamptz,
        status -> Text,
        version -> BigInt,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    tasks,
    compliance_records,
    member_removals,
    services,
    service_requests,
    bookings
);

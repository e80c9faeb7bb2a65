//! Diesel's view of the tables in `migrations/` (kept in step with them by hand:
//! the diesel CLI, which needs libpq, is not part of this toolchain).

diesel::table! {
    events (tenant_id, sequence) {
        tenant_id -> Uuid,
        sequence -> BigInt,
        id -> Uuid,
        actor_user_id -> Text,
        actor_service -> Text,
        source_service -> Text,
        action -> Text,
        resource_type -> Text,
        resource_id -> Text,
        old_value -> Nullable<Jsonb>,
        new_value -> Nullable<Jsonb>,
        metadata -> Nullable<Jsonb>,
        request_id -> Text,
        trace_id -> Text,
        occur_time -> Timestamptz,
        receive_time -> Timestamptz,
        prev_hash -> Bytea,
        hash -> Bytea,
    }
}

diesel::table! {
    chain_heads (tenant_id) {
        tenant_id -> Uuid,
        sequence -> BigInt,
        hash -> Bytea,
    }
}

diesel::table! {
    checkpoints (tenant_id, sequence) {
        tenant_id -> Uuid,
        sequence -> BigInt,
        hash -> Bytea,
        create_time -> Timestamptz,
        jws -> Text,
    }
}

diesel::table! {
    retention_periods (tenant_id) {
        tenant_id -> Uuid,
        retain_days -> Integer,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    prunes (tenant_id, sequence) {
        tenant_id -> Uuid,
        sequence -> BigInt,
        hash -> Bytea,
        jws -> Text,
        prune_time -> Timestamptz,
        deleted_count -> BigInt,
    }
}

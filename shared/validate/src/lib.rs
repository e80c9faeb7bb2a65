//! `bulkhead validate`: the isolation rules of a service database, read from
//! its catalog and its rows, each reported as a [`Finding`]:
//!
//! * **row-level security**: every table with a `tenant_id` column ENABLEs and
//!   FORCEs it;
//! * **tenant policy**: the runtime role (`<svc>_app`) reaches such a table
//!   only through policies scoped by `app.tenant_id` (or, for a table kept per
//!   user, `app.user_id`): `USING` on reads, an explicit `WITH CHECK` on
//!   writes, never `true`;
//! * **tenant keys**: primary, unique and exclusion keys and unique indexes
//!   of tenant tables include `tenant_id`, and a foreign key between tenant
//!   tables pairs `tenant_id` with `tenant_id` (a cross-tenant reference cannot
//!   be stored);
//! * **orphans**: no row names a tenant the Tenant service does not know (the
//!   nil tenant is the platform's);
//! * **runtime roles**: the app, platform and job roles are not superusers,
//!   do not bypass RLS, own nothing and are members of no role;
//! * **append-only audit rows**: no runtime role may UPDATE or DELETE Audit's
//!   events, checkpoints or prunes (the retention job deletes, under triggers);
//! * **Citus** (`--citus`): every tenant table is distributable by `tenant_id`
//!   (NOT NULL, in every key: see above), the other tables are named as
//!   reference tables, and no reference table points at a tenant table.
//!
//! A migration may declare an exception, with its reason, in the comment of
//! the policy, constraint or index: `bulkhead-validate: allow: <reason>`. The
//! report shows it as holding, with the reason; nothing else is let through.
//!
//! Reading rows past FORCEd row-level security needs a superuser or a
//! BYPASSRLS role: the owner sees none of them. Connected as anything else,
//! the orphan check fails and says so rather than count nothing.

use bulkhead_db::DbError;
use bulkhead_db::schema::ServiceSchema;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// A rule of the isolation design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// ENABLE and FORCE ROW LEVEL SECURITY.
    RowLevelSecurity,
    /// Runtime-role policies scoped by the tenant (or user) setting.
    TenantPolicy,
    /// Keys and foreign keys include `tenant_id`.
    TenantKey,
    /// No rows of tenants unknown to Tenant.
    Orphans,
    /// Runtime roles cannot escape.
    RuntimeRole,
    /// Audit rows cannot be changed or deleted by runtime roles.
    AppendOnly,
    /// Distributable by `tenant_id` (with `--citus`).
    Citus,
}

impl Rule {
    /// Its name in the table and the JSON.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RowLevelSecurity => "row_level_security",
            Self::TenantPolicy => "tenant_policy",
            Self::TenantKey => "tenant_key",
            Self::Orphans => "orphans",
            Self::RuntimeRole => "runtime_role",
            Self::AppendOnly => "append_only",
            Self::Citus => "citus",
        }
    }
}

/// One rule checked on one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The service whose database it is.
    pub service: &'static str,
    /// The rule.
    pub rule: Rule,
    /// The table, constraint, index or role.
    pub object: String,
    /// Whether the rule holds.
    pub ok: bool,
    /// What was found (why it fails, or what holds).
    pub detail: String,
}

/// What to check beyond the rules every deployment needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The Citus distribution rules.
    pub citus: bool,
    /// Leave out the orphan rule (no finding at all): the start-up check runs
    /// as the runtime role, which sees no rows past RLS, without Tenant's list.
    pub skip_orphans: bool,
}

/// The tables whose rows are the audit trail (Audit's database).
const APPEND_ONLY: &[(&str, &[&str])] = &[("audit", &["events", "checkpoints", "prunes"])];

/// How a migration declares an exception in an object's comment.
const ALLOW: &str = "bulkhead-validate: allow: ";

/// The reason of a declared exception, if `comment` declares one.
fn allowed(comment: Option<&str>) -> Option<&str> {
    comment
        .and_then(|c| c.strip_prefix(ALLOW))
        .filter(|reason| !reason.trim().is_empty())
}

#[derive(QueryableByName)]
struct TableRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    tenant: bool,
    #[diesel(sql_type = Bool)]
    tenant_not_null: bool,
    #[diesel(sql_type = Bool)]
    rls: bool,
    #[diesel(sql_type = Bool)]
    forced: bool,
    #[diesel(sql_type = Bool)]
    app_reaches: bool,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

#[derive(QueryableByName)]
struct PolicyRow {
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    command: String,
    #[diesel(sql_type = Nullable<Text>)]
    using: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    check: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
    #[diesel(sql_type = Bool)]
    for_public: bool,
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(sql_type = Array<Nullable<Text>>)]
    columns: Vec<Option<String>>,
    #[diesel(sql_type = Nullable<Text>)]
    referenced: Option<String>,
    #[diesel(sql_type = Array<Nullable<Text>>)]
    referenced_columns: Vec<Option<String>>,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

#[derive(QueryableByName)]
struct RoleRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    exists: bool,
    #[diesel(sql_type = Bool)]
    superuser: bool,
    #[diesel(sql_type = Bool)]
    bypass_rls: bool,
    #[diesel(sql_type = BigInt)]
    owned: i64,
    #[diesel(sql_type = Array<Text>)]
    member_of: Vec<String>,
    #[diesel(sql_type = Bool)]
    powers: bool,
    #[diesel(sql_type = Bool)]
    create_database: bool,
    #[diesel(sql_type = Array<Text>)]
    schemas: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    rls_bypassing_grants: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    definer_functions: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    views: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    settings: Vec<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    yes: bool,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// The tenants the Tenant service knows, read from its database.
///
/// # Errors
/// When the database cannot be read.
pub async fn known_tenants(tenant_db: &mut AsyncPgConnection) -> Result<Vec<Uuid>, DbError> {
    // Read as a role that does not see every row, the list would be short and
    // every row elsewhere an orphan.
    let sees_all: Vec<Flag> = diesel::sql_query(
        "SELECT rolsuper OR rolbypassrls AS yes FROM pg_roles WHERE rolname = current_user",
    )
    .load(tenant_db)
    .await?;
    if !matches!(sees_all.as_slice(), [f, ..] if f.yes) {
        return Err(DbError::UnsafeSchema(
            "the Tenant database must be read as a superuser or a BYPASSRLS role".to_owned(),
        ));
    }
    let rows: Vec<Id> = diesel::sql_query("SELECT id FROM tenants")
        .load(tenant_db)
        .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Checks `schema`'s database on `conn` against every rule; `known` is the
/// Tenant service's tenants (`None`: the orphan check fails, unchecked).
///
/// # Errors
/// When the catalog cannot be read.
pub async fn validate(
    conn: &mut AsyncPgConnection,
    schema: &'static ServiceSchema,
    known: Option<&[Uuid]>,
    options: Options,
) -> Result<Vec<Finding>, DbError> {
    let service = schema.service();
    let app = schema.app_role();
    let mut findings = Vec::new();
    let mut found = |rule: Rule, object: &str, ok: bool, detail: String| {
        findings.push(Finding {
            service,
            rule,
            object: object.to_owned(),
            ok,
            detail,
        });
    };

    let tables: Vec<TableRow> = diesel::sql_query(
        "SELECT c.relname::text AS name,
                t.attname IS NOT NULL AS tenant,
                COALESCE(t.attnotnull, false) AS tenant_not_null,
                c.relrowsecurity AS rls, c.relforcerowsecurity AS forced,
                has_table_privilege($1, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                  OR has_any_column_privilege($1, c.oid, 'SELECT, INSERT, UPDATE') AS app_reaches,
                obj_description(c.oid, 'pg_class') AS comment
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attribute t ON t.attrelid = c.oid AND t.attname = 'tenant_id'
                                   AND NOT t.attisdropped
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            AND c.relname NOT LIKE '\\_\\_diesel%'
          ORDER BY 1",
    )
    .bind::<Text, _>(&app)
    .load(conn)
    .await?;
    let is_tenant = |name: &str| tables.iter().any(|t| t.name == name && t.tenant);

    // Row-level security, and the runtime role's policies.
    let policies: Vec<PolicyRow> = diesel::sql_query(
        "SELECT tablename::text AS table, policyname::text AS name, cmd AS command,
                qual AS using, with_check AS check,
                (SELECT obj_description(p.oid, 'pg_policy') FROM pg_policy p
                   JOIN pg_class c ON c.oid = p.polrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public' AND c.relname = tablename
                    AND p.polname = policyname) AS comment,
                'public' = ANY (roles::text[]) AS for_public
           FROM pg_policies
          WHERE schemaname = 'public' AND ($1 = ANY (roles::text[]) OR 'public' = ANY (roles::text[]))
          ORDER BY 1, 2",
    )
    .bind::<Text, _>(&app)
    .load(conn)
    .await?;
    // A table kept per user rather than per tenant (Auth's users and
    // sessions) is declared so by its migration, in the table's comment: its
    // policies may then scope by `app.user_id`, and its keys are the user's.
    let per_user: Vec<&str> = tables
        .iter()
        .filter(|t| allowed(t.comment.as_deref()).is_some())
        .map(|t| t.name.as_str())
        .collect();
    let user_scoped: Vec<&str> = per_user
        .iter()
        .copied()
        .filter(|name| is_tenant(name))
        .collect();
    // Every tenant table, and every other table the runtime role reaches.
    for table in tables.iter().filter(|t| t.tenant || t.app_reaches) {
        let rls_ok = table.rls && table.forced;
        let rls_detail = match (table.rls, table.forced) {
            (true, true) => "enabled and forced".to_owned(),
            (false, _) => "row-level security is not enabled".to_owned(),
            (true, false) => "row-level security is not forced (the owner bypasses it)".to_owned(),
        };
        found(Rule::RowLevelSecurity, &table.name, rls_ok, rls_detail);
        let mine: Vec<&PolicyRow> = policies.iter().filter(|p| p.table == table.name).collect();
        if !table.app_reaches {
            found(
                Rule::TenantPolicy,
                &table.name,
                true,
                format!("{app} has no privilege on it"),
            );
            continue;
        }
        if mine.is_empty() {
            found(
                Rule::TenantPolicy,
                &table.name,
                false,
                format!(
                    "{app} has privileges but no policy: it reaches no row, or every row once RLS is off"
                ),
            );
            continue;
        }
        let scopes = accepted_scopes(table.tenant, per_user.contains(&table.name.as_str()));
        for policy in mine {
            let object = format!("{}.{}", table.name, policy.name);
            let (ok, detail) = match allowed(policy.comment.as_deref()) {
                Some(reason) => (
                    true,
                    format!("{} policy, declared: {reason}", policy.command),
                ),
                None => match policy_verdict(policy, &scopes) {
                    (true, _) if policy.for_public => (
                        false,
                        format!(
                            "{} policy applies to every role (PUBLIC): name its roles",
                            policy.command
                        ),
                    ),
                    verdict => verdict,
                },
            };
            found(Rule::TenantPolicy, &object, ok, detail);
        }
    }
    // A policy for PUBLIC applies to every role, the platform and job roles
    // and any role made later included: policies name their roles. (Those
    // on tables the runtime role reaches were judged above.)
    for policy in policies.iter().filter(|p| p.for_public) {
        let judged = tables
            .iter()
            .any(|t| t.name == policy.table && t.app_reaches);
        if !judged && allowed(policy.comment.as_deref()).is_none() {
            found(
                Rule::TenantPolicy,
                &format!("{}.{}", policy.table, policy.name),
                false,
                format!(
                    "{} policy applies to every role (PUBLIC): name its roles",
                    policy.command
                ),
            );
        }
    }

    // Keys of tenant tables.
    let keys: Vec<KeyRow> = diesel::sql_query(
        "SELECT con.conname::text AS name, con.contype::text AS kind, rel.relname::text AS table,
                ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                        LEFT JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
                       ORDER BY k.i) AS columns,
                ref.relname::text AS referenced,
                ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                        LEFT JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
                       ORDER BY k.i) AS referenced_columns,
                obj_description(con.oid, 'pg_constraint') AS comment
           FROM pg_constraint con
           JOIN pg_class rel ON rel.oid = con.conrelid
           JOIN pg_namespace n ON n.oid = rel.relnamespace
           LEFT JOIN pg_class ref ON ref.oid = con.confrelid
          WHERE n.nspname = 'public' AND con.contype IN ('p', 'u', 'x', 'f')
         UNION ALL
         SELECT i.relname::text, 'i', t.relname::text,
                ARRAY(SELECT a.attname::text FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(n, j)
                        LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n
                       WHERE k.j <= ix.indnkeyatts
                       ORDER BY k.j),
                NULL, ARRAY[]::text[], obj_description(ix.indexrelid, 'pg_class')
           FROM pg_index ix
           JOIN pg_class i ON i.oid = ix.indexrelid
           JOIN pg_class t ON t.oid = ix.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
          WHERE n.nspname = 'public' AND ix.indisunique
            AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid
                             AND c.conrelid = ix.indrelid AND c.contype IN ('p', 'u', 'x'))
          ORDER BY 3, 1",
    )
    .load(conn)
    .await?;
    for key in &keys {
        if let Some(reason) = allowed(key.comment.as_deref()) {
            found(
                Rule::TenantKey,
                &key.name,
                true,
                format!("declared: {reason}"),
            );
            continue;
        }
        let has_tenant = key
            .columns
            .iter()
            .any(|c| c.as_deref() == Some("tenant_id"));
        let columns = key
            .columns
            .iter()
            .map(|c| c.as_deref().unwrap_or("(expression)"))
            .collect::<Vec<_>>()
            .join(", ");
        if key.kind == "f" {
            let referenced = key.referenced.clone().unwrap_or_default();
            let (from_tenant, to_tenant) = (is_tenant(&key.table), is_tenant(&referenced));
            if from_tenant && to_tenant {
                let paired = key
                    .columns
                    .iter()
                    .zip(&key.referenced_columns)
                    .any(|(c, r)| {
                        c.as_deref() == Some("tenant_id") && r.as_deref() == Some("tenant_id")
                    });
                let detail = if paired {
                    format!("({columns}) → {referenced}: tenant_id pairs with tenant_id")
                } else {
                    format!(
                        "({columns}) → {referenced} without tenant_id = tenant_id: a row could point into another tenant"
                    )
                };
                found(Rule::TenantKey, &key.name, paired, detail);
            } else if options.citus && !from_tenant && to_tenant {
                found(
                    Rule::Citus,
                    &key.name,
                    false,
                    format!(
                        "reference table {} points at tenant table {referenced}",
                        key.table
                    ),
                );
            }
            continue;
        }
        if !is_tenant(&key.table) {
            continue;
        }
        if user_scoped.contains(&key.table.as_str()) {
            found(
                Rule::TenantKey,
                &key.name,
                true,
                format!(
                    "({columns}) of {}, a table kept per user (policies on app.user_id)",
                    key.table
                ),
            );
            continue;
        }
        let kind = match key.kind.as_str() {
            "p" => "primary key",
            "u" => "unique constraint",
            "x" => "exclusion constraint",
            _ => "unique index",
        };
        let detail = if has_tenant {
            format!("{kind} ({columns}) of {}", key.table)
        } else {
            format!(
                "{kind} ({columns}) of {} lacks tenant_id: it spans tenants",
                key.table
            )
        };
        found(Rule::TenantKey, &key.name, has_tenant, detail);
    }

    // Orphans.
    let can_read_rows: Vec<Flag> = diesel::sql_query(
        "SELECT rolsuper OR rolbypassrls AS yes FROM pg_roles WHERE rolname = current_user",
    )
    .load(conn)
    .await?;
    let can_read_rows = matches!(can_read_rows.as_slice(), [f, ..] if f.yes);
    for table in tables.iter().filter(|t| t.tenant && !options.skip_orphans) {
        match (known, can_read_rows) {
            (None, _) => found(
                Rule::Orphans,
                &table.name,
                false,
                "not checked: the Tenant database was not given".to_owned(),
            ),
            (Some(_), false) => found(
                Rule::Orphans,
                &table.name,
                false,
                "not checked: this role sees no rows past FORCEd RLS (connect as a superuser or a BYPASSRLS role)".to_owned(),
            ),
            (Some(known), true) => {
                let sql = format!(
                    "SELECT count(DISTINCT tenant_id) AS n FROM public.\"{}\"
                      WHERE tenant_id IS NOT NULL
                        AND tenant_id <> '00000000-0000-0000-0000-000000000000'
                        AND tenant_id <> ALL ($1)",
                    table.name.replace('"', "\"\"")
                );
                let orphans: Vec<Count> = diesel::sql_query(sql)
                    .bind::<Array<diesel::sql_types::Uuid>, _>(known)
                    .load(conn)
                    .await?;
                let n = match orphans.as_slice() {
                    [c, ..] => c.n,
                    [] => 0,
                };
                found(
                    Rule::Orphans,
                    &table.name,
                    n == 0,
                    if n == 0 {
                        "every tenant id is known to Tenant".to_owned()
                    } else {
                        format!("rows of {n} tenant(s) Tenant does not know")
                    },
                );
            }
        }
    }

    // The runtime roles.
    let mut roles = vec![app.clone(), schema.platform_role()];
    roles.extend(schema.job_roles());
    let rows: Vec<RoleRow> = diesel::sql_query(
        "SELECT r.name, p.oid IS NOT NULL AS exists,
                COALESCE(p.rolsuper, false) AS superuser,
                COALESCE(p.rolbypassrls, false) AS bypass_rls,
                (SELECT count(*) FROM pg_class WHERE relowner = p.oid)
                  + (SELECT count(*) FROM pg_namespace WHERE nspowner = p.oid)
                  + (SELECT count(*) FROM pg_proc WHERE proowner = p.oid)
                  + (SELECT count(*) FROM pg_type WHERE typowner = p.oid)
                  + (SELECT count(*) FROM pg_database WHERE datdba = p.oid) AS owned,
                ARRAY(SELECT g.rolname::text FROM pg_auth_members m
                        JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = p.oid
                       ORDER BY 1) AS member_of,
                COALESCE(p.rolcreaterole OR p.rolreplication OR p.rolcreatedb, false) AS powers,
                COALESCE(has_database_privilege(p.oid, current_database(), 'CREATE')
                         OR has_database_privilege(p.oid, current_database(), 'TEMPORARY'), false)
                  AS create_database,
                ARRAY(SELECT n.nspname::text FROM pg_namespace n
                       WHERE p.oid IS NOT NULL AND n.nspname NOT LIKE 'pg\\_%'
                         AND n.nspname <> 'information_schema'
                         AND (has_schema_privilege(p.oid, n.oid, 'CREATE')
                              OR (n.nspname <> 'public' AND has_schema_privilege(p.oid, n.oid, 'USAGE')))
                       ORDER BY 1) AS schemas,
                ARRAY(SELECT c.relname::text FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE p.oid IS NOT NULL AND n.nspname = 'public' AND c.relkind IN ('r', 'p')
                         AND has_table_privilege(p.oid, c.oid, 'TRUNCATE, TRIGGER, REFERENCES')
                       ORDER BY 1) AS rls_bypassing_grants,
                ARRAY(SELECT f.proname::text FROM pg_proc f
                        JOIN pg_namespace n ON n.oid = f.pronamespace
                       WHERE p.oid IS NOT NULL AND n.nspname = 'public' AND f.prosecdef
                         AND has_function_privilege(p.oid, f.oid, 'EXECUTE')
                         AND COALESCE(obj_description(f.oid, 'pg_proc'), '')
                             NOT LIKE 'bulkhead-validate: allow: %'
                       ORDER BY 1) AS definer_functions,
                ARRAY(SELECT c.relname::text FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE p.oid IS NOT NULL AND n.nspname = 'public' AND c.relkind IN ('v', 'm')
                         AND has_table_privilege(p.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                         AND NOT (c.relkind = 'v'
                                  AND COALESCE(c.reloptions, '{}') @> ARRAY['security_invoker=true'])
                       ORDER BY 1) AS views,
                ARRAY(SELECT c FROM pg_db_role_setting s, unnest(s.setconfig) AS c
                       WHERE p.oid IS NOT NULL AND s.setrole = p.oid
                         AND s.setdatabase IN (0, (SELECT oid FROM pg_database
                                                    WHERE datname = current_database()))
                       ORDER BY 1) AS settings
           FROM unnest($1::text[]) AS r(name)
           LEFT JOIN pg_roles p ON p.rolname = r.name",
    )
    .bind::<Array<Text>, _>(&roles)
    .load(conn)
    .await?;
    for role in rows {
        let mut wrong = Vec::new();
        if !role.exists {
            wrong.push("does not exist".to_owned());
        }
        if role.superuser {
            wrong.push("is a superuser".to_owned());
        }
        if role.bypass_rls {
            wrong.push("bypasses row-level security".to_owned());
        }
        if role.owned > 0 {
            wrong.push(format!("owns {} object(s)", role.owned));
        }
        if role.powers {
            wrong.push("may create roles or databases, or replicate".to_owned());
        }
        if role.create_database {
            wrong.push("may create schemas or temporary objects in the database".to_owned());
        }
        if !role.settings.is_empty() {
            wrong.push(format!(
                "has role defaults (ALTER ROLE … SET, which a role may run on itself and which outlive every session): {}",
                role.settings.join(", ")
            ));
        }
        // Each list names objects that would let the role around RLS.
        for (what, names) in [
            ("is a member of", &role.member_of),
            (
                "may create in, or use a schema other than public:",
                &role.schemas,
            ),
            (
                "may TRUNCATE (which RLS does not see), trigger or reference",
                &role.rls_bypassing_grants,
            ),
            (
                "may run SECURITY DEFINER functions (their owner's rights, past RLS):",
                &role.definer_functions,
            ),
            (
                "reaches views that read with their owner's rights:",
                &role.views,
            ),
        ] {
            if !names.is_empty() {
                wrong.push(format!("{what} {}", names.join(", ")));
            }
        }
        let ok = wrong.is_empty();
        let detail = if ok {
            "no superuser, no BYPASSRLS, owns nothing, member of no role, no way around RLS"
                .to_owned()
        } else {
            wrong.join("; ")
        };
        found(Rule::RuntimeRole, &role.name, ok, detail);
    }

    // The owner: tables, views and functions run with its rights.
    let owner: Vec<Flag> = diesel::sql_query(
        "SELECT rolsuper OR rolbypassrls AS yes FROM pg_roles WHERE rolname = $1",
    )
    .bind::<Text, _>(schema.owner_role())
    .load(conn)
    .await?;
    let owner_escapes = matches!(owner.as_slice(), [f, ..] if f.yes);
    found(
        Rule::RuntimeRole,
        &schema.owner_role(),
        !owner_escapes,
        if owner_escapes {
            "the owner is a superuser or bypasses RLS: FORCE ROW LEVEL SECURITY binds it no more"
                .to_owned()
        } else {
            "the owner is no superuser and does not bypass RLS".to_owned()
        },
    );

    // Append-only audit rows.
    let append_only = APPEND_ONLY
        .iter()
        .find(|(s, _)| *s == service)
        .map_or(&[][..], |(_, tables)| *tables);
    for table in append_only {
        for role in [app.clone(), schema.platform_role()] {
            let can: Vec<Flag> = diesel::sql_query(
                "SELECT has_table_privilege($1, $2, 'UPDATE, DELETE, TRUNCATE')
                        OR has_any_column_privilege($1, $2, 'UPDATE') AS yes",
            )
            .bind::<Text, _>(&role)
            .bind::<Text, _>(format!("public.{table}"))
            .load(conn)
            .await?;
            let changes = !matches!(can.as_slice(), [f, ..] if !f.yes);
            found(
                Rule::AppendOnly,
                &format!("{table} ({role})"),
                !changes,
                if changes {
                    format!("{role} may UPDATE or DELETE {table}")
                } else {
                    format!("{role} may not UPDATE or DELETE {table}")
                },
            );
        }
    }

    // Citus.
    if options.citus {
        for table in &tables {
            if user_scoped.contains(&table.name.as_str()) {
                found(
                    Rule::Citus,
                    &table.name,
                    false,
                    "kept per user (policies on app.user_id), not distributable by tenant_id: keep this database on plain PostgreSQL".to_owned(),
                );
            } else if table.tenant {
                let ok = table.tenant_not_null;
                found(
                    Rule::Citus,
                    &table.name,
                    ok,
                    if ok {
                        "distributed by tenant_id".to_owned()
                    } else {
                        "tenant_id may be NULL: such a row has no shard".to_owned()
                    },
                );
            } else {
                found(
                    Rule::Citus,
                    &table.name,
                    true,
                    "reference table (no tenant_id): replicated to every node".to_owned(),
                );
            }
        }
    }
    Ok(findings)
}

/// The one expression a policy scopes rows by: `column` equal to the
/// transaction's `setting`, as Postgres prints it back (the form every
/// migration writes). Nothing looser passes: an `OR`, a `coalesce`, another
/// column.
fn scope_expression(column: &str, setting: &str) -> String {
    format!(
        "({column} = ( SELECT (NULLIF(current_setting('{setting}'::text, true), ''::text))::uuid AS \"nullif\"))"
    )
}

/// The scopes a table's runtime-role policies may use, with their names:
/// a tenant table's `tenant_id`; the tenant directory's own row (`id`); and,
/// on a table declared per user, the user's rows.
fn accepted_scopes(tenant_table: bool, per_user: bool) -> Vec<(String, &'static str)> {
    let mut scopes = if tenant_table {
        vec![(
            scope_expression("tenant_id", "app.tenant_id"),
            "app.tenant_id",
        )]
    } else {
        vec![(
            scope_expression("id", "app.tenant_id"),
            "app.tenant_id (its own row)",
        )]
    };
    if per_user {
        scopes.push((scope_expression("user_id", "app.user_id"), "app.user_id"));
        scopes.push((
            scope_expression("id", "app.user_id"),
            "app.user_id (their own row)",
        ));
    }
    scopes
}

/// Whether a runtime-role policy scopes rows as it must, and why.
fn policy_verdict(policy: &PolicyRow, scopes: &[(String, &'static str)]) -> (bool, String) {
    let scoped = |expr: &Option<String>| {
        expr.as_deref()
            .and_then(|e| scopes.iter().find(|(s, _)| s == e).map(|(_, name)| *name))
    };
    let reads = matches!(
        policy.command.as_str(),
        "SELECT" | "UPDATE" | "DELETE" | "ALL"
    );
    let writes = matches!(policy.command.as_str(), "INSERT" | "UPDATE" | "ALL");
    if reads && scoped(&policy.using).is_none() {
        return (
            false,
            format!(
                "{} policy USING ({}) is not `column = the scope setting`",
                policy.command,
                policy.using.as_deref().unwrap_or("none")
            ),
        );
    }
    if writes && scoped(&policy.check).is_none() {
        return (
            false,
            format!(
                "{} policy has no WITH CHECK that is `column = the scope setting` ({})",
                policy.command,
                policy.check.as_deref().unwrap_or("none")
            ),
        );
    }
    let scope = scoped(&policy.using)
        .or_else(|| scoped(&policy.check))
        .unwrap_or("app.tenant_id");
    (true, format!("{} scoped by {scope}", policy.command))
}

/// What the start-up check verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeReport {
    /// The runtime role the pool connects as.
    pub role: String,
    /// The platform role the platform pool connects as, when there is one.
    pub platform_role: Option<String>,
    /// Every table held to the row-level security rule.
    pub tenant_tables: Vec<String>,
    /// How many checks held.
    pub checks: usize,
}

/// The start-up check of a service: its pools connect as the roles `schema`
/// names (`<svc>_app`, `<svc>_platform`: URLs swapped or naming another role
/// are refused), and every rule of [`validate`] but the orphans holds, read
/// as the runtime role in one transaction (one snapshot, and one server
/// connection behind a transaction-mode pooler). A service refuses to start
/// when this fails.
///
/// # Errors
/// [`DbError::UnsafeSchema`] listing every problem found; any other error when
/// the database cannot be read.
pub async fn verify_runtime(
    db: &bulkhead_db::Db,
    schema: &'static ServiceSchema,
) -> Result<RuntimeReport, DbError> {
    use diesel_async::AsyncConnection as _;
    let roles = db.connected_roles().await?;
    let mut problems = Vec::new();
    if roles.runtime != schema.app_role() {
        problems.push(format!(
            "the runtime pool connects as {}, not {}",
            roles.runtime,
            schema.app_role()
        ));
    }
    if let Some(platform) = roles.platform.as_ref()
        && *platform != schema.platform_role()
    {
        problems.push(format!(
            "the platform pool connects as {platform}, not {}",
            schema.platform_role()
        ));
    }
    let options = Options {
        citus: false,
        skip_orphans: true,
    };
    let findings = db
        .system()
        .await?
        .pg()
        .transaction(async |pg| {
            // The catalog, never a same-named relation the runtime role left
            // in its temporary schema (searched first unless placed last).
            diesel_async::SimpleAsyncConnection::batch_execute(
                pg,
                "SET LOCAL search_path = pg_catalog, public, pg_temp",
            )
            .await?;
            validate(pg, schema, None, options).await
        })
        .await?;
    problems.extend(
        findings
            .iter()
            .filter(|f| !f.ok)
            .map(|f| format!("{} {}: {}", f.rule.as_str(), f.object, f.detail)),
    );
    if !problems.is_empty() {
        return Err(DbError::UnsafeSchema(problems.join("; ")));
    }
    Ok(RuntimeReport {
        role: roles.runtime,
        platform_role: roles.platform,
        tenant_tables: findings
            .iter()
            .filter(|f| f.rule == Rule::RowLevelSecurity)
            .map(|f| f.object.clone())
            .collect(),
        checks: findings.len(),
    })
}

/// Whether any finding fails.
#[must_use]
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| !f.ok)
}

/// The findings as a table for a terminal: failures first, then the rest.
#[must_use]
pub fn table(findings: &[Finding]) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<&Finding> = findings.iter().collect();
    rows.sort_by_key(|f| (f.ok, f.service, f.rule, f.object.clone()));
    let width = |get: &dyn Fn(&Finding) -> usize, title: &str| {
        rows.iter()
            .map(|f| get(f))
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let (ws, wr, wo) = (
        width(&|f| f.service.len(), "SERVICE"),
        width(&|f| f.rule.as_str().len(), "RULE"),
        width(&|f| f.object.len(), "OBJECT"),
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:ws$}  {:wr$}  {:wo$}  RESULT  DETAIL",
        "SERVICE", "RULE", "OBJECT"
    );
    for f in rows {
        let _ = writeln!(
            out,
            "{:ws$}  {:wr$}  {:wo$}  {:6}  {}",
            f.service,
            f.rule.as_str(),
            f.object,
            if f.ok { "ok" } else { "FAIL" },
            f.detail
        );
    }
    let failures = findings.iter().filter(|f| !f.ok).count();
    let _ = writeln!(out, "\n{} checks, {failures} failed", findings.len());
    out
}

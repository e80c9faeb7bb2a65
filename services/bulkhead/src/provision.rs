//! Provisioning a service in a cluster: its two roles, its database, its
//! migrations. Idempotent: `up` runs it at every start.

use bulkhead_db::schema::{ServiceSchema, connect_once};

/// Makes `schema`'s roles and database exist and migrates it.
///
/// `admin_url` is a superuser connection to the cluster's `postgres` database;
/// `owner_url` connects as the owner role to the service's database.
///
/// # Errors
/// When a role, the database or a migration cannot be made.
pub async fn provision(
    schema: &ServiceSchema,
    admin_url: &str,
    owner_url: &str,
) -> anyhow::Result<()> {
    let mut admin = connect_once(admin_url).await?;
    schema.ensure_roles(&mut admin).await?;
    let database = schema.database();
    if ServiceSchema::database_exists(&mut admin, &database).await? {
        schema.secure_database(&mut admin, &database).await?;
    } else {
        schema.create_database(&mut admin, &database, None).await?;
    }
    drop(admin);
    schema.migrate(owner_url).await?;
    Ok(())
}

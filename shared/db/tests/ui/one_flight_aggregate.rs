// A one-flight read keeps an answer only when its rows carry the tenant's id:
// a count (or any value that is not a `Vec` or `Option` of `TenantRow`) must
// not compile, since an overtaken `count(*)` answers 0 with no row to check.
use bulkhead_context::TenantId;
use bulkhead_db::{Db, DbError, TenantConn};

async fn count_projects(_tx: TenantConn<'_>) -> Result<i64, DbError> {
    Ok(0)
}

async fn handler(db: &Db, tenant: TenantId) -> Result<i64, DbError> {
    db.tenant_read_rows(tenant, async |tx| count_projects(tx).await)
        .await
}

fn main() {
    let _ = handler;
}

// A repository function for a tenant table takes `TenantConn`; handing it a bare
// connection (the unscoped path) must not compile.
use bulkhead_db::{AsyncPgConnection, DbError, TenantConn};

async fn list_projects(tx: TenantConn<'_>) -> Result<usize, DbError> {
    let _ = tx.tenant_id();
    Ok(0)
}

async fn handler(conn: &AsyncPgConnection) -> Result<usize, DbError> {
    list_projects(conn).await
}

fn main() {
    let _ = handler;
}

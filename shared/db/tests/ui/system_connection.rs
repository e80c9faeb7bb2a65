// The system path's connection is not a tenant scope either.
use bulkhead_db::{Db, DbError, TenantConn};

async fn list_projects(tx: TenantConn<'_>) -> Result<usize, DbError> {
    let _ = tx.tenant_id();
    Ok(0)
}

async fn handler(db: &Db) -> Result<usize, DbError> {
    let mut conn = db.system().await?;
    list_projects(conn.pg()).await
}

fn main() {
    let _ = handler;
}

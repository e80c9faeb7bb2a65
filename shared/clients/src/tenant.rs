//! Auth's view of the Tenant service: a user's live memberships.

use std::sync::Arc;

use bulkhead_context::{TenantId, TenantRole};
use bulkhead_proto::tenant::v1 as pb;
use bulkhead_proto::tenant::v1::tenant_service_client::TenantServiceClient;
use tonic::transport::Channel;

use crate::ServiceCredentials;
use crate::credentials::service_request;

/// One active membership of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its slug.
    pub slug: String,
    /// Its name.
    pub name: String,
    /// The user's role there.
    pub role: TenantRole,
    /// Whether it is the user's default tenant.
    pub is_default: bool,
}

/// Reads memberships from the Tenant service, live, as a service principal.
#[derive(Clone)]
pub struct TenantDirectory {
    client: TenantServiceClient<Channel>,
    credentials: Arc<dyn ServiceCredentials>,
}

impl std::fmt::Debug for TenantDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantDirectory")
    }
}

impl TenantDirectory {
    /// A directory calling Tenant over `channel`.
    #[must_use]
    pub fn new(channel: Channel, credentials: Arc<dyn ServiceCredentials>) -> Self {
        Self {
            client: TenantServiceClient::new(channel),
            credentials,
        }
    }

    /// The user's memberships in active tenants.
    ///
    /// # Errors
    /// The status Tenant answered (or `UNAVAILABLE` without credentials).
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<MembershipView>, tonic::Status> {
        let mut request = service_request(
            &*self.credentials,
            pb::ListUserMembershipsRequest {
                user_id: user_id.to_owned(),
            },
        )?;
        // A login waits this long at most for a hung Tenant (and holds its
        // place in Auth's share no longer).
        request.set_timeout(DOWNSTREAM_CAP);
        let response = self.client.clone().list_user_memberships(request).await?;
        Ok(response
            .into_inner()
            .memberships
            .into_iter()
            .filter_map(|m| {
                let membership = m.membership?;
                let tenant = m.tenant?;
                let role = pb::TenantRole::domain_from_i32(membership.role)?;
                Some(MembershipView {
                    tenant_id: TenantId::parse(&tenant.id).ok()?,
                    slug: tenant.slug,
                    name: tenant.name,
                    role,
                    is_default: membership.is_default,
                })
            })
            .collect())
    }
}

/// What Tenant says of a user in the caller's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A member, with this role, since `since` (Tenant's clock).
    Member {
        /// The role.
        role: TenantRole,
        /// When the membership was created.
        since: chrono::DateTime<chrono::Utc>,
    },
    /// Not a member (or no such user: Tenant does not say which).
    NotMember,
}

impl TenantDirectory {
    /// Whether `user_id` is a member of the tenant of the user whose access
    /// token is `user_bearer` (forwarded: Tenant answers for that user's tenant
    /// only, never for one named in a request).
    ///
    /// # Errors
    /// The status Tenant answered other than NOT_FOUND (`UNAVAILABLE` when it
    /// cannot be reached).
    pub async fn check_membership(
        &self,
        user_bearer: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        user_id: &str,
        deadline: Option<bulkhead_guard::Deadline>,
    ) -> Result<Membership, tonic::Status> {
        let mut request = service_request(
            &*self.credentials,
            pb::CheckMembershipRequest {
                user_id: user_id.to_owned(),
            },
        )?;
        // What is left of the caller's deadline, and never more than a few
        // seconds: a hung Tenant costs the caller that, not a hang.
        request.set_timeout(bulkhead_guard::Deadline::downstream(
            deadline,
            DOWNSTREAM_CAP,
        ));
        request
            .metadata_mut()
            .insert("authorization", user_bearer.clone());
        match self.client.clone().check_membership(request).await {
            Ok(response) => {
                let response = response.into_inner();
                let since = bulkhead_rpc::fields::time(response.membership_create_time.as_ref())
                    .map_err(|_| tonic::Status::internal("Tenant did not say since when"))?;
                Ok(pb::TenantRole::domain_from_i32(response.role).map_or(
                    Membership::NotMember,
                    |role| Membership::Member { role, since },
                ))
            }
            Err(status) if status.code() == tonic::Code::NotFound => Ok(Membership::NotMember),
            Err(status) => Err(status),
        }
    }
}

/// The longest a membership check or lookup may take, whatever the caller's
/// deadline.
pub const DOWNSTREAM_CAP: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `inactive` (this process's guard set) equal to Tenant's deactivated
/// tenants, asking every `every` until `shutdown`: requests in a deactivated tenant
/// then answer FAILED_PRECONDITION in this service too.
pub async fn follow_inactive_tenants(
    channel: Channel,
    credentials: Arc<dyn ServiceCredentials>,
    inactive: bulkhead_guard::InactiveTenants,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut client = TenantServiceClient::new(channel);
    loop {
        match inactive_tenants(&mut client, &*credentials).await {
            Ok(ids) => inactive.replace(ids),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "could not read the inactive tenants")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

async fn inactive_tenants(
    client: &mut TenantServiceClient<Channel>,
    credentials: &dyn ServiceCredentials,
) -> Result<Vec<TenantId>, tonic::Status> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = service_request(
            credentials,
            pb::ListTenantsRequest {
                page_size: 100,
                page_token: page_token.clone(),
                inactive_only: true,
            },
        )?;
        let page = client.list_tenants(request).await?.into_inner();
        ids.extend(
            page.tenants
                .iter()
                .filter_map(|t| TenantId::parse(&t.id).ok()),
        );
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        page_token = page.next_page_token;
    }
}

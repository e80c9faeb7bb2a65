//! Service tokens obtained from Auth's `IssueServiceToken` (client credentials),
//! renewed in the background a minute before they expire.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulkhead_guard::token::unix_now;
use bulkhead_proto::auth::v1 as pb;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::ServiceCredentials;

/// The current token from Auth, kept fresh by a background task.
#[derive(Default)]
pub struct IssuedServiceTokens {
    current: RwLock<Option<String>>,
}

impl std::fmt::Debug for IssuedServiceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedServiceTokens")
    }
}

impl ServiceCredentials for IssuedServiceTokens {
    fn token(&self) -> Option<String> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl IssuedServiceTokens {
    /// Starts renewing tokens for `client_id` until `shutdown` flips to true.
    #[must_use]
    pub fn spawn(
        channel: Channel,
        client_id: String,
        secret: String,
        mut shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let tokens = Arc::new(Self::default());
        let holder = tokens.clone();
        tokio::spawn(async move {
            let mut client = AuthServiceClient::new(channel);
            loop {
                // Renewing, with the token still held: not shed with an
                // anonymous flood of Auth's public methods.
                let request = crate::credentials::with_token_if_any(
                    Some(&*holder),
                    pb::IssueServiceTokenRequest {
                        client_id: client_id.clone(),
                        client_secret: secret.clone(),
                    },
                );
                let wait = match client.issue_service_token(request).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        let expires = response
                            .expires_at
                            .map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0));
                        *holder
                            .current
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(response.access_token);
                        Duration::from_secs(
                            expires.saturating_sub(unix_now()).saturating_sub(60).max(5),
                        )
                    }
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), "could not obtain a service token; retrying");
                        Duration::from_secs(2)
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        });
        tokens
    }
}

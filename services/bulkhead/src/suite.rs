//! Services started together in one process, sharing the guard state: all four
//! in `up` and the end-to-end tests, one in `serve`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bulkhead_server::{CredentialsFactory, DbUrls, Peers, ServiceModule, SharedGuard, Started};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One service to start: what it is, its database, where it listens.
#[derive(Debug)]
pub struct Launch {
    /// The service.
    pub module: Arc<dyn ServiceModule>,
    /// Its database, as its runtime and platform roles.
    pub urls: DbUrls,
    /// Its socket.
    pub listener: TcpListener,
    /// The certificate it serves TLS with (`None`: plaintext).
    pub tls: Option<Arc<bulkhead_server::tls::ServerTls>>,
}

/// The services, running.
#[derive(Debug)]
pub struct Suite {
    /// Where each service listens, by name.
    pub addrs: BTreeMap<&'static str, SocketAddr>,
    /// The services in the order they started: name, gRPC services, address.
    pub listening: Vec<(&'static str, &'static [&'static str], SocketAddr)>,
    shutdown: watch::Sender<bool>,
    started: Vec<Started>,
}

impl Suite {
    /// Starts every service of `launches`, in order, sharing `guard`; each gets
    /// its own credentials from `credentials` (by its name). Returns once all
    /// passed their start-up checks.
    ///
    /// # Errors
    /// The first service that cannot start (the others are stopped).
    pub async fn start(
        launches: Vec<Launch>,
        guard: &SharedGuard,
        peers: &Peers,
        credentials: Option<&CredentialsFactory>,
    ) -> anyhow::Result<Self> {
        let (shutdown, stop) = watch::channel(false);
        let mut suite = Self {
            addrs: BTreeMap::new(),
            listening: Vec::new(),
            shutdown,
            started: Vec::new(),
        };
        for Launch {
            module,
            urls,
            listener,
            tls,
        } in launches
        {
            let addr = listener.local_addr()?;
            suite.addrs.insert(module.name(), addr);
            suite
                .listening
                .push((module.name(), module.grpc_services(), addr));
            let started = bulkhead_server::start(
                module.as_ref(),
                &urls,
                bulkhead_server::Listening { tcp: listener, tls },
                guard.clone(),
                peers.clone(),
                credentials.map(|mint| mint(module.name())),
                stop.clone(),
            )
            .await;
            match started {
                Ok(started) => suite.started.push(started),
                Err(err) => {
                    suite.stop().await;
                    return Err(err.into());
                }
            }
        }
        Ok(suite)
    }

    /// Stops every service and waits for them and their background tasks.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for started in self.started {
            if let Err(err) = started.wait().await {
                tracing::error!(%err, "service stopped with an error");
            }
        }
    }
}

//! A TCP proxy a test can cut, heal and slow down: what stands between a
//! service and its peer, to take the network away on purpose (no toxiproxy
//! here).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards every connection to `upstream` while healed; [`TcpProxy::cut`]
/// drops the live ones and every new one until [`TcpProxy::heal`].
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    /// `true` while cut; each flip to `true` ends the live connections.
    cut: Arc<watch::Sender<bool>>,
    /// How long each chunk from upstream waits before it is passed on.
    delay: Arc<watch::Sender<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpProxy {
    /// A proxy on a port of its own in front of `upstream`.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy's port");
        let addr = listener.local_addr().expect("the proxy's address");
        let cut = Arc::new(watch::channel(false).0);
        let delay = Arc::new(watch::channel(Duration::ZERO).0);
        let task = tokio::spawn(accept(listener, upstream, cut.clone(), delay.clone()));
        Self {
            addr,
            cut,
            delay,
            task,
        }
    }

    /// Where clients connect.
    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every live connection, and every new one until healed.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Holds every reply (each chunk upstream sends) this long before passing
    /// it on, on live connections too: the request has arrived and been
    /// answered, its caller hears of it late. [`Duration::ZERO`] stops it.
    pub fn delay_replies(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    delay: Arc<watch::Sender<Duration>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if *cut.borrow() {
            drop(client);
            continue;
        }
        tokio::spawn(forward(
            client,
            upstream,
            cut.subscribe(),
            delay.subscribe(),
        ));
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mut cut: watch::Receiver<bool>,
    delay: watch::Receiver<Duration>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_reads, mut client_writes) = client.into_split();
    let (mut server_reads, mut server_writes) = server.into_split();
    let requests = async {
        tokio::io::copy(&mut client_reads, &mut server_writes).await?;
        server_writes.shutdown().await
    };
    // Each chunk is due its delay after it arrived (a slow link, not a
    // slower one for every chunk queued behind another).
    let (due, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let read_replies = async move {
        let mut chunk = vec![0_u8; 16 * 1024];
        loop {
            let n = server_reads.read(&mut chunk).await?;
            let at = tokio::time::Instant::now() + *delay.borrow();
            if due.send((at, chunk[..n].to_vec())).is_err() || n == 0 {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    let write_replies = async move {
        while let Some((at, bytes)) = arrived.recv().await {
            tokio::time::sleep_until(at).await;
            if bytes.is_empty() {
                break;
            }
            client_writes.write_all(&bytes).await?;
        }
        client_writes.shutdown().await
    };
    let replies = async { tokio::join!(read_replies, write_replies) };
    // Each way half-closes when its sender does, as `copy_bidirectional`.
    tokio::select! {
        _ = async { tokio::join!(requests, replies) } => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

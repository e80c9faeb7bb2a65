//! A TCP proxy a test can cut, heal, slow down, blackhole, or have drop its
//! connections part way through a reply: what stands between a service and
//! its peer or its database, to take the network away on purpose (no
//! toxiproxy or netem here). The upstream is a TCP address or a Unix socket
//! (the test clusters listen on Unix sockets only).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

/// Where the proxy forwards to.
#[derive(Debug, Clone)]
enum Upstream {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

impl Upstream {
    async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match self {
            Self::Tcp(addr) => Box::new(TcpStream::connect(addr).await?),
            Self::Unix(path) => Box::new(UnixStream::connect(path).await?),
        })
    }
}

/// The faults in force, shared by every connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    /// Holds every byte, both ways, on live and new connections.
    blackhole: bool,
    /// Each connection ends once it has passed this many more bytes of
    /// replies (counted from when it was set, or from the connection's start).
    cut_after: Option<usize>,
}

/// Forwards every connection to its upstream while healed; [`TcpProxy::cut`]
/// drops the live ones and every new one until [`TcpProxy::heal`].
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    /// `true` while cut; each flip to `true` ends the live connections.
    cut: Arc<watch::Sender<bool>>,
    /// How long each chunk from upstream waits before it is passed on.
    delay: Arc<watch::Sender<Duration>>,
    faults: Arc<watch::Sender<Faults>>,
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
        Self::start_to(Upstream::Tcp(upstream)).await
    }

    /// A proxy on a port of its own in front of the Unix socket `path` (a
    /// test cluster's `.s.PGSQL.<port>`).
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start_unix(path: PathBuf) -> Self {
        Self::start_to(Upstream::Unix(path)).await
    }

    async fn start_to(upstream: Upstream) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy's port");
        let addr = listener.local_addr().expect("the proxy's address");
        let cut = Arc::new(watch::channel(false).0);
        let delay = Arc::new(watch::channel(Duration::ZERO).0);
        let faults = Arc::new(watch::channel(Faults::default()).0);
        let task = tokio::spawn(accept(
            listener,
            upstream,
            cut.clone(),
            delay.clone(),
            faults.clone(),
        ));
        Self {
            addr,
            cut,
            delay,
            faults,
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

    /// Forwards new connections again, and ends a blackhole and a cut after
    /// N bytes.
    pub fn heal(&self) {
        self.cut.send_replace(false);
        self.faults.send_replace(Faults::default());
    }

    /// Holds every reply (each chunk upstream sends) this long before passing
    /// it on, on live connections too: the request has arrived and been
    /// answered, its caller hears of it late. [`Duration::ZERO`] stops it.
    pub fn delay_replies(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }

    /// Passes nothing either way, on live and new connections alike, and
    /// closes none: a peer that stopped answering (a partition, a frozen
    /// host). What was held goes on when healed.
    pub fn blackhole(&self) {
        self.faults.send_modify(|f| f.blackhole = true);
    }

    /// Ends each connection, live or new, once it has passed `bytes` more
    /// bytes of replies: the last chunk is cut short, mid-message.
    pub fn cut_replies_after(&self, bytes: usize) {
        self.faults.send_modify(|f| f.cut_after = Some(bytes));
    }
}

async fn accept(
    listener: TcpListener,
    upstream: Upstream,
    cut: Arc<watch::Sender<bool>>,
    delay: Arc<watch::Sender<Duration>>,
    faults: Arc<watch::Sender<Faults>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if *cut.borrow() {
            drop(client);
            continue;
        }
        tokio::spawn(forward(
            client,
            upstream.clone(),
            cut.subscribe(),
            delay.subscribe(),
            faults.subscribe(),
        ));
    }
}

/// Waits while a blackhole is in force.
async fn through_blackhole(faults: &mut watch::Receiver<Faults>) {
    let _ = faults.wait_for(|f| !f.blackhole).await;
}

async fn forward(
    client: TcpStream,
    upstream: Upstream,
    mut cut: watch::Receiver<bool>,
    delay: watch::Receiver<Duration>,
    faults: watch::Receiver<Faults>,
) {
    let Ok(server) = upstream.connect().await else {
        return;
    };
    let (mut client_reads, mut client_writes) = client.into_split();
    let (mut server_reads, mut server_writes) = tokio::io::split(server);
    let mut request_faults = faults.clone();
    let requests = async move {
        let mut chunk = vec![0_u8; 16 * 1024];
        loop {
            let n = client_reads.read(&mut chunk).await?;
            if n == 0 {
                return server_writes.shutdown().await;
            }
            through_blackhole(&mut request_faults).await;
            server_writes.write_all(&chunk[..n]).await?;
        }
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
    let mut reply_faults = faults;
    let write_replies = async move {
        // Reply bytes passed since the cut-after limit in force was set.
        let (mut limit, mut passed) = (reply_faults.borrow_and_update().cut_after, 0_usize);
        while let Some((at, bytes)) = arrived.recv().await {
            tokio::time::sleep_until(at).await;
            if bytes.is_empty() {
                break;
            }
            through_blackhole(&mut reply_faults).await;
            let now = reply_faults.borrow_and_update().cut_after;
            if now != limit {
                (limit, passed) = (now, 0);
            }
            if let Some(limit) = limit
                && passed + bytes.len() >= limit
            {
                client_writes.write_all(&bytes[..limit - passed]).await?;
                // Ends the connection mid-reply: no orderly shutdown.
                return Err(std::io::Error::other("cut after N bytes"));
            }
            passed += bytes.len();
            client_writes.write_all(&bytes).await?;
        }
        client_writes.shutdown().await
    };
    let replies = async {
        let (read, written) = tokio::join!(read_replies, write_replies);
        read.and(written)
    };
    // Each way half-closes when its sender does, as `copy_bidirectional`; an
    // error either way (a cut after N bytes) drops both sockets at once.
    tokio::select! {
        _ = async { tokio::try_join!(requests, replies) } => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

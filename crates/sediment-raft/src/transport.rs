//! The peer transport: one TCP connection from this broker to each peer, shared by every Raft
//! group, with requests multiplexed by correlation id.
//!
//! Frame (both directions): `u32 length | u64 correlation id | body`, big-endian, the length
//! counting what follows it. A request body is `u64 group | u8 kind | payload`; a response body
//! is `u8 status | payload` where status 0 carries the handler's answer and 1 a UTF-8 error.
//!
//! With a [`ClusterKey`], a connection carries frames only after both ends proved they hold the
//! cluster secret ([`crate::auth`]): a stranger's bytes are never decoded. The listener also caps
//! its connections and closes one that carries no frame for [`PEER_IDLE_TIMEOUT`].
//!
//! Why not one connection per group (what openraft's examples do): with 1,000 partitions per
//! broker that is 1,000 sockets per peer pair and 1,000 independent heartbeat streams. Sharing
//! one connection lets the writer coalesce many small frames into one `write` and keeps the
//! socket count at (peers - 1) per broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Largest frame either side accepts (a Raft append of many batches stays well below).
pub const MAX_FRAME: usize = 256 << 20;

/// Peer connections the listener holds at once (handshakes in progress included).
pub const MAX_PEER_CONNECTIONS: usize = 256;

/// A peer connection that carries no frame for this long is closed (brokers' liveness beats
/// cross every connection far more often; a closed connection is redialled on demand).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

pub use crate::auth::ClusterKey;

/// Identifies a Raft group on the wire. 0 is the metadata (controller) group.
pub type GroupId = u64;

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No connection could be made, or it broke before the answer came.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("peer {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The peer answered with an error (unknown group, decode failure, handler error).
    #[error("peer {addr} refused: {message}")]
    Remote { addr: String, message: String },
}

/// Serves requests for the groups hosted on this broker.
pub trait Dispatch: Send + Sync + 'static {
    /// Handles one request; the answer (or an error message) goes back to the caller.
    fn dispatch(&self, group: GroupId, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// Accepts peer connections on the raft listener and serves them, forever.
pub async fn serve(listener: TcpListener, dispatch: Arc<dyn Dispatch>) {
    let (_keep, stop) = tokio::sync::watch::channel(false);
    serve_until(listener, dispatch, stop).await
}

/// [`serve`] until `stop` turns true (or its sender is dropped): the listener and every peer
/// connection close, so peers see this broker as unreachable.
pub async fn serve_until(listener: TcpListener, dispatch: Arc<dyn Dispatch>, stop: tokio::sync::watch::Receiver<bool>) {
    serve_with(listener, dispatch, stop, None).await
}

/// [`serve_until`], accepting only peers that prove they hold `key` (when given).
pub async fn serve_with(listener: TcpListener, dispatch: Arc<dyn Dispatch>, mut stop: tokio::sync::watch::Receiver<bool>, key: Option<ClusterKey>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PEER_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "raft listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_PEER_CONNECTIONS, "raft listener at its connection limit; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let d = dispatch.clone();
        let mut stop = stop.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut stream = stream;
            if let Some(k) = &key
                && let Err(e) = k.server_handshake(&mut stream).await
            {
                tracing::warn!(%peer, error = %e, "raft peer refused: it did not prove cluster membership");
                return;
            }
            tokio::select! {
                r = serve_conn(stream, d) => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "raft peer connection closed");
                },
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

async fn serve_conn(stream: TcpStream, dispatch: Arc<dyn Dispatch>) -> std::io::Result<()> {
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(write_loop(wr, rx));
    let result = async {
        loop {
            let next = tokio::time::timeout(PEER_IDLE_TIMEOUT, read_frame(&mut rd)).await;
            let Ok(next) = next else {
                tracing::debug!("closing idle raft peer connection");
                return Ok(());
            };
            let Some((corr, mut body)) = next? else { return Ok(()) };
            if body.len() < 9 {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request frame shorter than its header"));
            }
            let group = body.get_u64();
            let kind = body.get_u8();
            let tx = tx.clone();
            // Each request runs on its own task: a slow group (an fsync) must not hold up the
            // heartbeats of the others sharing this connection.
            let fut = dispatch.dispatch(group, kind, body);
            tokio::spawn(async move {
                let (status, payload) = match fut.await {
                    Ok(p) => (0u8, p),
                    Err(m) => (1u8, Bytes::from(m.into_bytes())),
                };
                let mut f = BytesMut::with_capacity(13 + payload.len());
                f.put_u32((9 + payload.len()) as u32);
                f.put_u64(corr);
                f.put_u8(status);
                f.put_slice(&payload);
                let _ = tx.send(f.freeze());
            });
        }
    }
    .await;
    drop(tx);
    let _ = writer.await;
    result
}

/// Reads one frame: `None` at a clean end of stream.
async fn read_frame<R: AsyncReadExt + Unpin>(rd: &mut R) -> std::io::Result<Option<(u64, Bytes)>> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_FRAME).contains(&len) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("raft frame of {len} bytes")));
    }
    let mut buf = BytesMut::zeroed(len);
    rd.read_exact(&mut buf).await?;
    let mut buf = buf.freeze();
    let corr = buf.get_u64();
    Ok(Some((corr, buf)))
}

/// Writes queued frames, coalescing whatever is queued into one write.
async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut batch: Vec<Bytes> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let total: usize = batch.iter().map(|b| b.len()).sum();
        let res = if batch.len() == 1 {
            wr.write_all(&batch[0]).await
        } else {
            let mut buf = BytesMut::with_capacity(total);
            for b in &batch {
                buf.put_slice(b);
            }
            wr.write_all(&buf).await
        };
        batch.clear();
        if res.is_err() {
            return;
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, CallError>>>>>;

struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    pending: Pending,
    /// Set once the connection broke; the next call reconnects.
    dead: Arc<std::sync::atomic::AtomicBool>,
}

/// A connection to one peer, (re)established on demand and shared by all groups.
pub struct PeerClient {
    addr: String,
    /// Proves membership on each new connection (when the cluster has a secret).
    key: Option<ClusterKey>,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_corr: AtomicU64,
    connect_timeout: Duration,
}

impl PeerClient {
    pub fn new(addr: impl Into<String>) -> PeerClient {
        PeerClient::with_key(addr, None)
    }

    /// A client that proves it holds `key` on every connection it makes.
    pub fn with_key(addr: impl Into<String>, key: Option<ClusterKey>) -> PeerClient {
        PeerClient {
            addr: addr.into(),
            key,
            conn: tokio::sync::Mutex::new(None),
            next_corr: AtomicU64::new(1),
            connect_timeout: Duration::from_millis(500),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> CallError {
        CallError::Unreachable { addr: self.addr.clone(), reason: reason.to_string() }
    }

    async fn connection(&self) -> Result<Arc<Conn>, CallError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && !c.dead.load(Ordering::Acquire)
        {
            return Ok(c.clone());
        }
        *guard = None;
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| self.unreachable("connect timed out"))?
            .map_err(|e| self.unreachable(e))?;
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        if let Some(k) = &self.key {
            k.client_handshake(&mut stream).await.map_err(|e| self.unreachable(e))?;
        }
        let (mut rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(write_loop(wr, rx));
        let (p, d, addr) = (pending.clone(), dead.clone(), self.addr.clone());
        tokio::spawn(async move {
            let reason = loop {
                match read_frame(&mut rd).await {
                    Ok(Some((corr, mut body))) => {
                        if body.is_empty() {
                            break "empty response frame".to_string();
                        }
                        let status = body.get_u8();
                        let waiter = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&corr);
                        if let Some(w) = waiter {
                            let r = if status == 0 {
                                Ok(body)
                            } else {
                                Err(CallError::Remote { addr: addr.clone(), message: String::from_utf8_lossy(&body).into_owned() })
                            };
                            let _ = w.send(r);
                        }
                    }
                    Ok(None) => break "connection closed by peer".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            d.store(true, Ordering::Release);
            let waiters: Vec<_> = p.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, w)| w).collect();
            for w in waiters {
                let _ = w.send(Err(CallError::Unreachable { addr: addr.clone(), reason: reason.clone() }));
            }
        });
        let conn = Arc::new(Conn { tx, pending, dead });
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Sends one request to `group` on the peer and waits for the answer.
    pub async fn call(&self, group: GroupId, kind: u8, payload: &[u8], timeout: Duration) -> Result<Bytes, CallError> {
        let work = async {
            let conn = self.connection().await?;
            let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            conn.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(corr, tx);
            if conn.dead.load(Ordering::Acquire) {
                conn.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&corr);
                return Err(self.unreachable("connection broke"));
            }
            let mut f = BytesMut::with_capacity(21 + payload.len());
            f.put_u32((17 + payload.len()) as u32);
            f.put_u64(corr);
            f.put_u64(group);
            f.put_u8(kind);
            f.put_slice(payload);
            if conn.tx.send(f.freeze()).is_err() {
                conn.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&corr);
                return Err(self.unreachable("connection writer stopped"));
            }
            let guard = PendingGuard { pending: &conn.pending, corr };
            let r = rx.await.unwrap_or_else(|_| Err(self.unreachable("connection dropped")));
            drop(guard);
            r
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout { addr: self.addr.clone(), timeout }),
        }
    }
}

/// Removes a waiter whose call was abandoned (timeout), so the map does not grow.
struct PendingGuard<'a> {
    pending: &'a Pending,
    corr: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.corr);
    }
}

/// The clients of every peer, by node id: one [`PeerClient`] (one connection) per peer.
#[derive(Default)]
pub struct Peers {
    clients: Mutex<HashMap<u64, Arc<PeerClient>>>,
    key: Option<ClusterKey>,
}

impl Peers {
    /// Peers without authentication (in-process tests).
    pub fn new() -> Arc<Peers> {
        Arc::new(Peers::default())
    }

    /// Peers that prove membership with `key` on every connection.
    pub fn with_key(key: Option<ClusterKey>) -> Arc<Peers> {
        Arc::new(Peers { clients: Mutex::default(), key })
    }

    /// Whether peers prove membership with a cluster key (without one, a broker listens for no
    /// peer: see `ClusterCtx::start`).
    pub fn authenticated(&self) -> bool {
        self.key.is_some()
    }

    /// The client for `node` at `addr` (replaced if the address changed).
    pub fn client(&self, node: u64, addr: &str) -> Arc<PeerClient> {
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(&node) {
            Some(c) if c.addr() == addr => c.clone(),
            _ => {
                let c = Arc::new(PeerClient::with_key(addr, self.key.clone()));
                m.insert(node, c.clone());
                c
            }
        }
    }
}

/// Binds the raft listener (used by the binary and the tests).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Helpers for tests that start brokers' transports on loopback.
pub mod testing {
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A free loopback address whose port lies below Linux's ephemeral range (32768+), so no
    /// outgoing connection can take it while a test node is down and about to restart on it
    /// (binding port 0 hands out ephemeral ports, which did collide in CI: AddrInUse).
    pub fn listen_addr() -> std::net::SocketAddr {
        let base = std::process::id().wrapping_mul(7919);
        for _ in 0..10_000 {
            let port = 20_000 + ((base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))) % 12_000) as u16;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return l.local_addr().expect("bound listener has an address");
            }
        }
        panic!("no free port in 20000-31999");
    }

    /// Binds `addr` for a test node, retrying for up to 5 s while it is in use: a node
    /// restarted in the same process reuses its address, and the stopped node's accept loop
    /// may not have dropped its listener yet.
    pub async fn bind_again(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
        let mut tries = 0;
        loop {
            match super::bind(addr).await {
                Ok(l) => return l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Dispatch for Echo {
        fn dispatch(&self, group: GroupId, kind: u8, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
            Box::pin(async move {
                if kind == 9 {
                    return Err(format!("group {group} refuses kind 9"));
                }
                if kind == 7 {
                    // a slow request must not hold up the others on the connection
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let mut out = BytesMut::new();
                out.put_u64(group);
                out.put_slice(&payload);
                Ok(out.freeze())
            })
        }
    }

    #[tokio::test]
    async fn multiplexes_groups_on_one_connection() {
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(serve(l, Arc::new(Echo)));
        let c = Arc::new(PeerClient::new(addr));
        let slow = {
            let c = c.clone();
            tokio::spawn(async move { c.call(1, 7, b"slow", Duration::from_secs(2)).await })
        };
        let started = std::time::Instant::now();
        let mut calls = Vec::new();
        for g in 0..200u64 {
            let c = c.clone();
            calls.push(tokio::spawn(async move { (g, c.call(g, 1, &g.to_be_bytes(), Duration::from_secs(2)).await) }));
        }
        for h in calls {
            let (g, r) = h.await.unwrap();
            let mut b = r.unwrap();
            assert_eq!(b.get_u64(), g);
            assert_eq!(b.get_u64(), g);
        }
        assert!(started.elapsed() < Duration::from_millis(300), "fast calls waited for the slow one");
        assert_eq!(&slow.await.unwrap().unwrap()[8..], b"slow");
        let e = c.call(3, 9, b"", Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, CallError::Remote { ref message, .. } if message.contains("refuses kind 9")), "{e}");
    }

    #[tokio::test]
    async fn unreachable_then_reconnects() {
        // reserve a port, close it: nobody listens there
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let c = PeerClient::new(addr.to_string());
        let e = c.call(0, 1, b"x", Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, CallError::Unreachable { .. }), "{e}");
        let l = bind(addr).await.unwrap();
        let server = tokio::spawn(serve(l, Arc::new(Echo)));
        let r = c.call(5, 1, b"x", Duration::from_secs(1)).await.unwrap();
        assert_eq!(&r[8..], b"x");
        server.abort();
    }

    #[tokio::test]
    async fn only_peers_with_the_secret_get_answers() {
        let key = ClusterKey::new("a cluster secret of some length").unwrap();
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (_keep, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(serve_with(l, Arc::new(Echo), stop, Some(key.clone())));
        let member = PeerClient::with_key(addr.clone(), Some(key));
        assert_eq!(&member.call(4, 1, b"hi", Duration::from_secs(2)).await.unwrap()[8..], b"hi");
        let stranger = PeerClient::new(addr.clone());
        let e = stranger.call(4, 1, b"hi", Duration::from_secs(7)).await.unwrap_err();
        assert!(matches!(e, CallError::Unreachable { .. }), "{e}");
        let impostor = PeerClient::with_key(addr, Some(ClusterKey::new("another secret of some length").unwrap()));
        let e = impostor.call(4, 1, b"hi", Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, CallError::Unreachable { ref reason, .. } if reason.contains("cluster secret")), "{e}");
    }

    #[tokio::test]
    async fn times_out() {
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(serve(l, Arc::new(Echo)));
        let c = PeerClient::new(addr);
        let e = c.call(1, 7, b"", Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(e, CallError::Timeout { .. }), "{e}");
        // the connection still works afterwards, and the late answer is discarded
        assert!(c.call(1, 1, b"ok", Duration::from_secs(1)).await.is_ok());
    }
}

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

/// What a frame's buffer starts at and grows by (doubling up to the announced length).
const FRAME_READ_STEP: usize = 1 << 20;

/// Peer connections the listener holds at once (handshakes in progress included).
pub const MAX_PEER_CONNECTIONS: usize = 256;

/// A peer connection that carries no frame for this long is closed (brokers' liveness beats
/// cross every connection far more often; a closed connection is redialled on demand).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

pub use crate::auth::ClusterKey;

/// The identity exchange (see [`PeerClient::check_identity`]) travels as a request to the
/// metadata group of a kind no group handles, so a peer of an earlier release answers it with
/// an error instead of dropping the connection.
const IDENTITY_GROUP: GroupId = 0;
const KIND_IDENTITY: u8 = 0xFE;
/// How a refusal of the exchange starts (the dialling side tells it from an older peer's
/// "no such request").
const IDENTITY_MISMATCH: &str = "cluster id mismatch:";
/// Longest cluster id compared (Kafka's are 22 characters).
const MAX_CLUSTER_ID: usize = 64;

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
                r = serve_conn(stream, d, key) => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "raft peer connection closed");
                },
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

async fn serve_conn(stream: TcpStream, dispatch: Arc<dyn Dispatch>, key: Option<ClusterKey>) -> std::io::Result<()> {
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
            if group == IDENTITY_GROUP && kind == KIND_IDENTITY {
                let ours = key.as_ref().map(ClusterKey::cluster_id).unwrap_or_default();
                let theirs = String::from_utf8_lossy(&body[..body.len().min(MAX_CLUSTER_ID)]).into_owned();
                if body.len() > MAX_CLUSTER_ID || clash(&ours, &theirs) {
                    let why = format!("{IDENTITY_MISMATCH} this broker belongs to cluster {ours}, the dialling one to {theirs}");
                    tracing::warn!(cluster_id = %ours, peer_cluster_id = %theirs, "raft peer refused: it belongs to another cluster (same secret, different cluster id)");
                    let _ = tx.send(response_frame(corr, 1, why.as_bytes()));
                    return Ok(());
                }
                let _ = tx.send(response_frame(corr, 0, ours.as_bytes()));
                continue;
            }
            let tx = tx.clone();
            // Each request runs on its own task: a slow group (an fsync) must not hold up the
            // heartbeats of the others sharing this connection.
            let fut = dispatch.dispatch(group, kind, body);
            tokio::spawn(async move {
                let (status, payload) = match fut.await {
                    Ok(p) => (0u8, p),
                    Err(m) => (1u8, Bytes::from(m.into_bytes())),
                };
                let _ = tx.send(response_frame(corr, status, &payload));
            });
        }
    }
    .await;
    drop(tx);
    let _ = writer.await;
    result
}

fn response_frame(corr: u64, status: u8, payload: &[u8]) -> Bytes {
    let mut f = BytesMut::with_capacity(13 + payload.len());
    f.put_u32((9 + payload.len()) as u32);
    f.put_u64(corr);
    f.put_u8(status);
    f.put_slice(payload);
    f.freeze()
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
    // memory follows the bytes that arrive, not the length a peer announces: a peer that
    // announces 256 MiB and sends nothing holds at most the first step
    let mut buf = BytesMut::with_capacity(len.min(FRAME_READ_STEP));
    while buf.len() < len {
        if buf.capacity() == buf.len() {
            buf.reserve((len - buf.len()).min(buf.len().max(FRAME_READ_STEP)));
        }
        let want = len - buf.len();
        let n = (&mut *rd).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
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
    /// This broker's cluster id when the peer's was compared with it: once the id changes
    /// (learnt from the metadata), the next call dials again and compares again.
    checked_with: String,
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
        PeerClient { addr: addr.into(), key, conn: tokio::sync::Mutex::new(None), next_corr: AtomicU64::new(1), connect_timeout: Duration::from_millis(500) }
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
            && self.key.as_ref().is_none_or(|k| k.cluster_id_is(&c.checked_with))
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
        let checked_with = self.key.as_ref().map(ClusterKey::cluster_id).unwrap_or_default();
        let conn = Arc::new(Conn { tx, pending, dead, checked_with });
        if self.key.is_some()
            && let Err(e) = self.check_identity(&conn).await
        {
            conn.dead.store(true, Ordering::Release);
            return Err(e);
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Sends one request to `group` on the peer and waits for the answer.
    pub async fn call(&self, group: GroupId, kind: u8, payload: &[u8], timeout: Duration) -> Result<Bytes, CallError> {
        let work = async {
            let conn = self.connection().await?;
            self.call_on(&conn, group, kind, payload).await
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout { addr: self.addr.clone(), timeout }),
        }
    }
}

impl PeerClient {
    async fn call_on(&self, conn: &Conn, group: GroupId, kind: u8, payload: &[u8]) -> Result<Bytes, CallError> {
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
    }

    /// The identity exchange on a new authenticated connection: this broker's cluster id goes
    /// out, the peer's comes back, and the connection is dropped if both are known and differ.
    /// A peer of an earlier release answers that group 0 has no such request: it is taken as
    /// it is (nothing to compare), so a rolling upgrade keeps its connections.
    async fn check_identity(&self, conn: &Conn) -> Result<(), CallError> {
        let ours = &conn.checked_with;
        let answer = tokio::time::timeout(crate::auth::HANDSHAKE_TIMEOUT, self.call_on(conn, IDENTITY_GROUP, KIND_IDENTITY, ours.as_bytes()))
            .await
            .map_err(|_| self.unreachable("peer did not answer the cluster id exchange"))?;
        match answer {
            Ok(theirs) => {
                let theirs = String::from_utf8_lossy(&theirs);
                if clash(ours, &theirs) {
                    return Err(self.unreachable(format!("{IDENTITY_MISMATCH} the peer belongs to cluster {theirs}, this broker to {ours}")));
                }
                Ok(())
            }
            Err(CallError::Remote { message, .. }) if message.starts_with(IDENTITY_MISMATCH) => Err(self.unreachable(message)),
            Err(CallError::Remote { message, .. }) => {
                tracing::debug!(peer = %self.addr, %message, "peer predates the cluster id exchange; not compared");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Two cluster ids that name different clusters (an empty one is not known yet).
fn clash(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && a != b
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

    /// Records this broker's cluster id (once its metadata names one). Connections made before
    /// are dialled again on their next call, so every peer gets compared with it.
    pub fn set_cluster_id(&self, id: &str) {
        if let Some(k) = &self.key {
            k.set_cluster_id(id);
        }
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
    async fn frames_larger_than_a_read_step_arrive_whole_and_short_ones_fail() {
        let body: Vec<u8> = (0..(3 * FRAME_READ_STEP + 17)).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        wire.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
        wire.extend_from_slice(&42u64.to_be_bytes());
        wire.extend_from_slice(&body);
        // delivered in small pieces, as TCP does
        let (mut a, mut b) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            a.write_all(&wire).await.unwrap();
            a
        });
        let (corr, got) = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(corr, 42);
        assert_eq!(&got[..], &body[..]);
        // announces 256 MiB, sends a few bytes and goes away: an error, not a hang or a panic
        let mut a = writer.await.unwrap();
        a.write_all(&(MAX_FRAME as u32).to_be_bytes()).await.unwrap();
        a.write_all(&[1u8; 100]).await.unwrap();
        drop(a);
        let e = read_frame(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
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
    async fn two_clusters_sharing_a_secret_refuse_each_other() {
        const SECRET: &str = "a cluster secret of some length";
        let theirs = ClusterKey::new(SECRET).unwrap();
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (_keep, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(serve_with(l, Arc::new(Echo), stop, Some(theirs.clone())));
        let keyed = |id: &str| {
            let k = ClusterKey::new(SECRET).unwrap();
            k.set_cluster_id(id);
            PeerClient::with_key(addr.clone(), Some(k))
        };
        // neither side knows its cluster yet (a new cluster forming): nothing to compare
        assert!(keyed("").call(4, 1, b"hi", Duration::from_secs(2)).await.is_ok());
        assert!(keyed("cluster-a").call(4, 1, b"hi", Duration::from_secs(2)).await.is_ok());
        theirs.set_cluster_id("cluster-b");
        // a broker of another cluster: refused, and it learns why
        let e = keyed("cluster-a").call(4, 1, b"hi", Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, CallError::Unreachable { ref reason, .. } if reason.contains("cluster id mismatch") && reason.contains("cluster-b")), "{e}");
        // a member, and a new broker that does not know its cluster yet
        assert_eq!(&keyed("cluster-b").call(4, 1, b"hi", Duration::from_secs(2)).await.unwrap()[8..], b"hi");
        assert!(keyed("").call(4, 1, b"hi", Duration::from_secs(2)).await.is_ok());
        // a connection made before this side knew its id is dialled again once it does
        let peers = Peers::with_key(Some(ClusterKey::new(SECRET).unwrap()));
        let c = peers.client(2, &addr);
        assert!(c.call(4, 1, b"hi", Duration::from_secs(2)).await.is_ok());
        peers.set_cluster_id("cluster-a");
        let e = c.call(4, 1, b"hi", Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, CallError::Unreachable { ref reason, .. } if reason.contains("cluster id mismatch")), "{e}");
    }

    #[tokio::test]
    async fn a_peer_of_an_earlier_release_is_not_compared() {
        // the listener of a release without the exchange: proves itself, then answers every
        // request to a group it does not host with an error
        const SECRET: &str = "a cluster secret of some length";
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = l.accept().await.unwrap();
            ClusterKey::new(SECRET).unwrap().server_handshake(&mut stream).await.unwrap();
            while let Ok(Some((corr, mut body))) = read_frame(&mut stream).await {
                let group = body.get_u64();
                let reply = if group == 0 { response_frame(corr, 1, b"group 0 is not hosted here") } else { response_frame(corr, 0, b"ok") };
                stream.write_all(&reply).await.unwrap();
            }
        });
        let k = ClusterKey::new(SECRET).unwrap();
        k.set_cluster_id("cluster-a");
        let c = PeerClient::with_key(addr, Some(k));
        assert_eq!(&c.call(4, 1, b"hi", Duration::from_secs(2)).await.unwrap()[..], b"ok");
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

//! Connections to brokers and the cluster-aware [`Client`].
//!
//! A [`Connection`] is one TCP connection with pipelining: every request gets
//! a correlation id and a oneshot channel; a writer task drains a queue of
//! encoded frames onto the socket and a reader task cuts responses out of the
//! byte stream (refusing frames above a size cap before allocating for them)
//! and hands each body to the waiting caller, who decodes it. Any number of
//! requests can be in flight; callers bound that themselves.
//!
//! On connect the connection sends ApiVersions and, for every API, uses the
//! highest version both sides support (Produce never below 3, whatever the
//! broker advertises). Request headers are encoded with
//! [`ApiKey::request_header_version`], response headers decoded with
//! [`ApiKey::response_header_version`].
//!
//! A [`Client`] holds the bootstrap connection, fetches and caches Metadata,
//! and opens (and caches) one connection per broker node id, dialling the
//! host:port each broker advertises.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes, VersionRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Client id sent in every request header.
pub const CLIENT_ID: &str = "sediment-cli";

/// Highest API key number the version table tracks (Kafka 4.1 stops at 92).
const MAX_API_KEY: usize = 128;

/// Settings shared by every connection of a [`Client`].
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Client id sent in request headers.
    pub client_id: String,
    /// Largest response frame accepted; bigger ones close the connection.
    pub max_frame_bytes: usize,
    /// How long a request may wait for its response (on top of any
    /// broker-side wait the request itself asks for).
    pub request_timeout: Duration,
    /// How long dialling a broker may take.
    pub connect_timeout: Duration,
    /// Encoded frames queued for the writer task before senders wait.
    pub write_queue: usize,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            client_id: CLIENT_ID.to_owned(),
            max_frame_bytes: 256 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            write_queue: 256,
        }
    }
}

/// An encoded request frame: one buffer, or several written back to back
/// (a Produce request references its record batches instead of copying them).
pub(crate) enum Frame {
    One(Bytes),
    Parts(Vec<Bytes>),
}

/// A place in a chain of requests that must reach the socket in the order the chain was made
/// (an idempotent producer's batches of one partition: a later sequence written first is
/// refused as out of order). A turn queues its frame once the previous turn has queued its
/// own or was dropped unsent (an error before sending must not stall the chain).
#[derive(Debug)]
pub(crate) struct Turn {
    after: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

/// The turn's signal to its successor; dropping it lets the successor go.
pub(crate) struct TurnDone(#[allow(dead_code)] oneshot::Sender<()>);

impl Turn {
    /// The next turn of a chain whose last turn so far left `last` (None: the chain starts).
    pub(crate) fn next(last: &mut Option<oneshot::Receiver<()>>) -> Turn {
        let (done, rx) = oneshot::channel();
        Turn { after: last.replace(rx), done }
    }

    async fn wait(self) -> TurnDone {
        if let Some(after) = self.after {
            let _ = after.await; // sent or dropped: either way it is our turn
        }
        TurnDone(self.done)
    }
}

/// A request waiting for its response.
struct Pending {
    api: ApiKey,
    version: i16,
    tx: oneshot::Sender<Result<Bytes>>,
}

/// State shared by a connection and its reader and writer tasks.
struct Shared {
    addr: String,
    inner: Mutex<PendingMap>,
}

struct PendingMap {
    /// Set once the connection has failed; no request is registered after.
    failed: Option<Error>,
    entries: HashMap<i32, Pending>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingMap> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single insert/remove/drain).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection failed and fails every waiting request.
    fn fail(&self, err: Error) {
        let drained: Vec<Pending> = {
            let mut inner = self.lock();
            if inner.failed.is_none() {
                inner.failed = Some(err.clone());
            }
            inner.entries.drain().map(|(_, p)| p).collect()
        };
        for p in drained {
            let _ = p.tx.send(Err(err.clone()));
        }
    }

    /// Routes one response frame (correlation id first) to its caller.
    fn dispatch(&self, mut frame: Bytes) {
        if frame.len() < 4 {
            self.fail(Error::protocol(&self.addr, "response frame shorter than its header"));
            return;
        }
        let id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let Some(pending) = self.lock().entries.remove(&id) else {
            // The caller timed out and went away; nothing to deliver.
            tracing::debug!(addr = %self.addr, correlation_id = id, "response for an abandoned request");
            return;
        };
        let header_version = pending.api.response_header_version(pending.version);
        let result = match ResponseHeader::decode(&mut frame, header_version) {
            Ok(_) => Ok(frame),
            Err(e) => Err(Error::protocol(&self.addr, format!("cannot decode {:?} response header: {e}", pending.api))),
        };
        let _ = pending.tx.send(result);
    }
}

/// Broker-advertised version ranges, indexed by API key.
#[derive(Clone)]
struct VersionTable {
    broker: Vec<Option<VersionRange>>,
}

impl VersionTable {
    fn from_response(resp: &ApiVersionsResponse) -> Self {
        let mut broker = vec![None; MAX_API_KEY];
        for k in &resp.api_keys {
            if let Some(slot) = usize::try_from(k.api_key).ok().and_then(|i| broker.get_mut(i)) {
                *slot = Some(VersionRange { min: k.min_version, max: k.max_version });
            }
        }
        VersionTable { broker }
    }

    fn broker_range(&self, api: ApiKey) -> Option<VersionRange> {
        self.broker.get(api as i16 as usize).copied().flatten()
    }
}

/// The versions of `api` this client can speak.
fn client_range(api: ApiKey) -> VersionRange {
    let ours = api.valid_versions();
    match api {
        // Produce v0-2 are gone since Kafka 4.0 and use old message formats;
        // never go below v3 even if a broker advertises min 0.
        ApiKey::Produce => VersionRange { min: ours.min.max(3), max: ours.max },
        // v0 cannot ask for "all topics".
        ApiKey::Metadata => VersionRange { min: ours.min.max(1), max: ours.max },
        _ => ours,
    }
}

/// Highest version in both ranges, optionally capped; `None` if they do not overlap.
fn negotiate(ours: VersionRange, theirs: VersionRange, cap: Option<i16>) -> Option<i16> {
    let mut r = ours.intersect(&theirs);
    if let Some(cap) = cap {
        r.max = r.max.min(cap);
    }
    (!r.is_empty()).then_some(r.max)
}

fn api_of<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY).map_err(|_| Error::Invalid(format!("unknown api key {}", R::KEY)))
}

/// One pipelined TCP connection to a broker.
pub struct Connection {
    addr: String,
    config: ConnConfig,
    client_id: StrBytes,
    versions: VersionTable,
    next_id: AtomicI32,
    frames: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
    tasks: [AbortHandle; 2],
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The writer ends by itself when the frame queue closes; the reader
        // would wait for the broker to hang up, so stop it here.
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Connection {
    /// Dials `addr`, starts the reader and writer tasks and negotiates API versions.
    pub async fn connect(addr: &str, config: &ConnConfig) -> Result<Arc<Connection>> {
        let connect_err = |cause: std::io::Error| Error::Connect { addr: addr.to_owned(), cause: Arc::new(cause) };
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")))?
            .map_err(connect_err)?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared { addr: addr.to_owned(), inner: Mutex::new(PendingMap { failed: None, entries: HashMap::new() }) });
        let (tx, rx) = mpsc::channel(config.write_queue.max(1));
        let writer = tokio::spawn(write_loop(wr, rx, shared.clone())).abort_handle();
        let reader = tokio::spawn(read_loop(rd, shared.clone(), config.max_frame_bytes)).abort_handle();
        let mut conn = Connection {
            addr: addr.to_owned(),
            config: config.clone(),
            client_id: StrBytes::from_string(config.client_id.clone()),
            versions: VersionTable { broker: vec![None; MAX_API_KEY] },
            next_id: AtomicI32::new(1),
            frames: tx,
            shared,
            tasks: [writer, reader],
        };
        conn.versions = conn.negotiate_versions().await?;
        Ok(Arc::new(conn))
    }

    /// Address this connection dialled.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has failed; a failed connection never recovers.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().failed.is_some() || self.frames.is_closed()
    }

    /// The version of `api` this connection uses: the highest both sides support.
    pub fn version(&self, api: ApiKey) -> Result<i16> {
        self.version_capped(api, None)
    }

    /// Like [`Connection::version`], but never above `cap` (for example to
    /// stay below the versions that name topics by id).
    pub fn version_capped(&self, api: ApiKey, cap: Option<i16>) -> Result<i16> {
        self.versions
            .broker_range(api)
            .and_then(|theirs| negotiate(client_range(api), theirs, cap))
            .ok_or_else(|| Error::Unsupported { addr: self.addr.clone(), api })
    }

    /// Whether the broker supports `api` at all.
    pub fn supports(&self, api: ApiKey) -> bool {
        self.version(api).is_ok()
    }

    async fn negotiate_versions(&self) -> Result<VersionTable> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiVersionsRequest::VERSIONS.max.min(3);
        for _ in 0..2 {
            let body = self.roundtrip(ApiKey::ApiVersions, version, &req, self.config.request_timeout, true).await?;
            let Some(body) = body else { break };
            let code = body.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])).unwrap_or(0);
            if code == ResponseError::UnsupportedVersion.code() {
                // The broker answers an unsupported ApiVersions version in the
                // v0 layout and lists the versions it does support.
                let resp =
                    ApiVersionsResponse::decode(&mut body.clone(), 0).map_err(|e| Error::protocol(&self.addr, format!("cannot decode ApiVersions: {e}")))?;
                let theirs = VersionTable::from_response(&resp).broker_range(ApiKey::ApiVersions);
                match theirs.and_then(|t| negotiate(ApiVersionsRequest::VERSIONS, t, None)) {
                    Some(v) if v != version => {
                        version = v;
                        continue;
                    }
                    _ => return Err(Error::Unsupported { addr: self.addr.clone(), api: ApiKey::ApiVersions }),
                }
            }
            let resp =
                ApiVersionsResponse::decode(&mut body.clone(), version).map_err(|e| Error::protocol(&self.addr, format!("cannot decode ApiVersions: {e}")))?;
            if resp.error_code != 0 {
                return Err(Error::broker(format!("ApiVersions to {} failed", self.addr), resp.error_code, None));
            }
            return Ok(VersionTable::from_response(&resp));
        }
        Err(Error::Unsupported { addr: self.addr.clone(), api: ApiKey::ApiVersions })
    }

    /// Sends `req` at the negotiated version and waits for the response.
    pub async fn send<R: Request>(&self, req: &R) -> Result<R::Response> {
        let version = self.version(api_of::<R>()?)?;
        self.send_at(req, version, self.config.request_timeout).await
    }

    /// Sends `req` at `version` and waits up to `timeout` for the response.
    pub async fn send_at<R: Request>(&self, req: &R, version: i16, timeout: Duration) -> Result<R::Response> {
        let api = api_of::<R>()?;
        let body = self.roundtrip(api, version, req, timeout, true).await?;
        self.decode_response::<R>(api, version, body)
    }

    /// Queues `req` without expecting a response (Produce with acks=0).
    /// Returns once the frame is queued for the socket.
    pub async fn send_oneway<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        let api = api_of::<R>()?;
        self.roundtrip(api, version, req, self.config.request_timeout, false).await.map(|_| ())
    }

    /// Sends a request whose body is already encoded as `parts` (written in
    /// order, without copying them into one buffer) and decodes the response
    /// as `R::Response`; `None` if `expect_response` is false.
    /// With a `turn`, the frame is queued only after the previous turn's frame (see [`Turn`]).
    pub(crate) async fn send_body_parts<R: Request>(
        &self,
        version: i16,
        parts: Vec<Bytes>,
        timeout: Duration,
        expect_response: bool,
        turn: Option<Turn>,
    ) -> Result<Option<R::Response>> {
        let api = api_of::<R>()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode_parts_frame(api, version, id, parts)?;
        let body = self.exchange(api, version, id, frame, timeout, expect_response, turn).await?;
        match body {
            None => Ok(None),
            some => self.decode_response::<R>(api, version, some).map(Some),
        }
    }

    fn decode_response<R: Request>(&self, api: ApiKey, version: i16, body: Option<Bytes>) -> Result<R::Response> {
        let Some(mut body) = body else {
            return Err(Error::protocol(&self.addr, "missing response"));
        };
        R::Response::decode(&mut body, version).map_err(|e| Error::protocol(&self.addr, format!("cannot decode {api:?} v{version} response: {e}")))
    }

    /// Default request timeout of this connection.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    async fn roundtrip<R: Encodable>(&self, api: ApiKey, version: i16, req: &R, timeout: Duration, expect_response: bool) -> Result<Option<Bytes>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::One(self.encode_frame(api, version, id, req)?);
        self.exchange(api, version, id, frame, timeout, expect_response, None).await
    }

    /// Registers `id` (if a response is expected), queues `frame` (after `turn`'s predecessor)
    /// and waits.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        api: ApiKey,
        version: i16,
        id: i32,
        frame: Frame,
        timeout: Duration,
        expect_response: bool,
        turn: Option<Turn>,
    ) -> Result<Option<Bytes>> {
        let turn = match turn {
            Some(t) => Some(t.wait().await),
            None => None,
        };
        let rx = if expect_response {
            let (tx, rx) = oneshot::channel();
            let mut inner = self.shared.lock();
            if let Some(e) = &inner.failed {
                return Err(e.clone());
            }
            inner.entries.insert(id, Pending { api, version, tx });
            Some(rx)
        } else {
            None
        };
        let queued = self.frames.send(frame).await;
        drop(turn); // the next turn may queue its frame now
        if queued.is_err() {
            self.shared.lock().entries.remove(&id);
            return Err(self.failure());
        }
        let Some(rx) = rx else { return Ok(None) };
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                self.shared.lock().entries.remove(&id);
                Err(Error::Timeout { addr: self.addr.clone(), api, timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) })
            }
            Ok(Err(_)) => Err(self.failure()),
            Ok(Ok(res)) => res.map(Some),
        }
    }

    /// The error that closed the connection (or a generic "closed").
    fn failure(&self) -> Error {
        self.shared.lock().failed.clone().unwrap_or_else(|| Error::Closed { addr: self.addr.clone() })
    }

    fn encode_frame<R: Encodable>(&self, api: ApiKey, version: i16, id: i32, req: &R) -> Result<Bytes> {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(self.client_id.clone()));
        let header_version = api.request_header_version(version);
        let encode_err = |e: anyhow::Error| Error::Invalid(format!("cannot encode {api:?} v{version} request: {e}"));
        let size = header.compute_size(header_version).map_err(encode_err)? + req.compute_size(version).map_err(encode_err)?;
        let mut buf = BytesMut::with_capacity(4 + size);
        buf.put_i32(0);
        header.encode(&mut buf, header_version).map_err(encode_err)?;
        req.encode(&mut buf, version).map_err(encode_err)?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| Error::Invalid(format!("{api:?} request of {} bytes is too large", buf.len())))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf.freeze())
    }

    fn header_bytes(&self, api: ApiKey, version: i16, id: i32) -> Result<BytesMut> {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(self.client_id.clone()));
        let header_version = api.request_header_version(version);
        let encode_err = |e: anyhow::Error| Error::Invalid(format!("cannot encode {api:?} v{version} request header: {e}"));
        let mut buf = BytesMut::with_capacity(4 + header.compute_size(header_version).map_err(encode_err)?);
        buf.put_i32(0);
        header.encode(&mut buf, header_version).map_err(encode_err)?;
        Ok(buf)
    }

    fn encode_parts_frame(&self, api: ApiKey, version: i16, id: i32, mut parts: Vec<Bytes>) -> Result<Frame> {
        let mut head = self.header_bytes(api, version, id)?;
        let total = head.len() - 4 + parts.iter().map(Bytes::len).sum::<usize>();
        let len = i32::try_from(total).map_err(|_| Error::Invalid(format!("{api:?} request of {total} bytes is too large")))?;
        head[..4].copy_from_slice(&len.to_be_bytes());
        parts.insert(0, head.freeze());
        Ok(Frame::Parts(parts))
    }
}

/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 64;

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Frame>, shared: Arc<Shared>) {
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let push = |queue: &mut VecDeque<Bytes>, frame: Frame| match frame {
        Frame::One(b) => queue.push_back(b),
        Frame::Parts(parts) => queue.extend(parts.into_iter().filter(|p| !p.is_empty())),
    };
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(frame) => push(&mut queue, frame),
                None => break,
            }
        }
        // Take whatever else is already queued into the same write.
        while queue.len() < 4 * MAX_IOVECS {
            match rx.try_recv() {
                Ok(frame) => push(&mut queue, frame),
                Err(_) => break,
            }
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (slot, b) in slices.iter_mut().zip(queue.iter()) {
            *slot = IoSlice::new(b);
            count += 1;
        }
        let written = match wr.write_vectored(&slices[..count]).await {
            Ok(0) => Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "socket accepted no bytes")),
            other => other,
        };
        let mut n = match written {
            Ok(n) => n,
            Err(e) => {
                shared.fail(Error::io(&shared.addr, e));
                return;
            }
        };
        while n > 0 {
            let Some(front) = queue.front_mut() else { break };
            if front.len() <= n {
                n -= front.len();
                queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(mut rd: OwnedReadHalf, shared: Arc<Shared>, max_frame: usize) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        match read_frame(&mut rd, &mut buf, max_frame, &shared.addr).await {
            Ok(frame) => shared.dispatch(frame),
            Err(e) => {
                shared.fail(e);
                return;
            }
        }
    }
}

/// Reads one size-prefixed frame, checking the size before allocating for it.
async fn read_frame(rd: &mut OwnedReadHalf, buf: &mut BytesMut, max_frame: usize, addr: &str) -> Result<Bytes> {
    fill(rd, buf, 4, addr).await?;
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let size = usize::try_from(size).map_err(|_| Error::protocol(addr, format!("negative frame size {size}")))?;
    if size > max_frame {
        return Err(Error::protocol(addr, format!("frame of {size} bytes exceeds the {max_frame} byte limit")));
    }
    fill(rd, buf, 4 + size, addr).await?;
    let mut frame = buf.split_to(4 + size).freeze();
    frame.advance(4);
    Ok(frame)
}

async fn fill(rd: &mut OwnedReadHalf, buf: &mut BytesMut, want: usize, addr: &str) -> Result<()> {
    while buf.len() < want {
        let spare = buf.capacity() - buf.len();
        if spare < 16 * 1024 || buf.capacity() < want {
            buf.reserve((want - buf.len()).max(64 * 1024));
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(Error::Closed { addr: addr.to_owned() }),
            Ok(_) => {}
            Err(e) => return Err(Error::io(addr, e)),
        }
    }
    Ok(())
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader node id, or -1 when there is none.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Offline replica node ids.
    pub offline: Vec<i32>,
    /// Partition-level error the broker reported, if any.
    pub error: Option<ResponseError>,
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (nil if the broker does not report ids).
    pub id: Uuid,
    /// Whether the topic is internal.
    pub internal: bool,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Number of partitions.
    pub fn num_partitions(&self) -> i32 {
        i32::try_from(self.partitions.len()).unwrap_or(i32::MAX)
    }

    /// The partition with index `p`.
    pub fn partition(&self, p: i32) -> Option<&PartitionInfo> {
        let i = usize::try_from(p).ok()?;
        self.partitions.get(i).filter(|info| info.partition == p).or_else(|| self.partitions.iter().find(|info| info.partition == p))
    }

    /// Leader of partition `p`, if it has one.
    pub fn leader(&self, p: i32) -> Option<i32> {
        self.partition(p).map(|i| i.leader).filter(|l| *l >= 0)
    }
}

#[derive(Default)]
struct ClusterState {
    brokers: HashMap<i32, String>,
    controller: i32,
    cluster_id: Option<String>,
    topics: HashMap<String, Arc<TopicInfo>>,
}

/// Formats a broker endpoint as something `TcpStream::connect` accepts.
fn endpoint(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// A cluster-aware client: bootstrap connection, metadata cache, one
/// connection per broker node.
pub struct Client {
    bootstrap: String,
    config: ConnConfig,
    bootstrap_conn: tokio::sync::Mutex<Arc<Connection>>,
    nodes: tokio::sync::Mutex<HashMap<i32, Arc<Connection>>>,
    state: RwLock<ClusterState>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("bootstrap", &self.bootstrap).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `bootstrap` (HOST:PORT) with default settings and reads the cluster's brokers.
    pub async fn connect(bootstrap: &str) -> Result<Arc<Client>> {
        Self::connect_with(bootstrap, ConnConfig::default()).await
    }

    /// Connects to `bootstrap` with `config` and reads the cluster's brokers.
    pub async fn connect_with(bootstrap: &str, config: ConnConfig) -> Result<Arc<Client>> {
        let conn = Connection::connect(bootstrap, &config).await?;
        let client = Arc::new(Client {
            bootstrap: bootstrap.to_owned(),
            config,
            bootstrap_conn: tokio::sync::Mutex::new(conn),
            nodes: tokio::sync::Mutex::new(HashMap::new()),
            state: RwLock::new(ClusterState { controller: -1, ..Default::default() }),
        });
        client.metadata(Some(&[])).await?;
        Ok(client)
    }

    /// The bootstrap address.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The connection settings.
    pub fn config(&self) -> &ConnConfig {
        &self.config
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, ClusterState> {
        // Writers only replace whole entries; a poisoned lock still holds a usable map.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bootstrap connection, re-dialled if it has failed.
    pub async fn bootstrap_connection(&self) -> Result<Arc<Connection>> {
        let mut conn = self.bootstrap_conn.lock().await;
        if conn.is_closed() {
            *conn = Connection::connect(&self.bootstrap, &self.config).await?;
        }
        Ok(conn.clone())
    }

    /// The connection to broker `node`, dialled (at its advertised address) if needed.
    pub async fn node_connection(&self, node: i32) -> Result<Arc<Connection>> {
        let mut nodes = self.nodes.lock().await;
        if let Some(c) = nodes.get(&node).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let known = self.read_state().brokers.get(&node).cloned();
        let addr = match known {
            Some(a) => a,
            None => {
                drop(nodes);
                self.metadata(Some(&[])).await?;
                nodes = self.nodes.lock().await;
                self.read_state().brokers.get(&node).cloned().ok_or_else(|| Error::Invalid(format!("broker {node} is not in the cluster metadata")))?
            }
        };
        // Reuse the bootstrap connection when the broker is the one we dialled.
        let conn = if addr == self.bootstrap { self.bootstrap_connection().await? } else { Connection::connect(&addr, &self.config).await? };
        nodes.insert(node, conn.clone());
        Ok(conn)
    }

    /// A connection to the controller if Metadata named one, else the bootstrap broker.
    pub async fn controller_connection(&self) -> Result<Arc<Connection>> {
        let controller = self.read_state().controller;
        if controller >= 0 {
            match self.node_connection(controller).await {
                Ok(c) => return Ok(c),
                Err(e) => tracing::debug!(error = %e, "controller unreachable, using bootstrap broker"),
            }
        }
        self.bootstrap_connection().await
    }

    /// Known brokers: node id → advertised host:port.
    pub fn brokers(&self) -> HashMap<i32, String> {
        self.read_state().brokers.clone()
    }

    /// Cluster id from the last Metadata response.
    pub fn cluster_id(&self) -> Option<String> {
        self.read_state().cluster_id.clone()
    }

    /// Sends Metadata for `topics` (`None` = all topics, `Some(&[])` = brokers
    /// only), updates the broker list and topic cache, and returns the response.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_topics(
                topics.map(|ts| ts.iter().map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.clone()))))).collect()),
            )
            .with_allow_auto_topic_creation(false);
        let conn = self.bootstrap_connection().await?;
        let resp = conn.send(&req).await?;
        self.apply_metadata(&resp);
        Ok(resp)
    }

    fn apply_metadata(&self, resp: &MetadataResponse) {
        let mut state = self.write_state();
        if !resp.brokers.is_empty() {
            state.brokers = resp.brokers.iter().map(|b| (b.node_id.0, endpoint(&b.host, b.port))).collect();
        }
        state.controller = resp.controller_id.0;
        state.cluster_id = resp.cluster_id.as_ref().map(|c| c.to_string());
        for t in &resp.topics {
            let Some(name) = t.name.as_ref() else { continue };
            if t.error_code != 0 {
                if t.error_code == ResponseError::UnknownTopicOrPartition.code() {
                    state.topics.remove(name.as_str());
                }
                continue;
            }
            state.topics.insert(name.to_string(), Arc::new(topic_info(t)));
        }
    }

    /// The cached description of `topic`, if any.
    pub fn cached_topic(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        self.read_state().topics.get(topic).cloned()
    }

    /// The description of `topic`, from the cache or a Metadata request.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicInfo>> {
        match self.cached_topic(topic) {
            Some(t) => Ok(t),
            None => self.refresh_topic(topic).await,
        }
    }

    /// Fetches `topic`'s metadata, retrying briefly while the broker reports a
    /// retriable topic-level error (a topic being created has no leader yet).
    pub async fn refresh_topic(&self, topic: &str) -> Result<Arc<TopicInfo>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.metadata(Some(&[topic.to_owned()])).await?;
            let Some(t) = resp.topics.iter().find(|t| t.name.as_deref().map(|n| &**n) == Some(topic)) else {
                return Err(Error::UnknownTopic(topic.to_owned()));
            };
            if t.error_code == 0 {
                return Ok(Arc::new(topic_info(t)));
            }
            let err = if t.error_code == ResponseError::UnknownTopicOrPartition.code() {
                Error::UnknownTopic(topic.to_owned())
            } else {
                Error::broker(format!("cannot read metadata of topic \"{topic}\""), t.error_code, None)
            };
            if !matches!(err.code(), Some(c) if c.is_retriable()) || attempt >= 10 {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The connection to the current leader of `topic`/`partition`,
    /// refreshing metadata once if the cached leader is unknown.
    pub async fn leader_connection(&self, topic: &str, partition: i32) -> Result<(i32, Arc<Connection>)> {
        let mut info = self.topic(topic).await?;
        if info.leader(partition).is_none() {
            info = self.refresh_topic(topic).await?;
        }
        let Some(p) = info.partition(partition) else {
            return Err(Error::UnknownPartition { topic: topic.to_owned(), partition });
        };
        if p.leader < 0 {
            return Err(Error::broker(
                format!("partition {partition} of topic \"{topic}\" has no leader"),
                p.error.map(|e| e.code()).unwrap_or(ResponseError::LeaderNotAvailable.code()),
                None,
            ));
        }
        Ok((p.leader, self.node_connection(p.leader).await?))
    }
}

fn topic_info(t: &kafka_protocol::messages::metadata_response::MetadataResponseTopic) -> TopicInfo {
    let mut partitions: Vec<PartitionInfo> = t
        .partitions
        .iter()
        .map(|p| PartitionInfo {
            partition: p.partition_index,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
            isr: p.isr_nodes.iter().map(|n| n.0).collect(),
            offline: p.offline_replicas.iter().map(|n| n.0).collect(),
            error: ResponseError::try_from_code(p.error_code),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    TopicInfo { name: t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(), id: t.topic_id, internal: t.is_internal, partitions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        let ours = VersionRange { min: 3, max: 13 };
        assert_eq!(negotiate(ours, VersionRange { min: 0, max: 9 }, None), Some(9));
        assert_eq!(negotiate(ours, VersionRange { min: 0, max: 20 }, None), Some(13));
        assert_eq!(negotiate(ours, VersionRange { min: 0, max: 20 }, Some(12)), Some(12));
        assert_eq!(negotiate(ours, VersionRange { min: 0, max: 2 }, None), None);
        assert_eq!(negotiate(ours, VersionRange { min: 14, max: 20 }, None), None);
    }

    #[test]
    fn produce_never_below_v3() {
        assert_eq!(client_range(ApiKey::Produce).min, 3);
        assert_eq!(negotiate(client_range(ApiKey::Produce), VersionRange { min: 0, max: 3 }, None), Some(3));
        assert_eq!(client_range(ApiKey::Metadata).min, 1);
    }

    #[test]
    fn endpoints_bracket_ipv6() {
        assert_eq!(endpoint("127.0.0.1", 9092), "127.0.0.1:9092");
        assert_eq!(endpoint("::1", 9092), "[::1]:9092");
        assert_eq!(endpoint("broker-0.local", 1), "broker-0.local:1");
    }

    #[test]
    fn topic_partition_lookup() {
        let p = |i| PartitionInfo {
            partition: i,
            leader: if i == 1 { -1 } else { 7 },
            leader_epoch: 0,
            replicas: vec![],
            isr: vec![],
            offline: vec![],
            error: None,
        };
        let t = TopicInfo { name: "t".into(), id: Uuid::nil(), internal: false, partitions: vec![p(0), p(1), p(2)] };
        assert_eq!(t.leader(0), Some(7));
        assert_eq!(t.leader(1), None);
        assert_eq!(t.leader(3), None);
        assert_eq!(t.leader(-1), None);
        assert_eq!(t.num_partitions(), 3);
    }
}

//! The Kafka listener and the per-connection request loop.
//!
//! ```text
//!  socket ──read──▶ BytesMut ──check_frame──▶ frame ──parse header──▶ RequestKind::decode
//!                                                                        │
//!                        (in order, one at a time) handlers::dispatch ◀──┘
//!                                                                        │ Reply::Ready / Later(future) / None
//!  socket ◀──write── encode(header, body) ◀── writer task awaits replies in request order
//! ```
//!
//! The reader runs each handler's synchronous part in request order (so appends from pipelined
//! produce requests land in the order they were sent), while the waits — fsync for `acks=all`,
//! long-poll fetches — run as futures the writer awaits in order, so up to `MAX_IN_FLIGHT`
//! requests of one connection overlap. A frame is parsed only once it is complete; its size is
//! checked against `socket.request.max.bytes` (and, for every API but Produce, the lower
//! `max_non_produce_request_bytes`) before any buffer grows for it.
//!
//! What one connection can hold is bounded: responses ready to send but not yet written take
//! from a per-connection byte budget (a client that pipelines fetches and never reads stops
//! being read itself, as Kafka mutes such a channel); a peer that goes away cancels whatever
//! it was waiting for (a long poll, an acks=all wait) and frees its slot at once; and a
//! connection with no complete request and nothing pending for `connections_max_idle_ms` is
//! closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use sediment_protocol::frame::{self, FrameStatus, HeaderError};
use sediment_protocol::out_frame::{FrameParts, OutFrame};
use sediment_protocol::versions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;
use tracing::field::Empty;

use crate::broker::Broker;
use crate::handlers::{self, Reply, RequestContext};
use crate::observe;

/// Requests of one connection whose responses may be pending at once.
const MAX_IN_FLIGHT: usize = 64;

/// Bytes of record data in a connection's responses that are ready but not yet written. One
/// response larger than this still goes out (alone).
const RESPONSE_BUDGET_BYTES: usize = 16 << 20;

/// Frames up to this size are read without asking the broker-wide request budget (the read
/// buffer holds that much anyway).
const SMALL_FRAME_BYTES: usize = 64 << 10;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accepts connections until shutdown, then waits for open connections to finish what they started.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    let mut shutdown = broker.shutdown_signal();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(%peer, max = broker.config.max_connections, "connection limit reached; closing new connection");
                sediment_telemetry::metrics().connection_rejected();
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let b = broker.clone();
        conns.spawn(async move {
            let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
            let _open = OpenConnection::new();
            if let Err(e) = handle_connection(b, stream, peer, id).await {
                tracing::debug!(%peer, conn = id, error = %e, "connection ended with error");
            }
            drop(permit);
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    tracing::info!(open = conns.len(), "listener closed; finishing in-flight requests");
    while conns.join_next().await.is_some() {}
}

/// Counts a connection in `sediment_connections_open` while it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> OpenConnection {
        sediment_telemetry::metrics().connection_opened();
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        sediment_telemetry::metrics().connection_closed();
    }
}

/// What the writer task receives for each request that gets a response.
struct Pending {
    correlation_id: i32,
    api_key: ApiKey,
    /// Version to encode the body with (ApiVersions errors are always encoded as v0).
    version: i16,
    reply: Reply,
    /// This response's share of the connection's response budget, returned once written.
    budget: Option<tokio::sync::OwnedSemaphorePermit>,
    /// When the complete frame was taken off the buffer (latency is measured from here).
    started: Instant,
    /// The request span (disabled unless tracing is on); closed once the response is written.
    span: tracing::Span,
    /// Produce acks (for `sediment_produce_latency_seconds`), 0 for other APIs.
    acks: i16,
}

/// Records a finished request: counter and latency by API, produce/fetch latency.
fn observe_done(api_key: ApiKey, acks: i16, started: Instant) {
    let elapsed = started.elapsed();
    if let Some(m) = observe::api_metrics(api_key) {
        m.record(elapsed);
    }
    match api_key {
        ApiKey::Produce => sediment_telemetry::metrics().produce_latency(acks, elapsed),
        ApiKey::Fetch => sediment_telemetry::metrics().fetch_latency(elapsed),
        _ => {}
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

async fn handle_connection(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr, id: u64) -> Result<(), ConnError> {
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let pending = Arc::new(AtomicUsize::new(0));
    let mut writer = tokio::spawn(write_loop(wr, rx, pending.clone()));
    let budget = Arc::new(Semaphore::new(RESPONSE_BUDGET_BYTES));
    let mut shutdown = broker.shutdown_signal();
    let (max, max_non_produce) = (broker.config.max_request_bytes, broker.config.max_non_produce_request_bytes);
    let idle = broker.config.connections_max_idle;
    let mut last_request = Instant::now();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // the broker-wide budget's share held for the large frame being read and processed
    let mut frame_permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let result: Result<End, ConnError> = async {
        loop {
            // Phase 1: is there a whole frame?
            match frame::check_frame_limits(&buf, max, max_non_produce) {
                Ok(FrameStatus::Complete { len }) => {
                    let mut body = buf.split_to(4 + len).freeze().slice(4..);
                    let started = Instant::now();
                    last_request = started;
                    let processed = process(&broker, &mut body, peer, started).await;
                    // processed: the request's bytes are copied or dropped, its share goes back
                    drop(body);
                    frame_permit = None;
                    let mut p = match processed? {
                        Some(p) => p,
                        None => continue,
                    };
                    if let Reply::Ready(body) = &p.reply {
                        // stop reading while this connection's ready responses are unwritten
                        let bytes = crate::observe::response_record_bytes(body).min(RESPONSE_BUDGET_BYTES);
                        if bytes > 0 {
                            let permit = tokio::select! {
                                p = budget.clone().acquire_many_owned(bytes as u32) => p.ok(),
                                _ = &mut writer => return Ok(End::WriterEnded),
                                _ = shutdown.wait_for(|s| *s) => return Ok(End::Finish),
                            };
                            p.budget = permit;
                        }
                    }
                    pending.fetch_add(1, Ordering::Relaxed);
                    if tx.send(p).await.is_err() {
                        return Ok(End::PeerGone); // writer gone: the peer closed
                    }
                }
                Ok(FrameStatus::Incomplete { needed }) => {
                    if needed > SMALL_FRAME_BYTES && frame_permit.is_none() {
                        let want = needed.min(broker.config.queued_max_request_bytes).min(u32::MAX as usize) as u32;
                        frame_permit = tokio::select! {
                            p = broker.request_budget.clone().acquire_many_owned(want) => p.ok(),
                            _ = shutdown.wait_for(|s| *s) => return Ok(End::Finish),
                        };
                    }
                    if buf.capacity() < needed {
                        buf.reserve(needed - buf.len());
                    }
                    let quiet = tokio::time::sleep_until((last_request + idle).into());
                    let n = tokio::select! {
                        r = rd.read_buf(&mut buf) => r?,
                        _ = shutdown.wait_for(|s| *s) => return Ok(End::Finish),
                        _ = quiet => {
                            if pending.load(Ordering::Relaxed) > 0 {
                                // a response is still on its way: not idle
                                last_request = Instant::now();
                                continue;
                            }
                            tracing::debug!(%peer, conn = id, idle_ms = idle.as_millis() as u64, "closing idle connection");
                            return Ok(End::Finish);
                        }
                    };
                    if n == 0 {
                        if !buf.is_empty() {
                            tracing::debug!(%peer, conn = id, bytes = buf.len(), "peer closed mid-frame");
                        }
                        return Ok(End::PeerGone);
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, conn = id, error = %e, "closing connection: bad frame");
                    return Err(ConnError::Protocol(e.to_string()));
                }
            }
        }
    }
    .await;
    drop(tx);
    match result {
        // Nobody will read the answers: cancel what they wait for (a long poll, an acks=all
        // commit; the appends themselves are done) and free the connection's slot now.
        Ok(End::PeerGone) | Err(_) => {
            writer.abort();
            let _ = writer.await;
        }
        // shutdown or idle: finish writing what was started
        Ok(End::Finish) => {
            let _ = writer.await;
        }
        Ok(End::WriterEnded) => {}
    }
    result.map(|_| ())
}

/// Why a connection's read loop ended.
enum End {
    /// EOF or a failed write: nobody reads the answers.
    PeerGone,
    /// The writer task already ended (the peer is gone); it must not be awaited again.
    WriterEnded,
    /// Shutdown or idle: pending answers are still written.
    Finish,
}

/// Phase 2: parse and dispatch one complete frame. `Ok(None)` means no response (acks=0);
/// `Err` closes the connection, which is what Kafka does for unknown keys, unsupported versions
/// (other than ApiVersions) and undecodable requests.
async fn process(broker: &Arc<Broker>, body: &mut Bytes, peer: SocketAddr, started: Instant) -> Result<Option<Pending>, ConnError> {
    let prefix = frame::peek_prefix(body).map_err(|e| {
        observe::refused(None, "INVALID_REQUEST");
        ConnError::Protocol(e.to_string())
    })?;
    let key = match ApiKey::try_from(prefix.api_key) {
        Ok(k) => k,
        Err(_) => {
            observe::refused(None, "INVALID_REQUEST");
            tracing::warn!(%peer, api_key = prefix.api_key, "closing connection: unknown api key");
            return Err(ConnError::Protocol(HeaderError::UnknownApiKey(prefix.api_key).to_string()));
        }
    };
    if !versions::is_served(key, prefix.api_version) {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer with v0 and UNSUPPORTED_VERSION so the client can retry lower.
            return Ok(Some(Pending {
                correlation_id: prefix.correlation_id,
                api_key: key,
                version: 0,
                reply: Reply::Ready(handlers::api_versions::unsupported()),
                budget: None,
                started,
                span: tracing::Span::none(),
                acks: 0,
            }));
        }
        observe::refused(Some(key), "UNSUPPORTED_VERSION");
        tracing::warn!(%peer, api = ?key, version = prefix.api_version, "closing connection: unsupported api or version");
        return Err(ConnError::Protocol(format!("unsupported {key:?} v{}", prefix.api_version)));
    }
    let (key, header) = frame::parse_request_header(body).map_err(|e| {
        observe::refused(Some(key), "INVALID_REQUEST");
        tracing::warn!(%peer, error = %e, "closing connection: bad request header");
        ConnError::Protocol(e.to_string())
    })?;
    let version = header.request_api_version;
    let request = RequestKind::decode(key, body, version).map_err(|e| {
        observe::refused(Some(key), "INVALID_REQUEST");
        tracing::warn!(%peer, api = ?key, version, error = %e, "closing connection: undecodable request");
        ConnError::Protocol(format!("undecodable {key:?} v{version}: {e}"))
    })?;
    let ctx = RequestContext {
        api_key: key,
        api_version: version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.as_ref().map(|s| s.to_string()),
        peer,
    };
    let acks = match &request {
        RequestKind::Produce(r) => r.acks,
        _ => 0,
    };
    // One span per request (target sediment::request). Without OTLP export no layer enables it
    // and it costs a cached callsite check; with export, requests the sampler leaves out get no
    // span at all. The fields below are computed only for a live span.
    let api = observe::api_name(key);
    let span = if !sediment_telemetry::sample_request() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
        target: sediment_telemetry::REQUEST_TARGET,
        "kafka.request",
        otel.name = api,
        otel.kind = "server",
        otel.status_code = Empty,
        messaging.system = "kafka",
        kafka.api = api,
        kafka.api_key = prefix.api_key,
        kafka.api_version = version,
        kafka.correlation_id = ctx.correlation_id,
        kafka.client_id = ctx.client_id.as_deref().unwrap_or(""),
        client.address = %peer,
        messaging.destination.name = Empty,
        kafka.partition_count = Empty,
        kafka.bytes = Empty,
        kafka.acks = Empty,
        kafka.error_code = Empty,
        )
    };
    if !span.is_disabled() {
        let s = observe::summarize(&request);
        if !s.topics.is_empty() {
            span.record("messaging.destination.name", s.topics.as_str());
        }
        span.record("kafka.partition_count", s.partitions as i64);
        if key == ApiKey::Produce {
            span.record("kafka.bytes", s.bytes as i64);
            span.record("kafka.acks", acks);
        }
    }
    let reply = handlers::dispatch(broker, &ctx, request).instrument(span.clone()).await;
    if matches!(reply, Reply::None) {
        // acks=0: no response; the request is done once appended.
        span.record("kafka.error_code", 0);
        observe_done(key, acks, started);
        return Ok(None);
    }
    Ok(Some(Pending { correlation_id: ctx.correlation_id, api_key: key, version, reply, budget: None, started, span, acks }))
}

async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Pending>, pending: Arc<AtomicUsize>) {
    while let Some(p) = rx.recv().await {
        // counted as pending until this iteration ends, written or not
        let _done = DecrementOnDrop(&pending);
        let body = match p.reply {
            Reply::Ready(r) => r,
            Reply::Later(f) => f.instrument(p.span.clone()).await,
            Reply::None => continue,
        };
        let error_code = observe::record_errors(observe::api_name(p.api_key), &body);
        if !p.span.is_disabled() {
            p.span.record("kafka.error_code", error_code);
            if error_code != 0 {
                p.span.record("otel.status_code", "ERROR");
            }
            if p.api_key == ApiKey::Fetch {
                p.span.record("kafka.bytes", observe::response_record_bytes(&body) as i64);
            }
        }
        let frame = match encode_response(p.correlation_id, p.api_key, p.version, &body) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(api = ?p.api_key, version = p.version, error = %e, "cannot encode response; closing connection");
                return;
            }
        };
        let mut frame = frame;
        if let Err(e) = wr.write_all_buf(&mut frame).await {
            tracing::debug!(error = %e, "write failed");
            return;
        }
        observe_done(p.api_key, p.acks, p.started);
    }
    let _ = wr.shutdown().await;
}

struct DecrementOnDrop<'a>(&'a AtomicUsize);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Size prefix, response header (version per API and request version), body. A Fetch
/// response's record sets are referenced, not copied (see [`OutFrame`]).
pub fn encode_response(correlation_id: i32, key: ApiKey, version: i16, body: &ResponseKind) -> anyhow_free::Result<FrameParts> {
    let header_version = if key == ApiKey::ApiVersions { 0 } else { key.response_header_version(version) };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    if let ResponseKind::Fetch(r) = body {
        let known = r.responses.iter().flat_map(|t| t.partitions.iter().filter_map(|p| p.records.clone())).collect();
        let mut buf = OutFrame::new(known);
        header.encode(&mut buf, header_version).map_err(|e| e.to_string())?;
        r.encode(&mut buf, version).map_err(|e| e.to_string())?;
        return Ok(buf.finish());
    }
    let mut buf = BytesMut::with_capacity(256);
    header.encode(&mut buf, header_version).map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    Ok(FrameParts::whole(buf.freeze()))
}

/// String errors for encoding, to keep `anyhow` out of the broker's public types.
pub mod anyhow_free {
    pub type Result<T> = std::result::Result<T, String>;
}

//! The producer: per-partition batching, record batch v2 encoding, bounded
//! in-flight requests and per-record delivery reports.
//!
//! ```text
//!  Producer::send ──► command queue ──► accumulator task ──► node sender task (one per leader)
//!                                        per-partition          │ waits for one of max_in_flight permits,
//!                                        batches (size/linger)  │ merges queued batches of a partition,
//!                                                               ▼ one batch per partition per request
//!                                                    request task: encode (RecordBatchEncoder,
//!                                                    compression), Produce, retry on leader
//!                                                    change, report deliveries
//! ```
//!
//! Records are moved, never copied, until the request task encodes them, and
//! encoding runs on the request tasks so several batches compress in
//! parallel. Delivery is reported per record through a [`DeliveryFuture`]
//! ([`Producer::send`]) or, without any per-record allocation, through a
//! per-batch [`BatchCallback`] that receives the `u64` token given to
//! [`Producer::send_tracked`] for each record (the load generator passes the
//! send time and measures latency from it).
//!
//! Delivery is at least once: a request that times out or whose connection
//! fails is retried until `delivery_timeout`, and may then be written twice.
//! Duplicate header keys within one record are merged (a limitation of
//! `kafka_protocol::records::Record`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::{ApiKey, ProduceRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::conn::{Client, TopicInfo, Turn};
use crate::error::{Error, Result};
use crate::idempotence::{self, Idempotence, Sequenced};
use crate::partitioner::{Keyless, Partitioner};

/// Size of a record batch v2 header.
const BATCH_HEADER_BYTES: usize = 61;
/// Upper bound of a record's framing (length, attributes, deltas, key/value/header lengths).
const RECORD_OVERHEAD_BYTES: usize = 24;
/// Commands the accumulator handles before checking its linger timer again.
const COMMANDS_PER_TURN: usize = 256;

/// How many replicas must acknowledge a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// No acknowledgement (`acks=0`): the broker sends no response.
    None,
    /// The leader has written the records (`acks=1`).
    Leader,
    /// The write is committed (`acks=all`, `-1`).
    #[default]
    All,
}

impl Acks {
    /// The wire value.
    pub fn as_i16(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "-1" | "all" => Ok(Acks::All),
            _ => Err(format!("invalid acks \"{s}\" (expected 0, 1, -1 or all)")),
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

/// Compression codec of produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Codec {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing, like the Java client).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// The codec as `kafka_protocol` names it.
    pub fn compression(self) -> Compression {
        match self {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        })
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Acknowledgements required.
    pub acks: Acks,
    /// Batch compression.
    pub compression: Codec,
    /// A partition's batch is sent once it holds about this many bytes.
    pub batch_size: usize,
    /// ...or once its first record has waited this long.
    pub linger: Duration,
    /// Produce requests in flight per broker connection.
    pub max_in_flight: usize,
    /// Soft cap on the records bytes of one Produce request.
    pub max_request_bytes: usize,
    /// Broker-side timeout of a Produce request (`timeout_ms`).
    pub request_timeout: Duration,
    /// Give up retrying a batch this long after it was sealed.
    pub delivery_timeout: Duration,
    /// Pause between retries.
    pub retry_backoff: Duration,
    /// Records queued between [`Producer`] and its accumulator task.
    pub queue_records: usize,
    /// How records with neither key nor partition are spread.
    pub keyless: Keyless,
    /// Idempotent producer (`enable.idempotence`): batches carry a producer id and sequence
    /// numbers so that retries are never written twice and never reordered. As with Kafka's
    /// clients this implies `acks=all` and at most 5 requests in flight (both are enforced).
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            compression: Codec::None,
            batch_size: 256 * 1024,
            linger: Duration::from_millis(5),
            max_in_flight: 5,
            max_request_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            queue_records: 4 * 1024,
            keyless: Keyless::Sticky,
            idempotent: false,
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone)]
pub struct ProducerRecord {
    /// Topic name (`StrBytes` so cloning it per record is a reference count).
    pub topic: StrBytes,
    /// Explicit partition; otherwise chosen from the key, else round-robin.
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<(StrBytes, Option<Bytes>)>,
    /// Creation timestamp in ms since the epoch; now if `None`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with only a topic and a value.
    pub fn new(topic: impl Into<StrBytes>, value: impl Into<Bytes>) -> Self {
        ProducerRecord { topic: topic.into(), partition: None, key: None, value: Some(value.into()), headers: Vec::new(), timestamp: None }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets an explicit partition.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<StrBytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    fn estimated_size(&self) -> usize {
        RECORD_OVERHEAD_BYTES
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 10).sum::<usize>()
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Partition.
    pub partition: i32,
    /// Offset; -1 when produced with acks=0.
    pub offset: i64,
}

/// The outcome of one batch, passed to a [`BatchCallback`].
#[derive(Debug)]
pub struct BatchDelivery<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition (-1 if the record failed before a partition was chosen).
    pub partition: i32,
    /// Base offset of the batch (-1 with acks=0) or the error that failed it.
    pub result: std::result::Result<i64, &'a Error>,
    /// The tokens of the batch's records in offset order (0 for records sent
    /// with [`Producer::send`]).
    pub tokens: &'a [u64],
}

/// Called once per completed batch, from the task that completed it. Keep it short.
pub type BatchCallback = Arc<dyn Fn(&BatchDelivery<'_>) + Send + Sync>;

/// Resolves when a record sent with [`Producer::send`] is acknowledged or has failed.
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<Result<Delivery>>);

impl Future for DeliveryFuture {
    type Output = Result<Delivery>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(Error::ProducerClosed)))
    }
}

enum Command {
    Record(ProducerRecord, Completion),
    Flush(oneshot::Sender<()>),
}

enum Completion {
    Token(u64),
    Waiter(oneshot::Sender<Result<Delivery>>),
}

type Waiter = (u32, oneshot::Sender<Result<Delivery>>);

/// Records not yet completed, so `flush` can wait for zero.
struct Outstanding {
    records: AtomicUsize,
    notify: Notify,
}

impl Outstanding {
    fn add(&self, n: usize) {
        self.records.fetch_add(n, Ordering::AcqRel);
    }

    fn sub(&self, n: usize) {
        if self.records.fetch_sub(n, Ordering::AcqRel) == n {
            self.notify.notify_waiters();
        }
    }

    async fn wait_zero(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.records.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct Shared {
    client: Arc<Client>,
    config: ProducerConfig,
    callback: Option<BatchCallback>,
    outstanding: Outstanding,
    /// Encode buffers of acknowledged batches, reused so large batches do not
    /// fault in fresh pages every time.
    pool: std::sync::Mutex<Vec<BytesMut>>,
    /// Producer id and sequences, for an idempotent producer.
    idempotence: Option<Idempotence>,
}

impl Shared {
    fn take_buffer(&self, capacity: usize) -> BytesMut {
        let pooled = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut buf = pooled.unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    fn recycle(&self, bytes: Bytes) {
        let Ok(buf) = bytes.try_into_mut() else { return };
        if buf.capacity() > 4 * self.config.batch_size.max(64 * 1024) {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < 2 * self.config.max_in_flight + 4 {
            pool.push(buf);
        }
    }
}

/// A sealed batch on its way to a broker.
struct Batch {
    topic: StrBytes,
    partition: i32,
    records: Vec<Record>,
    tokens: Vec<u64>,
    waiters: Vec<Waiter>,
    bytes: usize,
    sealed: Instant,
    /// Producer id, epoch and base sequence (idempotent producer), given when the batch is
    /// put into a request and kept across its retries.
    sequenced: Option<Sequenced>,
}

impl Batch {
    fn same_partition(&self, other: &Batch) -> bool {
        self.partition == other.partition && self.topic == other.topic
    }

    /// Appends `other` (a later batch of the same partition).
    fn merge(&mut self, mut other: Batch) {
        let shift = u32::try_from(self.tokens.len()).unwrap_or(u32::MAX);
        self.records.append(&mut other.records);
        self.tokens.append(&mut other.tokens);
        self.waiters.extend(other.waiters.into_iter().map(|(i, w)| (i.saturating_add(shift), w)));
        self.bytes += other.bytes;
    }
}

/// Completes every record of `batch` with `result` (the base offset or an error).
fn complete(shared: &Shared, batch: Batch, result: Result<i64>) {
    if let (Some(idem), Some(seq)) = (&shared.idempotence, batch.sequenced) {
        idem.resolved(&batch.topic, batch.partition, seq, result.is_ok());
    }
    complete_with(shared.callback.as_ref(), &shared.outstanding, batch, result);
}

fn complete_with(callback: Option<&BatchCallback>, outstanding: &Outstanding, batch: Batch, result: Result<i64>) {
    if let Some(cb) = callback {
        cb(&BatchDelivery { topic: &batch.topic, partition: batch.partition, result: result.as_ref().map(|o| *o), tokens: &batch.tokens });
    }
    for (i, w) in batch.waiters {
        let r = match &result {
            Ok(base) if *base >= 0 => Ok(Delivery { partition: batch.partition, offset: base + i64::from(i) }),
            Ok(_) => Ok(Delivery { partition: batch.partition, offset: -1 }),
            Err(e) => Err(e.clone()),
        };
        let _ = w.send(r);
    }
    outstanding.sub(batch.tokens.len());
}

/// A producer. Create it inside a Tokio runtime; [`close`](Producer::close) it
/// to deliver what is still buffered.
pub struct Producer {
    tx: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer writing through `client`.
    pub fn new(client: Arc<Client>, config: ProducerConfig) -> Producer {
        Self::build(client, config, None)
    }

    /// A producer that also reports every completed batch to `callback`.
    pub fn with_callback(client: Arc<Client>, config: ProducerConfig, callback: BatchCallback) -> Producer {
        Self::build(client, config, Some(callback))
    }

    fn build(client: Arc<Client>, mut config: ProducerConfig, callback: Option<BatchCallback>) -> Producer {
        config.batch_size = config.batch_size.max(1);
        config.max_in_flight = config.max_in_flight.max(1);
        config.max_request_bytes = config.max_request_bytes.max(config.batch_size);
        if config.idempotent {
            config.acks = Acks::All;
            // the broker recognises retries among the last five batches of a partition
            config.max_in_flight = config.max_in_flight.min(idempotence::WINDOW);
        }
        let (tx, rx) = mpsc::channel(config.queue_records.max(1));
        let idempotence = config.idempotent.then(Idempotence::new);
        let shared = Arc::new(Shared {
            client,
            config,
            callback,
            outstanding: Outstanding { records: AtomicUsize::new(0), notify: Notify::new() },
            pool: std::sync::Mutex::new(Vec::new()),
            idempotence,
        });
        let acc = Accumulator {
            shared,
            topics: HashMap::new(),
            senders: HashMap::new(),
            ready: Vec::new(),
            next_deadline: None,
            now: Instant::now(),
            now_ms: 0,
            seed: sticky_seed(),
        };
        let task = tokio::spawn(acc.run(rx));
        Producer { tx, task }
    }

    /// Queues `record`; the returned future resolves with its delivery.
    /// Waits while the producer's queue is full.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Record(record, Completion::Waiter(tx))).await.map_err(|_| Error::ProducerClosed)?;
        Ok(DeliveryFuture(rx))
    }

    /// Queues `record`; its delivery is reported to the batch callback with
    /// `token`. Allocates nothing per record.
    pub async fn send_tracked(&self, record: ProducerRecord, token: u64) -> Result<()> {
        self.tx.send(Command::Record(record, Completion::Token(token))).await.map_err(|_| Error::ProducerClosed)
    }

    /// Sends everything buffered and waits until every record queued before
    /// this call has been acknowledged or has failed.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Flush(tx)).await.map_err(|_| Error::ProducerClosed)?;
        rx.await.map_err(|_| Error::ProducerClosed)
    }

    /// Flushes and stops the producer.
    pub async fn close(self) -> Result<()> {
        drop(self.tx);
        self.task.await.map_err(|e| Error::Invalid(format!("producer task failed: {e}")))
    }
}

/// The batches of one partition being filled.
#[derive(Default)]
struct PartBuf {
    records: Vec<Record>,
    tokens: Vec<u64>,
    waiters: Vec<Waiter>,
    bytes: usize,
    deadline: Option<Instant>,
}

struct TopicAcc {
    name: StrBytes,
    info: Arc<TopicInfo>,
    parts: Vec<PartBuf>,
    partitioner: Partitioner,
}

impl TopicAcc {
    /// Seals partition `p`'s batch into `ready`.
    fn seal(&mut self, p: usize, ready: &mut Vec<Batch>, outstanding: &Outstanding) {
        let Some(buf) = self.parts.get_mut(p) else { return };
        if buf.records.is_empty() {
            return;
        }
        let n = buf.records.len();
        let batch = Batch {
            topic: self.name.clone(),
            // `p` indexes `parts`, which has at most `num_partitions()` (an i32) entries.
            partition: i32::try_from(p).unwrap_or(i32::MAX),
            records: std::mem::replace(&mut buf.records, Vec::with_capacity(n)),
            tokens: std::mem::replace(&mut buf.tokens, Vec::with_capacity(n)),
            waiters: std::mem::take(&mut buf.waiters),
            bytes: std::mem::take(&mut buf.bytes),
            sealed: Instant::now(),
            sequenced: None,
        };
        buf.deadline = None;
        outstanding.add(n);
        self.partitioner.batch_sealed(batch.partition, self.info.num_partitions());
        ready.push(batch);
    }
}

struct Accumulator {
    shared: Arc<Shared>,
    topics: HashMap<StrBytes, TopicAcc>,
    senders: HashMap<i32, mpsc::Sender<Batch>>,
    ready: Vec<Batch>,
    next_deadline: Option<Instant>,
    now: Instant,
    now_ms: i64,
    seed: u32,
}

fn wall_clock_ms() -> i64 {
    #[allow(clippy::disallowed_methods)] // the client library stamps records with the host's clock
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

impl Accumulator {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            if self.next_deadline != armed {
                if let Some(d) = self.next_deadline {
                    sleep.as_mut().reset(d.into());
                }
                armed = self.next_deadline;
            }
            tokio::select! {
                biased;
                () = &mut sleep, if armed.is_some() => self.seal_expired().await,
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.tick();
                    self.handle(cmd).await;
                    for _ in 0..COMMANDS_PER_TURN {
                        match rx.try_recv() {
                            Ok(cmd) => self.handle(cmd).await,
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        self.flush_all().await;
    }

    fn tick(&mut self) {
        self.now = Instant::now();
        self.now_ms = wall_clock_ms();
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Record(rec, completion) => self.append(rec, completion).await,
            Command::Flush(done) => {
                self.flush_all().await;
                let _ = done.send(());
            }
        }
    }

    async fn append(&mut self, rec: ProducerRecord, completion: Completion) {
        if !self.topics.contains_key(&rec.topic) {
            match self.shared.client.topic(&rec.topic).await {
                Ok(info) if info.num_partitions() > 0 => {
                    let start = self.seed.wrapping_add(u32::try_from(self.topics.len()).unwrap_or(0));
                    let parts = (0..info.partitions.len()).map(|_| PartBuf::default()).collect();
                    self.topics.insert(
                        rec.topic.clone(),
                        TopicAcc { name: rec.topic.clone(), info, parts, partitioner: Partitioner::new(self.shared.config.keyless, start) },
                    );
                }
                Ok(_) => {
                    let e = Error::Invalid(format!("topic \"{}\" has no partitions", &*rec.topic));
                    return self.fail_record(&rec, completion, e);
                }
                Err(e) => return self.fail_record(&rec, completion, e),
            }
        }
        let config = &self.shared.config;
        let Some(acc) = self.topics.get_mut(&rec.topic) else { return };
        let n = acc.info.num_partitions();
        let mut p = acc.partitioner.partition(rec.partition, rec.key.as_deref(), n);
        if !(0..n).contains(&p) {
            let e = Error::UnknownPartition { topic: rec.topic.to_string(), partition: p };
            return self.fail_record(&rec, completion, e);
        }
        let size = rec.estimated_size();
        // `0 <= p < n`, and `parts` has `n` entries.
        let fits = |acc: &TopicAcc, p: i32| acc.parts.get(p as usize).is_some_and(|b| b.records.is_empty() || b.bytes + size <= config.batch_size);
        if !fits(acc, p) {
            acc.seal(p as usize, &mut self.ready, &self.shared.outstanding);
            if rec.partition.is_none() && rec.key.is_none() {
                // A sticky partitioner moved on; its new partition may be full too.
                p = acc.partitioner.partition(None, None, n);
                if !fits(acc, p) {
                    acc.seal(p as usize, &mut self.ready, &self.shared.outstanding);
                }
            }
        }
        let Some(buf) = acc.parts.get_mut(p as usize) else { return };
        let index = u32::try_from(buf.records.len()).unwrap_or(u32::MAX);
        let token = match completion {
            Completion::Token(t) => t,
            Completion::Waiter(w) => {
                buf.waiters.push((index, w));
                0
            }
        };
        buf.tokens.push(token);
        let mut headers = IndexMap::new();
        for (k, v) in rec.headers {
            headers.insert(k, v);
        }
        buf.records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            // Offsets and sequences are assigned when the batch is encoded.
            offset: 0,
            sequence: 0,
            timestamp: rec.timestamp.unwrap_or(self.now_ms),
            key: rec.key,
            value: rec.value,
            headers,
        });
        buf.bytes += size;
        if buf.deadline.is_none() {
            let d = self.now + config.linger;
            buf.deadline = Some(d);
            self.next_deadline = Some(self.next_deadline.map_or(d, |nd| nd.min(d)));
        }
        if buf.bytes >= config.batch_size {
            acc.seal(p as usize, &mut self.ready, &self.shared.outstanding);
        }
        self.dispatch_ready().await;
    }

    fn fail_record(&mut self, rec: &ProducerRecord, completion: Completion, err: Error) {
        let (tokens, waiters) = match completion {
            Completion::Token(t) => (vec![t], Vec::new()),
            Completion::Waiter(w) => (vec![0], vec![(0, w)]),
        };
        self.shared.outstanding.add(1);
        let batch = Batch {
            topic: rec.topic.clone(),
            partition: rec.partition.unwrap_or(-1),
            records: Vec::new(),
            tokens,
            waiters,
            bytes: 0,
            sealed: self.now,
            sequenced: None,
        };
        complete(&self.shared, batch, Err(err));
    }

    async fn seal_expired(&mut self) {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for acc in self.topics.values_mut() {
            for p in 0..acc.parts.len() {
                match acc.parts[p].deadline {
                    Some(d) if d <= now => acc.seal(p, &mut self.ready, &self.shared.outstanding),
                    Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
                    None => {}
                }
            }
        }
        self.next_deadline = next;
        self.dispatch_ready().await;
    }

    async fn flush_all(&mut self) {
        for acc in self.topics.values_mut() {
            for p in 0..acc.parts.len() {
                acc.seal(p, &mut self.ready, &self.shared.outstanding);
            }
        }
        self.next_deadline = None;
        self.dispatch_ready().await;
        self.shared.outstanding.wait_zero().await;
    }

    /// Hands sealed batches to the sender task of their partition's leader.
    async fn dispatch_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let mut ready = std::mem::take(&mut self.ready);
        for batch in ready.drain(..) {
            let leader = self.shared.client.cached_topic(&batch.topic).and_then(|t| t.leader(batch.partition)).unwrap_or(-1);
            let shared = &self.shared;
            // An idempotent producer gives sequences and orders its requests in one sender, so
            // that a partition's batches cannot overtake each other when its leader changes.
            let leader = if shared.idempotence.is_some() { 0 } else { leader };
            let tx = self.senders.entry(leader).or_insert_with(|| spawn_node_sender(shared.clone()));
            if let Err(mpsc::error::SendError(batch)) = tx.send(batch).await {
                complete(&self.shared, batch, Err(Error::ProducerClosed));
            }
        }
        self.ready = ready;
    }
}

fn spawn_node_sender(shared: Arc<Shared>) -> mpsc::Sender<Batch> {
    let (tx, rx) = mpsc::channel(shared.config.max_in_flight * 2 + 8);
    tokio::spawn(node_sender(shared, rx));
    tx
}

/// Sends the batches queued for one broker, at most `max_in_flight` requests at a time.
async fn node_sender(shared: Arc<Shared>, mut rx: mpsc::Receiver<Batch>) {
    let config = &shared.config;
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    // Idempotent requests reach the socket in the order their sequences were given.
    let mut last_turn = None;
    let mut held: Vec<Batch> = Vec::new();
    let mut held_bytes = 0usize;
    loop {
        if held.is_empty() {
            match rx.recv().await {
                Some(b) => {
                    held_bytes += b.bytes;
                    hold(&mut held, b, config.batch_size);
                }
                None => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        // Batches that queued up while we waited join this request (or merge
        // into a held batch of their partition while it stays under batch_size).
        while held_bytes < 2 * config.max_request_bytes {
            match rx.try_recv() {
                Ok(b) => {
                    held_bytes += b.bytes;
                    hold(&mut held, b, config.batch_size);
                }
                Err(_) => break,
            }
        }
        // One batch per partition per request (Produce v3+ allows only one). An idempotent
        // producer also holds back a partition whose window of unresolved batches is full.
        let idem = shared.idempotence.as_ref();
        let resolved = idem.map(|i| i.resolved.notified());
        let mut request: Vec<Batch> = Vec::new();
        let mut keep: Vec<Batch> = Vec::new();
        let mut bytes = 0usize;
        for b in held.drain(..) {
            // A partition held back once stays held back in this pass: its window can open
            // while we look (a concurrent acknowledgement), and a later batch must not go first.
            if bytes < config.max_request_bytes
                && !request.iter().any(|r| r.same_partition(&b))
                && !keep.iter().any(|k| k.same_partition(&b))
                && !idem.is_some_and(|i| i.window_full(&b.topic, b.partition))
            {
                bytes += b.bytes;
                request.push(b);
            } else {
                keep.push(b);
            }
        }
        held = keep;
        held_bytes -= bytes;
        if request.is_empty() {
            // Every held partition waits for its window; new batches merge meanwhile.
            drop(permit);
            if let Some(resolved) = resolved {
                let _ = tokio::time::timeout(Duration::from_millis(100), resolved).await;
            }
            continue;
        }
        let turn = match &shared.idempotence {
            Some(idem) => match sequence(&shared, idem, &mut request).await {
                Ok(()) => Some(Turn::next(&mut last_turn)),
                Err(e) => {
                    for b in request {
                        complete(&shared, b, Err(e.clone()));
                    }
                    continue;
                }
            },
            None => None,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            send_batches(&shared, request, turn).await;
            drop(permit);
        });
    }
    for b in held {
        complete(&shared, b, Err(Error::ProducerClosed));
    }
    // Wait for the requests still in flight before the task ends.
    let _ = permits.acquire_many(u32::try_from(config.max_in_flight).unwrap_or(u32::MAX)).await;
}

/// Gives each batch of an idempotent request its producer id and sequences.
async fn sequence(shared: &Shared, idem: &Idempotence, request: &mut [Batch]) -> Result<()> {
    let deadline = request.iter().map(|b| b.sealed).min().unwrap_or_else(Instant::now) + shared.config.delivery_timeout;
    'again: loop {
        let producer = idem.producer(&shared.client, deadline).await?;
        for b in request.iter_mut() {
            match idem.assign(producer, &b.topic, b.partition, b.tokens.len()) {
                Some(seq) => b.sequenced = Some(seq),
                // A batch failed for good meanwhile: the producer id changes; start over.
                None => continue 'again,
            }
        }
        return Ok(());
    }
}

fn hold(held: &mut Vec<Batch>, b: Batch, batch_size: usize) {
    if let Some(prev) = held.iter_mut().rev().find(|h| h.same_partition(&b))
        && prev.bytes + b.bytes <= batch_size
    {
        prev.merge(b);
        return;
    }
    held.push(b);
}

/// Encodes `records` as one record batch v2 into `buf` (cleared first).
pub(crate) fn encode_batch_into(records: &mut [Record], codec: Codec, sequenced: Option<Sequenced>, mut buf: BytesMut) -> Result<Bytes> {
    buf.clear();
    for (i, r) in records.iter_mut().enumerate() {
        let i = i32::try_from(i).map_err(|_| Error::Invalid("too many records in one batch".into()))?;
        r.offset = i64::from(i);
        match sequenced {
            Some(seq) => {
                r.producer_id = seq.producer_id;
                r.producer_epoch = seq.epoch;
                // The header takes the first record's sequence; the encoder checks the rest
                // follow it with wrapping arithmetic (the broker wraps at i32::MAX to 0).
                r.sequence = seq.base_sequence.wrapping_add(i);
            }
            // Offsets are deltas from 0; sequence = offset - 1 gives a base
            // sequence of -1 (no idempotence) and one batch for all records.
            None => r.sequence = i.wrapping_sub(1),
        }
    }
    let options = RecordEncodeOptions { version: 2, compression: codec.compression() };
    let encoded = if codec == Codec::Lz4 {
        RecordBatchEncoder::encode_with_custom_compression(&mut buf, records.iter(), &options, Some(lz4_fast))
    } else {
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
    };
    encoded.map_err(|e| Error::Invalid(format!("cannot encode record batch: {e}")))?;
    Ok(buf.freeze())
}

/// LZ4 frame with independent 64 KiB blocks at the fast level, as librdkafka
/// writes it. (`kafka_protocol` uses level 4, which is LZ4 HC and several
/// times slower.) Kafka's reader requires independent blocks.
fn lz4_fast(records: &mut BytesMut, out: &mut BytesMut, _: Compression) -> anyhow::Result<()> {
    use std::io::Write;
    let mut encoder = lz4::EncoderBuilder::new().level(0).block_mode(lz4::BlockMode::Independent).build(out.writer())?;
    encoder.write_all(records)?;
    let (_, result) = encoder.finish();
    result?;
    Ok(())
}

/// The seed of the sticky partitioner's choices: the client library does not depend on the
/// broker's crates (`sediment_log::random`), and which partition a keyless batch sticks to need
/// not be reproducible.
#[allow(clippy::disallowed_methods)]
fn sticky_seed() -> u32 {
    rand::random()
}

/// Encodes `records` as one record batch v2.
#[cfg(test)]
pub(crate) fn encode_batch(records: &mut [Record], codec: Codec, estimated: usize) -> Result<Bytes> {
    encode_batch_into(records, codec, None, BytesMut::with_capacity(BATCH_HEADER_BYTES + estimated + 64))
}

/// One topic of a Produce request: partition index and its record batch.
pub(crate) struct ProduceTopic<'a> {
    pub name: &'a StrBytes,
    pub id: uuid::Uuid,
    pub partitions: Vec<(i32, &'a Bytes)>,
}

/// Writes small fields into a scratch buffer and large record sets by reference.
struct Parts {
    parts: Vec<Bytes>,
    cur: BytesMut,
}

impl Parts {
    fn reference(&mut self, b: &Bytes) {
        if !self.cur.is_empty() {
            self.parts.push(self.cur.split().freeze());
        }
        self.parts.push(b.clone());
    }

    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.cur.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.cur.put_u8(v as u8);
    }

    fn len_prefix(&mut self, len: usize, flexible: bool, what: &str) -> Result<()> {
        let n = i32::try_from(len).map_err(|_| Error::Invalid(format!("{what} too large ({len})")))?;
        if flexible {
            // `n <= i32::MAX`, so `n + 1` fits a u32.
            self.uvarint(n as u32 + 1);
        } else {
            self.cur.put_i32(n);
        }
        Ok(())
    }
}

/// Encodes a Produce request body (no transactional id) as buffers to write
/// in order; the record batches are referenced, not copied. Byte-for-byte the
/// same as `ProduceRequest::encode` (see the tests).
pub(crate) fn encode_produce_body(version: i16, acks: i16, timeout_ms: i32, topics: &[ProduceTopic<'_>]) -> Result<Vec<Bytes>> {
    if !(3..=13).contains(&version) {
        return Err(Error::Invalid(format!("cannot encode Produce v{version}")));
    }
    let flexible = version >= 9;
    let mut w = Parts { parts: Vec::with_capacity(2 * topics.len() + 2), cur: BytesMut::with_capacity(64) };
    // Transactional id: null.
    if flexible {
        w.uvarint(0);
    } else {
        w.cur.put_i16(-1);
    }
    w.cur.put_i16(acks);
    w.cur.put_i32(timeout_ms);
    w.len_prefix(topics.len(), flexible, "topic count")?;
    for t in topics {
        if version >= 13 {
            w.cur.put_slice(t.id.as_bytes());
        } else if flexible {
            w.len_prefix(t.name.len(), true, "topic name")?;
            w.cur.put_slice(t.name.as_bytes());
        } else {
            let n = i16::try_from(t.name.len()).map_err(|_| Error::Invalid(format!("topic name too long ({})", t.name.len())))?;
            w.cur.put_i16(n);
            w.cur.put_slice(t.name.as_bytes());
        }
        w.len_prefix(t.partitions.len(), flexible, "partition count")?;
        for (index, records) in &t.partitions {
            w.cur.put_i32(*index);
            w.len_prefix(records.len(), flexible, "record batch")?;
            w.reference(records);
            if flexible {
                w.uvarint(0); // partition tagged fields
            }
        }
        if flexible {
            w.uvarint(0); // topic tagged fields
        }
    }
    if flexible {
        w.uvarint(0); // request tagged fields
    }
    if !w.cur.is_empty() {
        let rest = w.cur.split().freeze();
        w.parts.push(rest);
    }
    Ok(w.parts)
}

/// An encoded batch waiting for (another) attempt.
struct Encoded {
    batch: Batch,
    records: Bytes,
    last_error: Option<Error>,
    /// Idempotent: an earlier batch of the partition was unresolved when this attempt was
    /// sent, so an OUT_OF_ORDER_SEQUENCE_NUMBER answer only means that one had not landed yet.
    behind: bool,
}

/// Encodes, sends and retries one request's worth of batches, then reports them.
async fn send_batches(shared: &Shared, batches: Vec<Batch>, mut turn: Option<Turn>) {
    let config = &shared.config;
    let mut pending: Vec<Encoded> = Vec::with_capacity(batches.len());
    for mut batch in batches {
        let buf = shared.take_buffer(BATCH_HEADER_BYTES + batch.bytes + 64);
        match encode_batch_into(&mut batch.records, config.compression, batch.sequenced, buf) {
            Ok(records) => {
                batch.records = Vec::new();
                pending.push(Encoded { batch, records, last_error: None, behind: false });
            }
            Err(e) => complete(shared, batch, Err(e)),
        }
    }
    let mut backoff = config.retry_backoff;
    while !pending.is_empty() {
        // Group by the partition's current leader.
        let mut groups: HashMap<i32, Vec<Encoded>> = HashMap::new();
        for e in pending.drain(..) {
            let leader = match shared.client.cached_topic(&e.batch.topic) {
                Some(t) => t.leader(e.batch.partition).unwrap_or(-1),
                None => -1,
            };
            groups.entry(leader).or_default().push(e);
        }
        let results = futures::future::join_all(
            // Only the first attempt keeps its place in the order of requests; retries are
            // sorted out by the broker's sequence checks.
            groups.into_iter().map(|(leader, group)| send_group(shared, leader, group, turn.take())),
        )
        .await;
        // Created before the answers are looked at, so a batch resolved meanwhile wakes us.
        let resolved = shared.idempotence.as_ref().map(|i| i.resolved.notified());
        let mut refresh: Vec<StrBytes> = Vec::new();
        let mut only_behind = true;
        for retry in results.into_iter().flatten() {
            let expired = retry.batch.sealed.elapsed() >= config.delivery_timeout;
            if expired {
                let err = retry.last_error.clone().unwrap_or(Error::ProducerClosed);
                complete(shared, retry.batch, Err(err));
                continue;
            }
            let behind = retry.last_error.as_ref().and_then(Error::code) == Some(ResponseError::OutOfOrderSequenceNumber);
            only_behind &= behind;
            if !behind && !refresh.contains(&retry.batch.topic) {
                refresh.push(retry.batch.topic.clone());
            }
            pending.push(retry);
        }
        if pending.is_empty() {
            break;
        }
        match resolved {
            // Idempotent batches waiting only for an earlier batch of their partition to land
            // go again as soon as one does, without growing the backoff.
            Some(resolved) if only_behind => {
                let _ = tokio::time::timeout(backoff, resolved).await;
            }
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        for topic in refresh {
            match shared.client.refresh_topic(&topic).await {
                Ok(_) => {}
                // The topic is gone: retrying cannot succeed.
                Err(e @ Error::UnknownTopic(_)) => {
                    let (gone, rest): (Vec<Encoded>, Vec<Encoded>) = pending.drain(..).partition(|p| p.batch.topic == topic);
                    pending = rest;
                    for g in gone {
                        complete(shared, g.batch, Err(e.clone()));
                    }
                }
                Err(e) => tracing::debug!(topic = %topic, error = %e, "metadata refresh failed"),
            }
        }
    }
}

/// Sends one Produce request to `leader`; returns the batches to retry.
async fn send_group(shared: &Shared, leader: i32, mut group: Vec<Encoded>, turn: Option<Turn>) -> Vec<Encoded> {
    let config = &shared.config;
    let retry_all = |mut group: Vec<Encoded>, err: Error| -> Vec<Encoded> {
        for e in &mut group {
            e.last_error = Some(err.clone());
        }
        group
    };
    if leader < 0 {
        let err = Error::broker("cannot produce: partition has no leader", ResponseError::LeaderNotAvailable.code(), None);
        return retry_all(group, err);
    }
    let conn = match shared.client.node_connection(leader).await {
        Ok(c) => c,
        Err(e) => return retry_all(group, e),
    };
    // Produce v13 names topics by id; stay at v12 unless every topic has one.
    let mut topic_ids: HashMap<StrBytes, uuid::Uuid> = HashMap::new();
    for e in &group {
        if !topic_ids.contains_key(&e.batch.topic) {
            let id = shared.client.cached_topic(&e.batch.topic).map(|t| t.id).unwrap_or_default();
            topic_ids.insert(e.batch.topic.clone(), id);
        }
    }
    let cap = topic_ids.values().any(|id| id.is_nil()).then_some(12);
    let version = match conn.version_capped(ApiKey::Produce, cap) {
        Ok(v) => v,
        Err(e) => {
            for e2 in group {
                complete(shared, e2.batch, Err(e.clone()));
            }
            return Vec::new();
        }
    };
    let timeout_ms = i32::try_from(config.request_timeout.as_millis()).unwrap_or(i32::MAX);
    let body = {
        let mut topics: Vec<ProduceTopic<'_>> = Vec::new();
        for e in &group {
            let part = (e.batch.partition, &e.records);
            match topics.iter_mut().find(|t| *t.name == e.batch.topic) {
                Some(t) => t.partitions.push(part),
                None => {
                    topics.push(ProduceTopic { name: &e.batch.topic, id: topic_ids.get(&e.batch.topic).copied().unwrap_or_default(), partitions: vec![part] })
                }
            }
        }
        encode_produce_body(version, config.acks.as_i16(), timeout_ms, &topics)
    };
    let body = match body {
        Ok(b) => b,
        Err(err) => {
            for e in group {
                complete(shared, e.batch, Err(err.clone()));
            }
            return Vec::new();
        }
    };

    if config.acks == Acks::None {
        let result = conn.send_body_parts::<ProduceRequest>(version, body, conn.request_timeout(), false, turn).await.map(|_| -1);
        for e in group {
            complete(shared, e.batch, result.clone());
        }
        return Vec::new();
    }

    let wait = config.request_timeout + Duration::from_secs(5);
    if let Some(idem) = &shared.idempotence {
        // Judged before sending: an answer processed after the earlier batch's own
        // acknowledgement must not make an explainable refusal look final.
        for e in &mut group {
            e.behind = e.batch.sequenced.is_some_and(|seq| idem.earlier_unresolved(&e.batch.topic, e.batch.partition, seq));
        }
    }
    let resp = match conn.send_body_parts::<ProduceRequest>(version, body, wait, true, turn).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            let err = Error::protocol(conn.addr(), "missing Produce response");
            for e in group {
                complete(shared, e.batch, Err(err.clone()));
            }
            return Vec::new();
        }
        Err(err) if err.is_retriable() => return retry_all(group, err),
        Err(err) => {
            for e in group {
                complete(shared, e.batch, Err(err.clone()));
            }
            return Vec::new();
        }
    };
    let mut retry = Vec::new();
    for mut e in group.drain(..) {
        let id = topic_ids.get(&e.batch.topic).copied().unwrap_or_default();
        let part = resp
            .responses
            .iter()
            .filter(|t| if version >= 13 { t.topic_id == id } else { *t.name == e.batch.topic })
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == e.batch.partition);
        let Some(part) = part else {
            let err = Error::protocol(conn.addr(), format!("Produce response has no result for topic \"{}\" partition {}", &*e.batch.topic, e.batch.partition));
            complete(shared, e.batch, Err(err));
            continue;
        };
        // An idempotent retry of a batch the broker already wrote is answered with its
        // original offsets (error 0), or, once it fell out of the broker's window of five, with
        // DUPLICATE_SEQUENCE_NUMBER: either way it is written, once.
        if part.error_code == 0 || (e.batch.sequenced.is_some() && idempotence::is_duplicate(part.error_code)) {
            shared.recycle(std::mem::take(&mut e.records));
            complete(shared, e.batch, Ok(part.base_offset));
            continue;
        }
        let mut message = part.error_message.as_ref().map(|m| m.to_string());
        if message.is_none() {
            message = part.record_errors.first().and_then(|r| r.batch_index_error_message.as_ref().map(|m| m.to_string()));
        }
        let err =
            Error::broker(format!("cannot produce to topic \"{}\" partition {}", &*e.batch.topic, e.batch.partition), part.error_code, message.as_deref());
        // Out of order behind a batch of the same partition that had not landed when this one
        // was sent (a retry still on its way): retrying this one after it keeps the order.
        let behind_unresolved = e.behind && idempotence::is_out_of_order(part.error_code);
        if err.is_retriable() || behind_unresolved {
            e.last_error = Some(err);
            retry.push(e);
        } else {
            complete(shared, e.batch, Err(err));
        }
    }
    retry
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn record(value: &'static [u8]) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: 0,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from_static(value)),
            headers: IndexMap::new(),
        }
    }

    #[test]
    fn produce_body_matches_kafka_protocol_encoding() {
        use kafka_protocol::messages::TopicName;
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::protocol::Encodable;
        let b1 = Bytes::from(vec![7u8; 300]);
        let b2 = Bytes::from_static(b"tiny");
        let b3 = Bytes::from(vec![9u8; 70_000]);
        let (n1, n2) = (StrBytes::from_static_str("orders"), StrBytes::from_static_str("x"));
        let (id1, id2) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(u128::MAX - 5));
        for version in 3..=13 {
            let topics = vec![
                ProduceTopic { name: &n1, id: id1, partitions: vec![(0, &b1), (2, &b2)] },
                ProduceTopic { name: &n2, id: id2, partitions: vec![(1, &b3)] },
            ];
            let parts = encode_produce_body(version, -1, 30_000, &topics).unwrap();
            let ours: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            // The record sets are referenced, not copied.
            assert!(parts.iter().any(|p| p.as_ptr() == b3.as_ptr()), "v{version}");
            let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(
                topics
                    .iter()
                    .map(|t| {
                        TopicProduceData::default().with_name(TopicName(t.name.clone())).with_topic_id(t.id).with_partition_data(
                            t.partitions.iter().map(|(i, r)| PartitionProduceData::default().with_index(*i).with_records(Some((*r).clone()))).collect(),
                        )
                    })
                    .collect(),
            );
            let mut theirs = BytesMut::new();
            req.encode(&mut theirs, version).unwrap();
            assert_eq!(ours, theirs.to_vec(), "Produce v{version}");
        }
        assert!(encode_produce_body(2, 1, 0, &[]).is_err());
    }

    #[test]
    fn acks_parse_and_print() {
        assert_eq!("all".parse::<Acks>(), Ok(Acks::All));
        assert_eq!("-1".parse::<Acks>(), Ok(Acks::All));
        assert_eq!("1".parse::<Acks>(), Ok(Acks::Leader));
        assert_eq!("0".parse::<Acks>(), Ok(Acks::None));
        assert!("2".parse::<Acks>().is_err());
        assert_eq!(Acks::All.as_i16(), -1);
        assert_eq!(Acks::All.to_string(), "all");
    }

    #[test]
    fn encoded_batch_is_one_v2_batch_without_idempotence() {
        for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let mut records: Vec<Record> = (0..100).map(|_| record(b"hello sediment")).collect();
            records[3].key = Some(Bytes::from_static(b"k"));
            records[3].headers.insert(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"v")));
            let mut bytes = encode_batch(&mut records, codec, 100 * 40).unwrap();
            // Header fields the broker checks: magic 2, base sequence -1, producer id -1, count.
            assert_eq!(bytes[16], 2);
            assert_eq!(i32::from_be_bytes(bytes[23..27].try_into().unwrap()), 99, "last offset delta");
            assert_eq!(i64::from_be_bytes(bytes[43..51].try_into().unwrap()), -1, "producer id");
            assert_eq!(i32::from_be_bytes(bytes[53..57].try_into().unwrap()), -1, "base sequence");
            assert_eq!(i32::from_be_bytes(bytes[57..61].try_into().unwrap()), 100, "record count");
            if codec == Codec::Lz4 {
                // An LZ4 frame whose FLG byte has block independence set (Kafka's reader requires it).
                assert_eq!(&bytes[61..65], &[0x04, 0x22, 0x4d, 0x18]);
                assert_eq!(bytes[65] & 0x20, 0x20);
            }
            let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
            assert_eq!(sets.len(), 1, "{codec}: one batch");
            assert_eq!(sets[0].compression, codec.compression());
            let got = &sets[0].records;
            assert_eq!(got.len(), 100);
            assert!(got.iter().enumerate().all(|(i, r)| r.offset == i as i64));
            assert_eq!(got[3].key.as_deref(), Some(&b"k"[..]));
            assert_eq!(got[3].headers.get(&b"h"[..]), Some(&Some(Bytes::from_static(b"v"))));
        }
    }

    fn batch(topic: &'static str, partition: i32, n: usize, bytes: usize) -> Batch {
        Batch {
            topic: StrBytes::from_static_str(topic),
            partition,
            records: (0..n).map(|_| record(b"x")).collect(),
            tokens: (0..n as u64).collect(),
            waiters: Vec::new(),
            bytes,
            sealed: Instant::now(),
            sequenced: None,
        }
    }

    #[test]
    fn queued_batches_merge_up_to_batch_size() {
        let mut held = Vec::new();
        hold(&mut held, batch("t", 0, 2, 100), 250);
        hold(&mut held, batch("t", 1, 1, 100), 250);
        hold(&mut held, batch("t", 0, 3, 100), 250);
        assert_eq!(held.len(), 2);
        assert_eq!(held[0].records.len(), 5);
        assert_eq!(held[0].tokens, vec![0, 1, 0, 1, 2]);
        assert_eq!(held[0].bytes, 200);
        // Would exceed the batch size: stays a separate, later batch.
        hold(&mut held, batch("t", 0, 1, 100), 250);
        assert_eq!(held.len(), 3);
        assert_eq!(held[2].partition, 0);
        // Other topic, same partition number: not merged.
        hold(&mut held, batch("u", 1, 1, 10), 250);
        assert_eq!(held.len(), 4);
    }

    #[test]
    fn merge_shifts_waiter_indexes() {
        let mut a = batch("t", 0, 2, 10);
        let mut b = batch("t", 0, 2, 10);
        let (tx, _rx) = oneshot::channel();
        b.waiters.push((1, tx));
        a.merge(b);
        assert_eq!(a.waiters[0].0, 3);
    }

    #[test]
    fn completion_reports_offsets_and_tokens() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let cb: BatchCallback = Arc::new(move |d: &BatchDelivery<'_>| {
            seen2.lock().unwrap().push((d.partition, d.result.ok(), d.tokens.to_vec()));
        });
        let outstanding = Outstanding { records: AtomicUsize::new(0), notify: Notify::new() };
        let mut b = batch("t", 2, 3, 30);
        let (tx, mut rx) = oneshot::channel();
        b.waiters.push((2, tx));
        outstanding.add(3);
        complete_with(Some(&cb), &outstanding, b, Ok(40));
        assert_eq!(rx.try_recv().unwrap().unwrap(), Delivery { partition: 2, offset: 42 });
        assert_eq!(outstanding.records.load(Ordering::Acquire), 0);

        let mut b = batch("t", 1, 1, 10);
        let (tx, mut rx) = oneshot::channel();
        b.waiters.push((0, tx));
        outstanding.add(1);
        complete_with(Some(&cb), &outstanding, b, Err(Error::ProducerClosed));
        assert!(matches!(rx.try_recv().unwrap(), Err(Error::ProducerClosed)));
        let seen = seen.lock().unwrap();
        assert_eq!(*seen, vec![(2, Some(40), vec![0, 1, 2]), (1, None, vec![0])]);
    }
}

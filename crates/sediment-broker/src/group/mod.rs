//! The group coordinator: Kafka's classic consumer group protocol and durable committed offsets.
//!
//! * [`state`] is the membership protocol as a pure state machine (groups, members, generations,
//!   rebalances, static membership, timers as deadlines): time comes in as an argument and
//!   decisions come out as effects, so it is unit-tested with a hand-driven clock.
//! * [`offsets`] holds committed offsets, made visible only once their record is durable.
//! * [`records`] encodes the `__consumer_offsets` records in Kafka's own key/value schemas.
//! * [`coordinator`] is the glue: shards (one per `__consumer_offsets` partition), parked
//!   JoinGroup/SyncGroup responses, appends and high-watermark waits, timers, loading at start
//!   and snapshot compaction of the offsets log.
//!
//! ```text
//!  handler ──▶ GroupCoordinator::shard_for(group) ──▶ Shard (Mutex<ShardState>)
//!                                                      │ Groups (state machine) ──▶ effects
//!                                                      │   Join/Sync ─▶ oneshot to the parked request
//!                                                      │   Persist   ─▶ append GroupMetadata record
//!                                                      │ OffsetStore  staged ─(hw passes)─▶ committed
//!                                                      ▼
//!                                  __consumer_offsets-<p>  (an ordinary Partition: group commit,
//!                                                           high watermark = durable offset)
//! ```

pub mod coordinator;
pub mod offsets;
/// The `__consumer_offsets` record schemas (in the wire crate, which the fuzz targets and the
/// archive tools share).
pub use sediment_protocol::group_records as records;
pub mod state;

pub use coordinator::{Clock, GroupCoordinator, OFFSETS_TOPIC, Shard, SystemClock};

/// Group coordinator settings (Kafka's broker config names in the comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`, fixed when the topic is
    /// created (an existing topic keeps its count). Kafka: 50.
    pub offsets_topic_partitions: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new (empty) group waits for more members
    /// before its first generation. Kafka: 3000; Sediment: 0, so a new group's first consumer gets
    /// its assignment at once.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `offset.metadata.max.bytes`: longer commit metadata is refused with OFFSET_METADATA_TOO_LARGE.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.commit.timeout.ms`: how long a commit (or group record) may wait to be durable.
    pub offset_commit_timeout_ms: u64,
    /// `offsets.retention.minutes` in ms: offsets of an empty group expire this long after it
    /// became empty (of a group without members, after their commit). -1 keeps them forever.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// A shard writes a snapshot of its live state (and drops the log before it) once this many
    /// records, and at least twice its live records, were appended since the last one.
    pub offsets_snapshot_min_records: u64,
    /// `offsets.topic.segment.bytes`.
    pub offsets_segment_bytes: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_topic_partitions: 8,
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            offset_metadata_max_bytes: 4096,
            offset_commit_timeout_ms: 5_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offsets_snapshot_min_records: 10_000,
            offsets_segment_bytes: 100 * 1024 * 1024,
        }
    }
}

impl GroupConfig {
    /// Checks the settings; an error names the `sediment serve` config key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=1000).contains(&self.offsets_topic_partitions) {
            return Err(("offsets_topic_num_partitions", format!("{} is not within 1..=1000", self.offsets_topic_partitions)));
        }
        if self.initial_rebalance_delay_ms < 0 {
            return Err(("group_initial_rebalance_delay_ms", "must not be negative".into()));
        }
        if self.min_session_timeout_ms < 1 {
            return Err(("group_min_session_timeout_ms", "must be positive".into()));
        }
        if self.min_session_timeout_ms > self.max_session_timeout_ms {
            return Err(("group_max_session_timeout_ms", format!("must be at least group_min_session_timeout_ms ({})", self.min_session_timeout_ms)));
        }
        if self.offset_commit_timeout_ms == 0 {
            return Err(("offsets_commit_timeout_ms", "must be positive".into()));
        }
        if self.offsets_retention_check_interval_ms < 1 {
            return Err(("offsets_retention_check_interval_ms", "must be positive".into()));
        }
        if self.offsets_snapshot_min_records < 1 {
            return Err(("offsets_snapshot_min_records", "must be positive".into()));
        }
        Ok(())
    }
}

/// The wire value of an optional error (0 for none).
pub fn err_code(e: Option<sediment_protocol::ErrorCode>) -> i16 {
    e.map_or(0, |e| e.code())
}

/// How Kafka shows a member's host in DescribeGroups (`InetAddress.toString()`: "/127.0.0.1").
pub fn client_host(peer: &std::net::SocketAddr) -> String {
    format!("/{}", peer.ip())
}

//! The classic group membership protocol as a pure state machine: no I/O, no clock, no
//! randomness. Every operation takes the current time (`now`, milliseconds) and returns
//! [`Effect`]s for the glue to carry out: responses to park or release, group records to persist.
//! Timers are deadlines stored in the state and fired by [`Groups::tick`].
//!
//! This follows Apache Kafka's classic group coordinator (`GroupMetadataManager` /
//! `ClassicGroup` in Kafka 4.x) decision for decision, including its error codes.
//!
//! ```text
//!                       first JoinGroup (after the initial delay)
//!            ┌───────┐ ─────────────────────────────▶ ┌────────────────────┐
//!            │ Empty │                                 │ PreparingRebalance │◀───────────┐
//!            └───────┘ ◀──── all members gone ──────── └────────────────────┘            │
//!                ▲               every known member rejoined  │ (or rebalance timeout)    │
//!                │                                            ▼                           │
//!                │                                 ┌─────────────────────┐  join/leave/   │
//!                │                                 │ CompletingRebalance │  expiry/       │
//!                │                                 └─────────────────────┘  changed       │
//!                │                     leader's SyncGroup persisted │        metadata     │
//!                │                                                  ▼                     │
//!                │                                          ┌────────┐                    │
//!                └──────────── (via PreparingRebalance) ─── │ Stable │ ───────────────────┘
//!                                                           └────────┘
//! ```
//!
//! Timers: a member's heartbeat deadline (session timeout; five minutes for a new member's first
//! join), a pending member's deadline (MEMBER_ID_REQUIRED issued, join not yet repeated), the
//! group's join deadline (initial delay, then the rebalance timeout) and its sync deadline
//! (members that joined must send SyncGroup within the rebalance timeout).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use sediment_protocol::ErrorCode;

use super::records::{GroupValue, MemberValue};

/// Identifies a parked JoinGroup or SyncGroup request in the glue.
pub type Waiter = u64;

/// How long a new member may wait in its first JoinGroup before it is dropped (Kafka's
/// `group.classic.new.member.join.timeout.ms` default, not configurable there either).
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// Kafka's "consumer" protocol type, whose metadata the coordinator understands.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Settings of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members before its
    /// first generation. Sediment defaults to 0 (Kafka: 3000).
    pub initial_rebalance_delay_ms: i64,
    pub new_member_join_timeout_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { initial_rebalance_delay_ms: 0, new_member_join_timeout_ms: NEW_MEMBER_JOIN_TIMEOUT_MS }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    fn can_rebalance(self) -> bool {
        matches!(self, GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty)
    }
}

/// One protocol a member supports, in its order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct JoinWait {
    waiter: Waiter,
    api_version: i16,
}

/// A member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    awaiting_join: Option<JoinWait>,
    awaiting_sync: Option<Waiter>,
    is_new: bool,
    heartbeat_deadline: Option<i64>,
}

impl Member {
    fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|p| p.name == protocol).map(|p| p.metadata.clone()).unwrap_or_default()
    }

    fn vote(&self, candidates: &BTreeSet<String>) -> Option<String> {
        self.protocols.iter().find(|p| candidates.contains(&p.name)).map(|p| p.name.clone())
    }

    fn has_satisfied_heartbeat(&self) -> bool {
        if self.is_new { false } else { self.awaiting_join.is_some() || self.awaiting_sync.is_some() }
    }

    pub fn is_static(&self) -> bool {
        self.instance_id.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinTimer {
    /// The initial delay of a new group; `remaining` is what is left of the rebalance timeout.
    Initial {
        delay: i64,
        remaining: i64,
    },
    Rebalance,
}

/// Why a group record is persisted; handed back to [`Groups::persisted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistToken {
    /// Nothing waits for this record.
    None,
    /// The leader's assignment for `generation`: the group becomes Stable once it is durable.
    Assignment { generation: i32 },
    /// A static member replaced its old member id while the group was Stable.
    StaticRejoin(Box<StaticRejoin>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRejoin {
    instance_id: String,
    old_member_id: String,
    new_member_id: String,
    old_protocols: Vec<Protocol>,
    old_rebalance_timeout_ms: i32,
    old_session_timeout_ms: i32,
    leader_before: Option<String>,
    api_version: i16,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: Option<ErrorCode>,
    pub member_id: String,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    /// Only the leader gets the members (id, instance id, metadata of the selected protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(member_id: impl Into<String>, code: ErrorCode) -> JoinResult {
        JoinResult {
            error: Some(code),
            member_id: member_id.into(),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: Option<ErrorCode>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(code: ErrorCode) -> SyncResult {
        SyncResult { error: Some(code), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// What the glue must do after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer a parked JoinGroup.
    Join { waiter: Waiter, result: JoinResult },
    /// Answer a parked SyncGroup.
    Sync { waiter: Waiter, result: SyncResult },
    /// Append the group's metadata record (None: tombstone), then call [`Groups::persisted`].
    Persist { group: String, value: Option<GroupValue>, token: PersistToken },
}

/// A JoinGroup request, as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub session_timeout_ms: i32,
    /// v0 has none: the session timeout is used, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    pub api_version: i16,
}

/// A SyncGroup request.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// One classic group.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    state: GroupState,
    previous_state: GroupState,
    state_timestamp: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group instance id -> member id
    static_members: HashMap<String, String>,
    /// members that got MEMBER_ID_REQUIRED, with their expiry deadline
    pending_join: HashMap<String, i64>,
    pending_sync: BTreeSet<String>,
    new_member_added: bool,
    join_timer: Option<(i64, JoinTimer)>,
    sync_timer: Option<(i64, i32)>,
    subscribed_topics: Option<BTreeSet<String>>,
    /// the leader's assignment while its record is being persisted
    pending_assignment: Option<(i32, HashMap<String, Bytes>)>,
}

impl Group {
    fn new(id: &str, now: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            previous_state: GroupState::Empty,
            state_timestamp: now,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_join: HashMap::new(),
            pending_sync: BTreeSet::new(),
            new_member_added: false,
            join_timer: None,
            sync_timer: None,
            subscribed_topics: None,
            pending_assignment: None,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn state_timestamp(&self) -> i64 {
        self.state_timestamp
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
    }

    /// True if the group (using the consumer protocol) is subscribed to `topic`; when the
    /// subscriptions cannot be parsed, a consumer group counts as subscribed to everything.
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(t) => t.contains(topic),
            None => self.uses_consumer_protocol(),
        }
    }

    pub fn uses_consumer_protocol(&self) -> bool {
        self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE)
    }

    /// The record that persists this group (members' metadata of the selected protocol).
    pub fn to_value(&self, assignment: Option<&HashMap<String, Bytes>>) -> GroupValue {
        let proto = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&proto),
                    assignment: assignment.map(|a| a.get(&m.id).cloned().unwrap_or_default()).unwrap_or_else(|| m.assignment.clone()),
                })
                .collect(),
        }
    }

    fn transition(&mut self, to: GroupState, now: i64) {
        self.previous_state = self.state;
        self.state = to;
        self.state_timestamp = now;
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members.values().map(|m| m.rebalance_timeout_ms as i64).max().unwrap_or(0)
    }

    fn num_awaiting_join(&self) -> usize {
        self.members.values().filter(|m| m.awaiting_join.is_some()).count()
    }

    fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join() && self.pending_join.is_empty()
    }

    fn supported_count(&self, protocol: &str) -> usize {
        self.members.values().filter(|m| m.protocols.iter().any(|p| p.name == protocol)).count()
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.state == GroupState::Empty {
            !protocol_type.is_empty() && !protocols.is_empty()
        } else {
            self.protocol_type.as_deref() == Some(protocol_type) && protocols.iter().any(|p| self.supported_count(&p.name) == self.members.len())
        }
    }

    fn candidate_protocols(&self) -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for m in self.members.values() {
            for p in &m.protocols {
                all.insert(p.name.clone());
            }
        }
        all.into_iter().filter(|p| self.supported_count(p) == self.members.len()).collect()
    }

    /// The protocol every member supports with the most first-choice votes. Ties go to the
    /// protocol preferred by the leader (Kafka leaves ties to hash order).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(v) = m.vote(&candidates) {
                *votes.entry(v).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        let tied: Vec<&String> = votes.iter().filter(|(_, n)| **n == best).map(|(p, _)| p).collect();
        if tied.len() > 1 {
            let leader = self.leader.as_ref().and_then(|l| self.members.get(l));
            if let Some(pref) = leader.and_then(|m| m.protocols.iter().find(|p| tied.contains(&&p.name))) {
                return Some(pref.name.clone());
            }
        }
        tied.first().map(|s| (*s).clone())
    }

    fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        if self.members.is_empty() {
            return Some(BTreeSet::new());
        }
        let proto = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            topics.extend(parse_subscription_topics(&m.metadata(proto))?);
        }
        Some(topics)
    }

    /// Errors a request naming `member_id` (and maybe a group instance id) gets when they do not
    /// match the group: UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                None => return Err(ErrorCode::UnknownMemberId),
                Some(existing) if existing != member_id => return Err(ErrorCode::FencedInstanceId),
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        Ok(())
    }

    fn joined_members(&self) -> Vec<(String, Option<String>, Bytes)> {
        let proto = self.protocol_name.clone().unwrap_or_default();
        self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&proto))).collect()
    }

    fn current_join_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        JoinResult {
            error: None,
            member_id: member_id.to_string(),
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            members: if with_members { self.joined_members() } else { Vec::new() },
        }
    }

    fn add(&mut self, mut member: Member, wait: Option<JoinWait>) {
        if let Some(i) = &member.instance_id {
            self.static_members.insert(i.clone(), member.id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        member.awaiting_join = wait;
        self.pending_join.remove(&member.id);
        self.members.insert(member.id.clone(), member);
    }

    /// Removes a member; any request it has parked is answered with UNKNOWN_MEMBER_ID.
    fn remove(&mut self, member_id: &str, fx: &mut Vec<Effect>) {
        if let Some(m) = self.members.remove(member_id) {
            if let Some(w) = m.awaiting_join {
                fx.push(Effect::Join { waiter: w.waiter, result: JoinResult::error("", ErrorCode::UnknownMemberId) });
            }
            if let Some(w) = m.awaiting_sync {
                fx.push(Effect::Sync { waiter: w, result: SyncResult::error(ErrorCode::UnknownMemberId) });
            }
            if let Some(i) = &m.instance_id {
                self.static_members.remove(i);
            }
        }
        if self.is_leader(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        self.pending_join.remove(member_id);
        self.pending_sync.remove(member_id);
    }

    fn complete_join(&mut self, member_id: &str, result: JoinResult, fx: &mut Vec<Effect>) -> bool {
        if let Some(m) = self.members.get_mut(member_id)
            && let Some(w) = m.awaiting_join.take()
        {
            fx.push(Effect::Join { waiter: w.waiter, result });
            return true;
        }
        false
    }

    fn complete_sync(&mut self, member_id: &str, result: SyncResult, fx: &mut Vec<Effect>) -> bool {
        if let Some(m) = self.members.get_mut(member_id)
            && let Some(w) = m.awaiting_sync.take()
        {
            fx.push(Effect::Sync { waiter: w, result });
            return true;
        }
        false
    }

    fn reschedule_heartbeat(&mut self, member_id: &str, timeout_ms: i64, now: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.heartbeat_deadline = Some(now.saturating_add(timeout_ms));
        }
    }

    fn reschedule_session(&mut self, member_id: &str, now: i64) {
        if let Some(t) = self.members.get(member_id).map(|m| m.session_timeout_ms as i64) {
            self.reschedule_heartbeat(member_id, t, now);
        }
    }

    /// Sets the member's protocols and timeouts and parks (or unparks) its JoinGroup. A join
    /// already parked for the member is answered first so that no request is left hanging.
    fn update_member(
        &mut self,
        member_id: &str,
        protocols: Vec<Protocol>,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
        wait: Option<JoinWait>,
        fx: &mut Vec<Effect>,
    ) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.protocols = protocols;
            m.rebalance_timeout_ms = rebalance_timeout_ms;
            m.session_timeout_ms = session_timeout_ms;
            if let (Some(old), Some(_)) = (m.awaiting_join, wait) {
                fx.push(Effect::Join { waiter: old.waiter, result: JoinResult::error(member_id, ErrorCode::RebalanceInProgress) });
            }
            m.awaiting_join = wait;
        }
    }

    /// For static members: moves the member to its new id, fencing whatever the old id had parked.
    fn replace_static_member(&mut self, instance_id: &str, old_id: &str, new_id: &str, fx: &mut Vec<Effect>) {
        let Some(mut m) = self.members.remove(old_id) else { return };
        if let Some(w) = m.awaiting_join.take() {
            let mut r = JoinResult::error(old_id, ErrorCode::FencedInstanceId);
            r.generation = -1;
            fx.push(Effect::Join { waiter: w.waiter, result: r });
        }
        if let Some(w) = m.awaiting_sync.take() {
            fx.push(Effect::Sync { waiter: w, result: SyncResult::error(ErrorCode::FencedInstanceId) });
        }
        m.id = new_id.to_string();
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.to_string());
        }
        self.members.insert(new_id.to_string(), m);
        if self.is_leader(old_id) {
            self.leader = Some(new_id.to_string());
        }
        self.static_members.insert(instance_id.to_string(), new_id.to_string());
    }

    fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.clone() else { return false };
        let joined = self.members.get(&leader).is_some_and(|m| m.awaiting_join.is_some());
        if joined {
            return true;
        }
        if let Some(m) = self.members.values().find(|m| m.awaiting_join.is_some()) {
            self.leader = Some(m.id.clone());
            return true;
        }
        false
    }
}

/// Parses the topic list of a consumer protocol subscription (version prefix, then the v0
/// fields every later version starts with).
pub fn parse_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = Bytes::copy_from_slice(metadata);
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    if version < 0 {
        return None;
    }
    let _ = bytes::Buf::get_i16(&mut buf);
    let sub = ConsumerProtocolSubscription::decode(&mut buf, 0).ok()?;
    Some(sub.topics.into_iter().map(|t| t.to_string()).collect())
}

/// All classic groups of one coordinator shard.
#[derive(Debug, Default)]
pub struct Groups {
    limits: Limits,
    groups: HashMap<String, Group>,
}

impl Groups {
    pub fn new(limits: Limits) -> Groups {
        Groups { limits, groups: HashMap::new() }
    }

    pub fn get(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Creates a "simple" group (no protocol, no members) if the id is unknown: a group that only
    /// stores offsets (loaded offsets, admin commits).
    pub fn ensure_simple(&mut self, id: &str, now: i64) {
        self.groups.entry(id.to_string()).or_insert_with(|| Group::new(id, now));
    }

    /// The earliest deadline of any timer, for the glue's sleep.
    pub fn next_deadline(&self) -> Option<i64> {
        self.groups.values().filter_map(next_group_deadline).min()
    }

    // ------------------------------------------------------------------ JoinGroup

    /// Handles a JoinGroup. `new_member_suffix` makes a new member id unique (a UUID in the glue).
    pub fn join(&mut self, group_id: &str, req: JoinRequest, waiter: Waiter, new_member_suffix: &str, now: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let unknown = req.member_id.is_empty();
        if !self.groups.contains_key(group_id) {
            if !unknown {
                fx.push(Effect::Join { waiter, result: JoinResult::error(req.member_id, ErrorCode::UnknownMemberId) });
                return fx;
            }
            self.groups.insert(group_id.to_string(), Group::new(group_id, now));
        }
        let limits = self.limits;
        let g = self.groups.get_mut(group_id).expect("inserted above");
        if unknown {
            join_new_member(g, limits, req, waiter, new_member_suffix, now, &mut fx);
        } else {
            join_existing_member(g, limits, req, waiter, now, &mut fx);
        }
        fire_due(g, limits, now, &mut fx);
        fx
    }

    // ------------------------------------------------------------------ SyncGroup

    pub fn sync(&mut self, group_id: &str, req: SyncRequest, waiter: Waiter, now: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let limits = self.limits;
        let Some(g) = self.groups.get_mut(group_id) else {
            fx.push(Effect::Sync { waiter, result: SyncResult::error(ErrorCode::UnknownMemberId) });
            return fx;
        };
        if g.state == GroupState::Empty {
            fx.push(Effect::Sync { waiter, result: SyncResult::error(ErrorCode::UnknownMemberId) });
            return fx;
        }
        if let Err(e) = validate_sync(g, &req) {
            fx.push(Effect::Sync { waiter, result: SyncResult::error(e) });
            return fx;
        }
        match g.state {
            GroupState::PreparingRebalance => {
                fx.push(Effect::Sync { waiter, result: SyncResult::error(ErrorCode::RebalanceInProgress) });
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = g.members.get_mut(&req.member_id)
                    && let Some(old) = m.awaiting_sync.replace(waiter)
                {
                    fx.push(Effect::Sync { waiter: old, result: SyncResult::error(ErrorCode::RebalanceInProgress) });
                }
                remove_pending_sync_member(g, &req.member_id);
                if g.is_leader(&req.member_id) {
                    let mut assignment: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for id in g.members.keys() {
                        assignment.entry(id.clone()).or_default();
                    }
                    let value = g.to_value(Some(&assignment));
                    g.pending_assignment = Some((g.generation, assignment));
                    fx.push(Effect::Persist { group: g.id.clone(), value: Some(value), token: PersistToken::Assignment { generation: g.generation } });
                }
            }
            GroupState::Stable => {
                remove_pending_sync_member(g, &req.member_id);
                let assignment = g.members.get(&req.member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                fx.push(Effect::Sync {
                    waiter,
                    result: SyncResult { error: None, protocol_type: g.protocol_type.clone(), protocol_name: g.protocol_name.clone(), assignment },
                });
            }
            GroupState::Empty | GroupState::Dead => {
                fx.push(Effect::Sync { waiter, result: SyncResult::error(ErrorCode::UnknownMemberId) });
            }
        }
        fire_due(g, limits, now, &mut fx);
        fx
    }

    // ------------------------------------------------------------------ Heartbeat

    pub fn heartbeat(&mut self, group_id: &str, member_id: &str, instance_id: Option<&str>, generation: i32, now: i64) -> Result<(), ErrorCode> {
        let Some(g) = self.groups.get_mut(group_id) else { return Err(ErrorCode::UnknownMemberId) };
        if g.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        g.validate_member(member_id, instance_id)?;
        if generation != g.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        match g.state {
            GroupState::Empty => Err(ErrorCode::UnknownMemberId),
            GroupState::PreparingRebalance => {
                g.reschedule_session(member_id, now);
                Err(ErrorCode::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                g.reschedule_session(member_id, now);
                Ok(())
            }
            GroupState::Dead => Err(ErrorCode::CoordinatorNotAvailable),
        }
    }

    // ------------------------------------------------------------------ LeaveGroup

    /// Removes members (member id, or an empty member id plus a group instance id for an admin
    /// removal of a static member). `Err` is a group-level error; otherwise one result per member.
    #[allow(clippy::type_complexity)]
    pub fn leave(&mut self, group_id: &str, members: &[(String, Option<String>)], now: i64) -> (Result<Vec<Option<ErrorCode>>, ErrorCode>, Vec<Effect>) {
        let mut fx = Vec::new();
        let limits = self.limits;
        let Some(g) = self.groups.get_mut(group_id) else { return (Err(ErrorCode::UnknownMemberId), fx) };
        if g.state == GroupState::Dead {
            return (Err(ErrorCode::CoordinatorNotAvailable), fx);
        }
        let mut results = Vec::with_capacity(members.len());
        let mut any_left = false;
        for (member_id, instance_id) in members {
            if member_id.is_empty() {
                match instance_id.as_deref().and_then(|i| g.static_members.get(i).cloned()) {
                    Some(existing) => {
                        g.remove(&existing, &mut fx);
                        results.push(None);
                        any_left = true;
                    }
                    None => results.push(Some(ErrorCode::UnknownMemberId)),
                }
            } else if g.pending_join.remove(member_id).is_some() {
                results.push(None);
                any_left = true;
            } else {
                match g.validate_member(member_id, instance_id.as_deref()) {
                    Ok(()) => {
                        g.remove(member_id, &mut fx);
                        results.push(None);
                        any_left = true;
                    }
                    Err(e) => results.push(Some(e)),
                }
            }
        }
        if any_left {
            match g.state {
                GroupState::Stable | GroupState::CompletingRebalance => maybe_prepare_rebalance_or_complete_join(g, limits, now, &mut fx),
                GroupState::PreparingRebalance => maybe_complete_join_phase(g, limits, now, &mut fx),
                _ => {}
            }
        }
        fire_due(g, limits, now, &mut fx);
        (Ok(results), fx)
    }

    // ------------------------------------------------------------------ OffsetCommit

    /// Checks whether an OffsetCommit may write (Kafka's `validateOffsetCommit`); creates a simple
    /// group for generation -1 commits to an unknown group. Keeps the member's session alive.
    pub fn validate_offset_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        api_version: i16,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let Some(g) = self.groups.get_mut(group_id) else {
            if generation < 0 {
                self.groups.insert(group_id.to_string(), Group::new(group_id, now));
                return Ok(());
            }
            return Err(if api_version >= 9 { ErrorCode::GroupIdNotFound } else { ErrorCode::IllegalGeneration });
        };
        if g.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        if generation < 0 && g.state == GroupState::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            g.validate_member(member_id, instance_id)?;
            if generation != g.generation {
                return Err(ErrorCode::IllegalGeneration);
            }
        } else if g.state != GroupState::Empty {
            return Err(ErrorCode::UnknownMemberId);
        }
        if g.state == GroupState::CompletingRebalance {
            return Err(ErrorCode::RebalanceInProgress);
        }
        if matches!(g.state, GroupState::Stable | GroupState::PreparingRebalance) {
            g.reschedule_session(member_id, now);
        }
        Ok(())
    }

    // ------------------------------------------------------------------ admin

    /// DeleteGroups / OffsetDelete precondition: GROUP_ID_NOT_FOUND or NON_EMPTY_GROUP.
    pub fn validate_delete(&self, group_id: &str) -> Result<(), ErrorCode> {
        match self.groups.get(group_id).map(|g| g.state) {
            None | Some(GroupState::Dead) => Err(ErrorCode::GroupIdNotFound),
            Some(GroupState::Empty) => Ok(()),
            Some(_) => Err(ErrorCode::NonEmptyGroup),
        }
    }

    /// Removes an (empty) group; the glue writes its tombstones.
    pub fn remove_group(&mut self, group_id: &str) -> Option<Group> {
        self.groups.remove(group_id)
    }

    /// Replays a group record from the log (None: tombstone). A loaded group with members is
    /// Stable; each member must heartbeat within its session timeout.
    pub fn load(&mut self, group_id: &str, value: Option<GroupValue>, now: i64) {
        let Some(v) = value else {
            self.groups.remove(group_id);
            return;
        };
        let mut g = Group::new(group_id, now);
        g.generation = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type.clone());
        g.protocol_name = v.protocol.clone();
        g.state_timestamp = if v.state_timestamp >= 0 { v.state_timestamp } else { now };
        let proto = v.protocol.clone().unwrap_or_default();
        for m in v.members {
            let member = Member {
                id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: if m.rebalance_timeout_ms < 0 { m.session_timeout_ms } else { m.rebalance_timeout_ms },
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: v.protocol_type.clone(),
                protocols: vec![Protocol { name: proto.clone(), metadata: m.subscription }],
                assignment: m.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                heartbeat_deadline: Some(now.saturating_add(m.session_timeout_ms as i64)),
            };
            if let Some(i) = &member.instance_id {
                g.static_members.insert(i.clone(), member.id.clone());
            }
            g.members.insert(member.id.clone(), member);
        }
        g.leader = v.leader.filter(|l| g.members.contains_key(l)).or_else(|| g.members.keys().next().cloned());
        g.state = if g.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        g.previous_state = g.state;
        g.subscribed_topics = g.compute_subscribed_topics();
        self.groups.insert(group_id.to_string(), g);
    }

    // ------------------------------------------------------------------ timers and persistence

    /// Fires every timer due at `now`.
    pub fn tick(&mut self, now: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let limits = self.limits;
        for g in self.groups.values_mut() {
            if next_group_deadline(g).is_some_and(|d| d <= now) {
                fire_due(g, limits, now, &mut fx);
            }
        }
        fx
    }

    /// The outcome of a [`Effect::Persist`]: `error` is None when the record is durable.
    pub fn persisted(&mut self, group_id: &str, token: PersistToken, error: Option<ErrorCode>, now: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let limits = self.limits;
        let Some(g) = self.groups.get_mut(group_id) else { return fx };
        match token {
            PersistToken::None => {}
            PersistToken::Assignment { generation } => {
                let pending = g.pending_assignment.take_if(|(gen_, _)| *gen_ == generation);
                if g.state != GroupState::CompletingRebalance || g.generation != generation {
                    return fx;
                }
                match (error, pending) {
                    (None, Some((_, assignment))) => {
                        for m in g.members.values_mut() {
                            m.assignment = assignment.get(&m.id).cloned().unwrap_or_default();
                        }
                        propagate_assignment(g, None, now, &mut fx);
                        g.transition(GroupState::Stable, now);
                    }
                    (err, _) => {
                        let e = err.unwrap_or(ErrorCode::UnknownServerError);
                        reset_and_propagate_assignment_error(g, e, now, &mut fx);
                        maybe_prepare_rebalance_or_complete_join(g, limits, now, &mut fx);
                    }
                }
            }
            PersistToken::StaticRejoin(s) => {
                let s = *s;
                match error {
                    None => {
                        let is_leader = g.is_leader(&s.new_member_id);
                        let mut r = g.current_join_result(&s.new_member_id, false);
                        if s.api_version >= 9 {
                            if is_leader {
                                r.members = g.joined_members();
                            }
                            r.skip_assignment = is_leader;
                        } else {
                            r.leader = s.leader_before.clone().unwrap_or_default();
                        }
                        g.complete_join(&s.new_member_id, r, &mut fx);
                    }
                    Some(e) => {
                        if g.members.contains_key(&s.new_member_id) {
                            g.update_member(&s.new_member_id, s.old_protocols, s.old_rebalance_timeout_ms, s.old_session_timeout_ms, None, &mut fx);
                            let wait = g.members.get_mut(&s.new_member_id).and_then(|m| m.awaiting_join.take());
                            g.replace_static_member(&s.instance_id, &s.new_member_id, &s.old_member_id, &mut fx);
                            g.reschedule_session(&s.old_member_id, now);
                            if let Some(w) = wait {
                                let mut r = JoinResult::error("", e);
                                r.generation = g.generation;
                                r.protocol_type = g.protocol_type.clone();
                                r.protocol_name = g.protocol_name.clone();
                                r.leader = s.leader_before.unwrap_or_default();
                                fx.push(Effect::Join { waiter: w.waiter, result: r });
                            }
                        }
                    }
                }
            }
        }
        fire_due(g, limits, now, &mut fx);
        fx
    }
}

// ---------------------------------------------------------------------- join paths

fn join_new_member(g: &mut Group, limits: Limits, req: JoinRequest, waiter: Waiter, suffix: &str, now: i64, fx: &mut Vec<Effect>) {
    if g.state == GroupState::Dead {
        fx.push(Effect::Join { waiter, result: JoinResult::error("", ErrorCode::CoordinatorNotAvailable) });
        return;
    }
    if !g.supports_protocols(&req.protocol_type, &req.protocols) {
        fx.push(Effect::Join { waiter, result: JoinResult::error("", ErrorCode::InconsistentGroupProtocol) });
        return;
    }
    let new_id = match &req.instance_id {
        Some(i) => format!("{i}-{suffix}"),
        None => format!("{}-{suffix}", req.client_id),
    };
    if let Some(instance) = req.instance_id.clone() {
        if let Some(existing) = g.static_members.get(&instance).cloned() {
            update_static_member_then_rebalance_or_complete_join(g, limits, req, &instance, &existing, &new_id, waiter, now, fx);
        } else {
            add_member_then_rebalance_or_complete_join(g, limits, req, new_id, waiter, now, fx);
        }
        return;
    }
    if req.api_version >= 4 {
        // KIP-394: the member must come back with the id it is given.
        g.pending_join.insert(new_id.clone(), now.saturating_add(req.session_timeout_ms as i64));
        fx.push(Effect::Join { waiter, result: JoinResult::error(new_id, ErrorCode::MemberIdRequired) });
    } else {
        add_member_then_rebalance_or_complete_join(g, limits, req, new_id, waiter, now, fx);
    }
}

fn join_existing_member(g: &mut Group, limits: Limits, req: JoinRequest, waiter: Waiter, now: i64, fx: &mut Vec<Effect>) {
    let member_id = req.member_id.clone();
    if g.state == GroupState::Dead {
        fx.push(Effect::Join { waiter, result: JoinResult::error(member_id, ErrorCode::CoordinatorNotAvailable) });
        return;
    }
    if !g.supports_protocols(&req.protocol_type, &req.protocols) {
        fx.push(Effect::Join { waiter, result: JoinResult::error(member_id, ErrorCode::InconsistentGroupProtocol) });
        return;
    }
    if g.pending_join.contains_key(&member_id) {
        if req.instance_id.is_some() {
            // Kafka throws an IllegalStateException here: a pending member is never static.
            fx.push(Effect::Join { waiter, result: JoinResult::error(member_id, ErrorCode::UnknownServerError) });
            return;
        }
        add_member_then_rebalance_or_complete_join(g, limits, req, member_id, waiter, now, fx);
        return;
    }
    if let Err(e) = g.validate_member(&member_id, req.instance_id.as_deref()) {
        fx.push(Effect::Join { waiter, result: JoinResult::error(member_id, e) });
        return;
    }
    let wait = JoinWait { waiter, api_version: req.api_version };
    let matches = g.members.get(&member_id).is_some_and(|m| m.matches(&req.protocols));
    match g.state {
        GroupState::PreparingRebalance => update_member_then_rebalance_or_complete_join(g, limits, req, wait, now, fx),
        GroupState::CompletingRebalance => {
            if matches {
                let leader = g.is_leader(&member_id);
                fx.push(Effect::Join { waiter, result: g.current_join_result(&member_id, leader) });
            } else {
                update_member_then_rebalance_or_complete_join(g, limits, req, wait, now, fx);
            }
        }
        GroupState::Stable => {
            if g.is_leader(&member_id) || !matches {
                update_member_then_rebalance_or_complete_join(g, limits, req, wait, now, fx);
            } else {
                fx.push(Effect::Join { waiter, result: g.current_join_result(&member_id, false) });
            }
        }
        GroupState::Empty | GroupState::Dead => {
            fx.push(Effect::Join { waiter, result: JoinResult::error(member_id, ErrorCode::UnknownMemberId) });
        }
    }
}

fn update_member_then_rebalance_or_complete_join(g: &mut Group, limits: Limits, req: JoinRequest, wait: JoinWait, now: i64, fx: &mut Vec<Effect>) {
    g.update_member(&req.member_id, req.protocols, req.rebalance_timeout_ms, req.session_timeout_ms, Some(wait), fx);
    maybe_prepare_rebalance_or_complete_join(g, limits, now, fx);
}

fn add_member_then_rebalance_or_complete_join(
    g: &mut Group,
    limits: Limits,
    req: JoinRequest,
    member_id: String,
    waiter: Waiter,
    now: i64,
    fx: &mut Vec<Effect>,
) {
    let member = Member {
        id: member_id.clone(),
        instance_id: req.instance_id,
        client_id: req.client_id,
        client_host: req.client_host,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        session_timeout_ms: req.session_timeout_ms,
        protocol_type: req.protocol_type,
        protocols: req.protocols,
        assignment: Bytes::new(),
        awaiting_join: None,
        awaiting_sync: None,
        is_new: true,
        heartbeat_deadline: None,
    };
    if g.state == GroupState::PreparingRebalance && g.previous_state == GroupState::Empty {
        g.new_member_added = true;
    }
    g.add(member, Some(JoinWait { waiter, api_version: req.api_version }));
    // A new member cannot heartbeat while its join is parked: bound the wait instead.
    g.reschedule_heartbeat(&member_id, limits.new_member_join_timeout_ms, now);
    maybe_prepare_rebalance_or_complete_join(g, limits, now, fx);
}

#[allow(clippy::too_many_arguments)]
fn update_static_member_then_rebalance_or_complete_join(
    g: &mut Group,
    limits: Limits,
    req: JoinRequest,
    instance_id: &str,
    old_id: &str,
    new_id: &str,
    waiter: Waiter,
    now: i64,
    fx: &mut Vec<Effect>,
) {
    let leader_before = g.leader.clone();
    g.replace_static_member(instance_id, old_id, new_id, fx);
    g.reschedule_session(new_id, now);
    let (old_protocols, old_rebalance, old_session) = match g.members.get(new_id) {
        Some(m) => (m.protocols.clone(), m.rebalance_timeout_ms, m.session_timeout_ms),
        None => return,
    };
    let api_version = req.api_version;
    g.update_member(new_id, req.protocols, req.rebalance_timeout_ms, req.session_timeout_ms, Some(JoinWait { waiter, api_version }), fx);
    match g.state {
        GroupState::Stable => {
            let next = g.select_protocol();
            if next.is_some() && next == g.protocol_name {
                // Same protocol next generation: no rebalance, persist the new member id first.
                fx.push(Effect::Persist {
                    group: g.id.clone(),
                    value: Some(g.to_value(None)),
                    token: PersistToken::StaticRejoin(Box::new(StaticRejoin {
                        instance_id: instance_id.to_string(),
                        old_member_id: old_id.to_string(),
                        new_member_id: new_id.to_string(),
                        old_protocols,
                        old_rebalance_timeout_ms: old_rebalance,
                        old_session_timeout_ms: old_session,
                        leader_before,
                        api_version,
                    })),
                });
            } else {
                maybe_prepare_rebalance_or_complete_join(g, limits, now, fx);
            }
        }
        GroupState::CompletingRebalance => {
            // The leader may already have computed an assignment naming the old id: rebalance.
            prepare_rebalance(g, limits, now, fx);
        }
        GroupState::PreparingRebalance => maybe_complete_join_phase(g, limits, now, fx),
        GroupState::Empty | GroupState::Dead => {
            // Unreachable: a known static member means the group has members.
            maybe_complete_join_phase(g, limits, now, fx);
        }
    }
}

// ---------------------------------------------------------------------- rebalance machinery

fn maybe_prepare_rebalance_or_complete_join(g: &mut Group, limits: Limits, now: i64, fx: &mut Vec<Effect>) {
    if g.state.can_rebalance() {
        prepare_rebalance(g, limits, now, fx);
    } else {
        maybe_complete_join_phase(g, limits, now, fx);
    }
}

fn prepare_rebalance(g: &mut Group, limits: Limits, now: i64, fx: &mut Vec<Effect>) {
    if g.state == GroupState::CompletingRebalance {
        reset_and_propagate_assignment_error(g, ErrorCode::RebalanceInProgress, now, fx);
    }
    g.pending_sync.clear();
    g.sync_timer = None;
    let initial = g.state == GroupState::Empty;
    if initial {
        let delay = limits.initial_rebalance_delay_ms;
        let remaining = (g.rebalance_timeout_ms() - delay).max(0);
        g.join_timer = Some((now.saturating_add(delay), JoinTimer::Initial { delay, remaining }));
    }
    g.transition(GroupState::PreparingRebalance, now);
    tracing::debug!(group = %g.id, generation = g.generation, "preparing to rebalance");
    if !initial {
        maybe_complete_join_else_schedule(g, now, fx);
    }
}

fn maybe_complete_join_else_schedule(g: &mut Group, now: i64, fx: &mut Vec<Effect>) {
    if g.has_all_members_joined() {
        complete_join_phase(g, now, fx);
    } else {
        g.join_timer = Some((now.saturating_add(g.rebalance_timeout_ms()), JoinTimer::Rebalance));
    }
}

fn maybe_complete_join_phase(g: &mut Group, _limits: Limits, now: i64, fx: &mut Vec<Effect>) {
    if g.state != GroupState::PreparingRebalance {
        return;
    }
    if g.previous_state == GroupState::Empty {
        return; // the initial rebalance ends with its timer
    }
    if !g.has_all_members_joined() {
        return;
    }
    complete_join_phase(g, now, fx);
}

fn complete_join_phase(g: &mut Group, now: i64, fx: &mut Vec<Effect>) {
    g.join_timer = None;
    let gone: Vec<String> = g.members.values().filter(|m| m.awaiting_join.is_none() && !m.is_static()).map(|m| m.id.clone()).collect();
    for id in &gone {
        g.remove(id, fx);
    }
    if !gone.is_empty() {
        tracing::info!(group = %g.id, members = ?gone, "removed dynamic members that did not rejoin");
    }
    if g.state == GroupState::Dead {
        return;
    }
    if !g.maybe_elect_new_joined_leader() && !g.members.is_empty() {
        // Nobody rejoined: wait another rebalance timeout for session expiry to clear the group.
        g.join_timer = Some((now.saturating_add(g.rebalance_timeout_ms()), JoinTimer::Rebalance));
        return;
    }
    init_next_generation(g, now);
    if g.state == GroupState::Empty {
        tracing::info!(group = %g.id, generation = g.generation, "group is now empty");
        fx.push(Effect::Persist { group: g.id.clone(), value: Some(g.to_value(None)), token: PersistToken::None });
        return;
    }
    tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), protocol = ?g.protocol_name, "group stabilizing");
    let ids: Vec<String> = g.members.keys().cloned().collect();
    for id in ids {
        let leader = g.is_leader(&id);
        let r = g.current_join_result(&id, leader);
        g.complete_join(&id, r, fx);
        g.reschedule_session(&id, now);
        if let Some(m) = g.members.get_mut(&id) {
            m.is_new = false;
        }
        g.pending_sync.insert(id);
    }
    g.sync_timer = Some((now.saturating_add(g.rebalance_timeout_ms()), g.generation));
}

fn init_next_generation(g: &mut Group, now: i64) {
    g.generation += 1;
    if !g.members.is_empty() {
        g.protocol_name = g.select_protocol();
        g.subscribed_topics = g.compute_subscribed_topics();
        g.transition(GroupState::CompletingRebalance, now);
    } else {
        g.protocol_name = None;
        g.subscribed_topics = g.compute_subscribed_topics();
        g.transition(GroupState::Empty, now);
    }
    g.pending_sync.clear();
}

fn reset_and_propagate_assignment_error(g: &mut Group, error: ErrorCode, now: i64, fx: &mut Vec<Effect>) {
    for m in g.members.values_mut() {
        m.assignment = Bytes::new();
    }
    propagate_assignment(g, Some(error), now, fx);
}

fn propagate_assignment(g: &mut Group, error: Option<ErrorCode>, now: i64, fx: &mut Vec<Effect>) {
    let (ptype, pname) = if error.is_none() { (g.protocol_type.clone(), g.protocol_name.clone()) } else { (None, None) };
    let ids: Vec<String> = g.members.keys().cloned().collect();
    for id in ids {
        let assignment = g.members.get(&id).map(|m| m.assignment.clone()).unwrap_or_default();
        let r = SyncResult { error, protocol_type: ptype.clone(), protocol_name: pname.clone(), assignment };
        if g.complete_sync(&id, r, fx) {
            g.reschedule_session(&id, now);
        }
    }
}

fn remove_pending_sync_member(g: &mut Group, member_id: &str) {
    g.pending_sync.remove(member_id);
    match g.state {
        GroupState::Dead | GroupState::Empty | GroupState::PreparingRebalance => g.sync_timer = None,
        GroupState::CompletingRebalance | GroupState::Stable => {
            if g.pending_sync.is_empty() {
                g.sync_timer = None;
            }
        }
    }
}

fn validate_sync(g: &Group, req: &SyncRequest) -> Result<(), ErrorCode> {
    if g.state == GroupState::Dead {
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    g.validate_member(&req.member_id, req.instance_id.as_deref())?;
    if req.generation != g.generation {
        return Err(ErrorCode::IllegalGeneration);
    }
    let inconsistent = |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(x), Some(y)) if x != y);
    if inconsistent(&req.protocol_type, &g.protocol_type) || inconsistent(&req.protocol_name, &g.protocol_name) {
        return Err(ErrorCode::InconsistentGroupProtocol);
    }
    Ok(())
}

// ---------------------------------------------------------------------- timers

fn next_group_deadline(g: &Group) -> Option<i64> {
    let members = g.members.values().filter_map(|m| m.heartbeat_deadline);
    let pending = g.pending_join.values().copied();
    members.chain(pending).chain(g.join_timer.map(|(d, _)| d)).chain(g.sync_timer.map(|(d, _)| d)).min()
}

#[derive(Debug)]
enum Due {
    Join(JoinTimer),
    Sync(i32),
    Heartbeat(String),
    Pending(String),
}

/// Fires the group's timers that are due, earliest first, until none is.
fn fire_due(g: &mut Group, limits: Limits, now: i64, fx: &mut Vec<Effect>) {
    // Each firing can schedule new timers; a zero delay fires in the same call. The bound only
    // protects against a bug turning this into an endless loop.
    for _ in 0..10_000 {
        let mut best: Option<(i64, Due)> = None;
        let mut consider = |d: i64, due: Due| {
            if d <= now && best.as_ref().is_none_or(|(b, _)| d < *b) {
                best = Some((d, due));
            }
        };
        if let Some((d, t)) = g.join_timer {
            consider(d, Due::Join(t));
        }
        if let Some((d, gen_)) = g.sync_timer {
            consider(d, Due::Sync(gen_));
        }
        for m in g.members.values() {
            if let Some(d) = m.heartbeat_deadline {
                consider(d, Due::Heartbeat(m.id.clone()));
            }
        }
        for (id, d) in &g.pending_join {
            consider(*d, Due::Pending(id.clone()));
        }
        let Some((_, due)) = best else { return };
        match due {
            Due::Join(t) => {
                g.join_timer = None;
                match t {
                    JoinTimer::Initial { delay, remaining } => {
                        if g.new_member_added && remaining != 0 {
                            g.new_member_added = false;
                            let new_delay = limits.initial_rebalance_delay_ms.min(remaining);
                            let new_remaining = (remaining - delay).max(0);
                            g.join_timer = Some((now.saturating_add(new_delay), JoinTimer::Initial { delay: new_delay, remaining: new_remaining }));
                        } else {
                            complete_join_phase(g, now, fx);
                        }
                    }
                    JoinTimer::Rebalance => complete_join_phase(g, now, fx),
                }
            }
            Due::Sync(generation) => {
                g.sync_timer = None;
                if generation == g.generation && matches!(g.state, GroupState::CompletingRebalance | GroupState::Stable) && !g.pending_sync.is_empty() {
                    let missing: Vec<String> = g.pending_sync.iter().cloned().collect();
                    tracing::info!(group = %g.id, members = ?missing, "removing members that did not send SyncGroup in time");
                    for id in &missing {
                        g.remove(id, fx);
                    }
                    prepare_rebalance(g, limits, now, fx);
                }
            }
            Due::Pending(id) => {
                g.pending_join.remove(&id);
                if g.state == GroupState::PreparingRebalance && g.has_all_members_joined() {
                    complete_join_phase(g, now, fx);
                }
            }
            Due::Heartbeat(id) => {
                let Some(m) = g.members.get_mut(&id) else { continue };
                m.heartbeat_deadline = None;
                if m.has_satisfied_heartbeat() {
                    continue;
                }
                tracing::info!(group = %g.id, member = %id, "member session expired; removing it");
                g.remove(&id, fx);
                match g.state {
                    GroupState::Stable | GroupState::CompletingRebalance => maybe_prepare_rebalance_or_complete_join(g, limits, now, fx),
                    GroupState::PreparingRebalance if g.has_all_members_joined() => complete_join_phase(g, now, fx),
                    _ => {}
                }
            }
        }
    }
    tracing::error!(group = %g.id, "group timers did not settle");
}

#[cfg(test)]
mod tests;

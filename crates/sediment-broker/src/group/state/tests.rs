//! The membership state machine driven by hand: every test owns the clock (`now`), so session,
//! rebalance, initial-delay and sync timeouts are exact and instant.

use super::*;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

/// A consumer protocol subscription (v0) to `topics`.
fn sub(topics: &[&str]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

fn protos(names: &[&str]) -> Vec<Protocol> {
    names.iter().map(|n| Protocol { name: n.to_string(), metadata: sub(&["t"]) }).collect()
}

fn join_req(member: &str, instance: Option<&str>, version: i16) -> JoinRequest {
    JoinRequest {
        member_id: member.to_string(),
        instance_id: instance.map(str::to_string),
        protocol_type: "consumer".into(),
        protocols: protos(&["range"]),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        api_version: version,
    }
}

struct Harness {
    groups: Groups,
    now: i64,
    next_waiter: Waiter,
    suffix: u64,
}

impl Harness {
    fn new(delay: i64) -> Harness {
        Harness { groups: Groups::new(Limits { initial_rebalance_delay_ms: delay, ..Limits::default() }), now: 1_000_000, next_waiter: 1, suffix: 0 }
    }

    fn join(&mut self, req: JoinRequest) -> (Waiter, Vec<Effect>) {
        let w = self.next_waiter;
        self.next_waiter += 1;
        self.suffix += 1;
        let fx = self.groups.join("g", req, w, &format!("u{}", self.suffix), self.now);
        (w, fx)
    }

    /// A full v5+ style join of a new dynamic member (MEMBER_ID_REQUIRED first); returns its
    /// member id and the effects of the second join.
    fn join_new(&mut self) -> (String, Waiter, Vec<Effect>) {
        let (w, fx) = self.join(join_req("", None, 9));
        let r = join_result(&fx, w).expect("immediate answer");
        assert_eq!(r.error, Some(ErrorCode::MemberIdRequired));
        let id = r.member_id.clone();
        let (w, fx) = self.join(join_req(&id, None, 9));
        (id, w, fx)
    }

    fn sync(&mut self, member: &str, generation: i32, assignments: Vec<(&str, &str)>) -> (Waiter, Vec<Effect>) {
        let w = self.next_waiter;
        self.next_waiter += 1;
        let req = SyncRequest {
            member_id: member.to_string(),
            instance_id: None,
            generation,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments.into_iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
        };
        let fx = self.groups.sync("g", req, w, self.now);
        (w, fx)
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> Result<(), ErrorCode> {
        self.groups.heartbeat("g", member, None, generation, self.now)
    }

    fn advance(&mut self, ms: i64) -> Vec<Effect> {
        self.now += ms;
        self.groups.tick(self.now)
    }

    /// Completes every Persist effect successfully; returns the effects that follow.
    fn persist_all(&mut self, fx: &[Effect]) -> Vec<Effect> {
        let mut out = Vec::new();
        for e in fx {
            if let Effect::Persist { group, token, .. } = e {
                out.extend(self.groups.persisted(group, token.clone(), None, self.now));
            }
        }
        out
    }

    fn group(&self) -> &Group {
        self.groups.get("g").expect("group exists")
    }
}

fn join_result(fx: &[Effect], waiter: Waiter) -> Option<JoinResult> {
    fx.iter().find_map(|e| match e {
        Effect::Join { waiter: w, result } if *w == waiter => Some(result.clone()),
        _ => None,
    })
}

fn sync_result(fx: &[Effect], waiter: Waiter) -> Option<SyncResult> {
    fx.iter().find_map(|e| match e {
        Effect::Sync { waiter: w, result } if *w == waiter => Some(result.clone()),
        _ => None,
    })
}

fn persisted_values(fx: &[Effect]) -> Vec<Option<GroupValue>> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Persist { value, .. } => Some(value.clone()),
            _ => None,
        })
        .collect()
}

/// One member, joined and synced: the group is Stable at generation 1.
fn stable_one(h: &mut Harness) -> String {
    let (id, w, fx) = h.join_new();
    let r = join_result(&fx, w).expect("a new group's first member is answered at once (delay 0)");
    assert_eq!(r.error, None);
    assert_eq!((r.generation, r.leader.as_str()), (1, id.as_str()));
    assert_eq!(r.members.len(), 1);
    let (sw, fx) = h.sync(&id, 1, vec![(&id, "a0")]);
    let after = h.persist_all(&fx);
    assert_eq!(sync_result(&after, sw).unwrap().assignment, Bytes::from("a0"));
    assert_eq!(h.group().state(), GroupState::Stable);
    id
}

#[test]
fn first_member_needs_a_member_id_then_gets_generation_one_at_once() {
    let mut h = Harness::new(0);
    let (w, fx) = h.join(join_req("", None, 4));
    let r = join_result(&fx, w).unwrap();
    assert_eq!(r.error, Some(ErrorCode::MemberIdRequired));
    assert!(r.member_id.starts_with("client-"));
    // v3 clients are added directly
    let mut h3 = Harness::new(0);
    let (w, fx) = h3.join(join_req("", None, 3));
    let r = join_result(&fx, w).unwrap();
    assert_eq!((r.error, r.generation), (None, 1));
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    stable_one(&mut Harness::new(0));
}

#[test]
fn initial_delay_collects_members_and_extends_once_per_newcomer() {
    let mut h = Harness::new(3000);
    let (a, wa, fx) = h.join_new();
    assert!(join_result(&fx, wa).is_none(), "parked during the initial delay");
    assert_eq!(h.group().state(), GroupState::PreparingRebalance);
    h.advance(1000);
    let (b, wb, fx) = h.join_new();
    assert!(join_result(&fx, wb).is_none());
    // the first delay ends, but a member joined during it: extended by another delay
    let fx = h.advance(2000);
    assert!(fx.is_empty(), "{fx:?}");
    let fx = h.advance(3000);
    let ra = join_result(&fx, wa).unwrap();
    let rb = join_result(&fx, wb).unwrap();
    assert_eq!((ra.generation, rb.generation), (1, 1));
    assert_eq!(ra.leader, a);
    assert_eq!(ra.members.len(), 2, "the leader gets every member");
    assert!(rb.members.is_empty());
    assert_eq!(rb.member_id, b);
}

#[test]
fn a_newcomer_rebalances_a_stable_group_and_old_members_learn_by_heartbeat() {
    let mut h = Harness::new(0);
    let a = stable_one(&mut h);
    let (b, wb, fx) = h.join_new();
    assert!(join_result(&fx, wb).is_none(), "waits for the existing member to rejoin");
    assert_eq!(h.group().state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&a, 1), Err(ErrorCode::RebalanceInProgress));
    let (wa, fx) = h.join(join_req(&a, None, 9));
    let ra = join_result(&fx, wa).unwrap();
    let rb = join_result(&fx, wb).unwrap();
    assert_eq!((ra.generation, rb.generation), (2, 2));
    assert_eq!(ra.leader, a, "the old leader stays leader");
    assert_eq!(h.group().state(), GroupState::CompletingRebalance);
    // commits in CompletingRebalance are refused until SyncGroup completes
    assert_eq!(h.groups.validate_offset_commit("g", &a, None, 2, 8, h.now), Err(ErrorCode::RebalanceInProgress));
    let (sb, fx) = h.sync(&b, 2, vec![]);
    assert!(fx.is_empty(), "a follower waits for the leader");
    let (sa, fx) = h.sync(&a, 2, vec![(&a, "x"), (&b, "y")]);
    assert_eq!(persisted_values(&fx).len(), 1);
    assert!(sync_result(&fx, sa).is_none(), "assignment is released only once persisted");
    let fx = h.persist_all(&fx);
    assert_eq!(sync_result(&fx, sa).unwrap().assignment, Bytes::from("x"));
    assert_eq!(sync_result(&fx, sb).unwrap().assignment, Bytes::from("y"));
    assert_eq!(h.group().state(), GroupState::Stable);
    assert_eq!(h.heartbeat(&b, 2), Ok(()));
    assert_eq!(h.heartbeat(&b, 1), Err(ErrorCode::IllegalGeneration));
    assert_eq!(h.groups.validate_offset_commit("g", &b, None, 2, 8, h.now), Ok(()));
    assert_eq!(h.groups.validate_offset_commit("g", &b, None, 1, 8, h.now), Err(ErrorCode::IllegalGeneration));
}

#[test]
fn session_expiry_removes_a_silent_member_and_rebalances() {
    let mut h = Harness::new(0);
    let a = stable_one(&mut h);
    let (b, wb, _) = h.join_new();
    let (wa, fx) = h.join(join_req(&a, None, 9));
    assert!(join_result(&fx, wa).is_some() && join_result(&fx, wb).is_some());
    let (_, fx) = h.sync(&a, 2, vec![(&a, "x"), (&b, "y")]);
    h.persist_all(&fx);
    // a keeps heartbeating, b goes silent
    for _ in 0..3 {
        h.advance(3000);
        assert_eq!(h.heartbeat(&a, 2), Ok(()));
    }
    assert!(h.group().member(&b).is_some());
    h.advance(2000);
    assert!(h.group().member(&b).is_none(), "b expired after its session timeout");
    assert_eq!(h.group().state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&b, 2), Err(ErrorCode::UnknownMemberId));
    assert_eq!(h.heartbeat(&a, 2), Err(ErrorCode::RebalanceInProgress));
    let (wa, fx) = h.join(join_req(&a, None, 9));
    let r = join_result(&fx, wa).unwrap();
    assert_eq!((r.generation, r.members.len()), (3, 1));
}

#[test]
fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_dropped() {
    let mut h = Harness::new(0);
    let a = stable_one(&mut h);
    let (_b, wb, _) = h.join_new();
    // a keeps heartbeating (alive) but never rejoins: the join phase ends at the rebalance timeout
    let mut done = Vec::new();
    for _ in 0..(REBALANCE / 3000 + 1) {
        done.extend(h.advance(3000));
        let _ = h.heartbeat(&a, 1);
    }
    let rb = join_result(&done, wb).expect("completed by the rebalance timeout");
    assert_eq!((rb.error, rb.generation, rb.members.len()), (None, 2, 1));
    assert!(h.group().member(&a).is_none());
    assert_eq!(h.group().leader(), Some(rb.member_id.as_str()));
}

#[test]
fn a_pending_member_that_never_rejoins_expires() {
    let mut h = Harness::new(0);
    let a = stable_one(&mut h);
    let (w, fx) = h.join(join_req("", None, 9));
    assert_eq!(join_result(&fx, w).unwrap().error, Some(ErrorCode::MemberIdRequired));
    // the pending member does not trigger a rebalance by itself
    assert_eq!(h.group().state(), GroupState::Stable);
    assert_eq!(h.heartbeat(&a, 1), Ok(()));
    for _ in 0..4 {
        h.advance(SESSION as i64 / 3);
        assert_eq!(h.heartbeat(&a, 1), Ok(()));
    }
    assert_eq!(h.group().num_members(), 1);
    // the expired pending id is unknown now
    let (w, fx) = h.join(join_req(&join_result(&fx, w).unwrap().member_id, None, 9));
    assert_eq!(join_result(&fx, w).unwrap().error, Some(ErrorCode::UnknownMemberId));
}

#[test]
fn followers_that_never_sync_are_removed_after_the_rebalance_timeout() {
    let mut h = Harness::new(0);
    let a = stable_one(&mut h);
    let (b, _, _) = h.join_new();
    let (_, _) = h.join(join_req(&a, None, 9));
    let (_, fx) = h.sync(&a, 2, vec![(&a, "x"), (&b, "y")]);
    h.persist_all(&fx);
    assert_eq!(h.group().state(), GroupState::Stable);
    // b got its join response but never sends SyncGroup (it heartbeats, so the session lives)
    for _ in 0..(REBALANCE / 3000 + 1) {
        h.advance(3000);
        let _ = h.heartbeat(&a, 2);
        let _ = h.heartbeat(&b, 2);
    }
    assert!(h.group().member(&b).is_none());
    assert_eq!(h.group().state(), GroupState::PreparingRebalance);
}

#[test]
fn protocol_selection_and_inconsistent_protocols() {
    let mut h = Harness::new(0);
    let mut r1 = join_req("", None, 3);
    r1.protocols = protos(&["range", "roundrobin"]);
    let (w1, fx) = h.join(r1);
    let a = join_result(&fx, w1).unwrap().member_id;
    assert_eq!(h.group().protocol_name(), Some("range"));
    let (_, fx) = h.sync(&a, 1, vec![]);
    h.persist_all(&fx);
    // a member supporting no protocol every member has
    let mut bad = join_req("", None, 3);
    bad.protocols = protos(&["sticky"]);
    let (w, fx) = h.join(bad);
    assert_eq!(join_result(&fx, w).unwrap().error, Some(ErrorCode::InconsistentGroupProtocol));
    // another protocol type
    let mut bad = join_req("", None, 3);
    bad.protocol_type = "connect".into();
    let (w, fx) = h.join(bad);
    assert_eq!(join_result(&fx, w).unwrap().error, Some(ErrorCode::InconsistentGroupProtocol));
    // two members prefer roundrobin: it wins the vote
    let mut r2 = join_req("", None, 3);
    r2.protocols = protos(&["roundrobin", "range"]);
    let (w2, _) = h.join(r2);
    let mut r3 = join_req("", None, 3);
    r3.protocols = protos(&["roundrobin", "range"]);
    let (w3, _) = h.join(r3);
    let mut again = join_req(&a, None, 3);
    again.protocols = protos(&["range", "roundrobin"]);
    let (w1, fx) = h.join(again);
    for w in [w1, w2, w3] {
        let r = join_result(&fx, w).unwrap();
        assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(r.generation, 2);
    }
    // an empty protocol list cannot start a group
    let mut h = Harness::new(0);
    let mut empty = join_req("", None, 3);
    empty.protocols.clear();
    let (w, fx) = h.join(empty);
    assert_eq!(join_result(&fx, w).unwrap().error, Some(ErrorCode::InconsistentGroupProtocol));
}

#[test]
fn static_member_restart_keeps_the_generation_and_fences_the_old_id() {
    let mut h = Harness::new(0);
    let (w, fx) = h.join(join_req("", Some("ia"), 9));
    let a = join_result(&fx, w).unwrap();
    assert_eq!(a.error, None, "static members skip MEMBER_ID_REQUIRED");
    let a = a.member_id;
    let (b, wb, _) = h.join_new();
    let (wa, fx) = h.join(join_req(&a, Some("ia"), 9));
    assert!(join_result(&fx, wa).is_some() && join_result(&fx, wb).is_some());
    let (_, fx) = h.sync(&a, 2, vec![(&a, "pa"), (&b, "pb")]);
    h.persist_all(&fx);
    assert_eq!(h.group().generation(), 2);
    // the static member's process restarts: new join, no member id, same instance id
    h.advance(1000);
    let (w, fx) = h.join(join_req("", Some("ia"), 9));
    assert!(join_result(&fx, w).is_none(), "answered once the new member id is persisted");
    assert_eq!(persisted_values(&fx).len(), 1);
    let fx = h.persist_all(&fx);
    let r = join_result(&fx, w).unwrap();
    assert_eq!(r.error, None);
    assert_ne!(r.member_id, a);
    assert_eq!(r.generation, 2, "no rebalance");
    assert!(r.skip_assignment, "the leader (v9) keeps its assignment");
    assert_eq!(h.group().state(), GroupState::Stable);
    let new_a = r.member_id.clone();
    // the other member notices nothing
    assert_eq!(h.heartbeat(&b, 2), Ok(()));
    // the old incarnation is fenced
    assert_eq!(h.groups.heartbeat("g", &a, Some("ia"), 2, h.now), Err(ErrorCode::FencedInstanceId));
    assert_eq!(h.groups.validate_offset_commit("g", &a, Some("ia"), 2, 8, h.now), Err(ErrorCode::FencedInstanceId));
    // the new one syncs and gets its old assignment back
    let w = h.next_waiter;
    h.next_waiter += 1;
    let fx = h.groups.sync(
        "g",
        SyncRequest { member_id: new_a.clone(), instance_id: Some("ia".into()), generation: 2, protocol_type: None, protocol_name: None, assignments: vec![] },
        w,
        h.now,
    );
    assert_eq!(sync_result(&fx, w).unwrap().assignment, Bytes::from("pa"));
    assert_eq!(h.groups.heartbeat("g", &new_a, Some("ia"), 2, h.now), Ok(()));
}

#[test]
fn static_member_rejoining_with_another_protocol_rebalances() {
    let mut h = Harness::new(0);
    let mut r = join_req("", Some("ia"), 9);
    r.protocols = protos(&["range", "roundrobin"]);
    let (w, fx) = h.join(r);
    let a = join_result(&fx, w).unwrap().member_id;
    let (_, fx) = h.sync(&a, 1, vec![]);
    h.persist_all(&fx);
    let mut r = join_req("", Some("ia"), 9);
    r.protocols = protos(&["roundrobin"]);
    let (w, fx) = h.join(r);
    let res = join_result(&fx, w).unwrap();
    assert_eq!((res.generation, res.protocol_name.as_deref()), (2, Some("roundrobin")));
}

#[test]
fn a_static_member_outlives_a_missed_rebalance_until_its_session_ends() {
    let mut h = Harness::new(0);
    let (w, fx) = h.join(join_req("", Some("ia"), 9));
    let a = join_result(&fx, w).unwrap().member_id;
    let (_, fx) = h.sync(&a, 1, vec![]);
    h.persist_all(&fx);
    let (b, wb, _) = h.join_new();
    // a is static: at the rebalance timeout it is kept (not removed like a dynamic member)
    let mut fx = Vec::new();
    for _ in 0..(REBALANCE / 3000 + 1) {
        fx.extend(h.advance(3000));
        let _ = h.groups.heartbeat("g", &a, Some("ia"), 1, h.now);
    }
    let rb = join_result(&fx, wb).expect("b completes at the rebalance timeout");
    assert_eq!(rb.leader, b, "the leader that did not rejoin is replaced");
    assert!(h.group().member(&a).is_some());
}

#[test]
fn leaving_rebalances_and_the_last_member_empties_the_group() {
    let mut h = Harness::new(0);
    let a = stable_one(&mut h);
    let (b, _, _) = h.join_new();
    let (_, _) = h.join(join_req(&a, None, 9));
    let (_, fx) = h.sync(&a, 2, vec![]);
    h.persist_all(&fx);
    let (r, _) = h.groups.leave("g", &[(b.clone(), None), ("ghost".into(), None)], h.now);
    assert_eq!(r.unwrap(), vec![None, Some(ErrorCode::UnknownMemberId)]);
    assert_eq!(h.group().state(), GroupState::PreparingRebalance);
    let (r, fx) = h.groups.leave("g", &[(a.clone(), None)], h.now);
    assert_eq!(r.unwrap(), vec![None]);
    assert_eq!(h.group().state(), GroupState::Empty);
    assert_eq!(h.group().generation(), 3);
    let values = persisted_values(&fx);
    assert_eq!(values.len(), 1);
    assert!(values[0].as_ref().unwrap().members.is_empty());
    assert_eq!(h.groups.validate_delete("g"), Ok(()));
    let (r, _) = h.groups.leave("nope", &[(a, None)], h.now);
    assert_eq!(r, Err(ErrorCode::UnknownMemberId));
}

#[test]
fn admin_removes_a_static_member_by_instance_id() {
    let mut h = Harness::new(0);
    let (w, fx) = h.join(join_req("", Some("ia"), 9));
    let a = join_result(&fx, w).unwrap().member_id;
    let (_, fx) = h.sync(&a, 1, vec![]);
    h.persist_all(&fx);
    let (r, _) = h.groups.leave("g", &[(String::new(), Some("ia".into())), (String::new(), Some("other".into()))], h.now);
    assert_eq!(r.unwrap(), vec![None, Some(ErrorCode::UnknownMemberId)]);
    assert_eq!(h.group().state(), GroupState::Empty);
}

#[test]
fn error_codes_match_kafka() {
    let mut h = Harness::new(0);
    assert_eq!(h.heartbeat("m", 0), Err(ErrorCode::UnknownMemberId), "unknown group");
    let (w, fx) = h.sync("m", 0, vec![]);
    assert_eq!(sync_result(&fx, w).unwrap().error, Some(ErrorCode::UnknownMemberId));
    let (w, fx) = h.join(join_req("someone", None, 9));
    assert_eq!(join_result(&fx, w).unwrap().error, Some(ErrorCode::UnknownMemberId), "a member id for a group that does not exist");
    assert!(h.groups.get("g").is_none());
    // commits to a group that does not exist
    assert_eq!(h.groups.validate_offset_commit("g", "m", None, 3, 8, h.now), Err(ErrorCode::IllegalGeneration));
    assert_eq!(h.groups.validate_offset_commit("g", "m", None, 3, 9, h.now), Err(ErrorCode::GroupIdNotFound));
    assert_eq!(h.groups.validate_delete("g"), Err(ErrorCode::GroupIdNotFound));
    // an admin (generation -1) commit creates a simple group
    assert_eq!(h.groups.validate_offset_commit("g", "", None, -1, 8, h.now), Ok(()));
    assert_eq!(h.group().state(), GroupState::Empty);
    assert_eq!(h.group().protocol_type(), None);
    let a = stable_one(&mut h);
    assert_eq!(h.groups.validate_offset_commit("g", "", None, -1, 8, h.now), Err(ErrorCode::UnknownMemberId));
    assert_eq!(h.groups.validate_offset_commit("g", "x", None, 1, 8, h.now), Err(ErrorCode::UnknownMemberId));
    assert_eq!(h.groups.validate_offset_commit("g", &a, Some("nope"), 1, 8, h.now), Err(ErrorCode::UnknownMemberId));
    assert_eq!(h.groups.validate_delete("g"), Err(ErrorCode::NonEmptyGroup));
    let (w, fx) = h.sync(&a, 7, vec![]);
    assert_eq!(sync_result(&fx, w).unwrap().error, Some(ErrorCode::IllegalGeneration));
    // SyncGroup during PreparingRebalance
    let (_b, _, _) = h.join_new();
    let (w, fx) = h.sync(&a, 1, vec![]);
    assert_eq!(sync_result(&fx, w).unwrap().error, Some(ErrorCode::RebalanceInProgress));
    // commits during PreparingRebalance with the current generation are fine
    assert_eq!(h.groups.validate_offset_commit("g", &a, None, 1, 8, h.now), Ok(()));
}

#[test]
fn leader_rejoin_in_stable_rebalances_but_follower_with_same_metadata_does_not() {
    let mut h = Harness::new(0);
    let a = stable_one(&mut h);
    let (b, _, _) = h.join_new();
    let (_, _) = h.join(join_req(&a, None, 9));
    let (_, fx) = h.sync(&a, 2, vec![]);
    h.persist_all(&fx);
    let (w, fx) = h.join(join_req(&b, None, 9));
    let r = join_result(&fx, w).unwrap();
    assert_eq!((r.error, r.generation), (None, 2));
    assert_eq!(h.group().state(), GroupState::Stable);
    // cooperative rebalancing: a member rejoins with new metadata (its owned partitions) while
    // the other keeps its assignment until it learns of the rebalance by heartbeat
    let mut changed = join_req(&b, None, 9);
    changed.protocols[0].metadata = sub(&["t", "u"]);
    let (wb, fx) = h.join(changed);
    assert!(join_result(&fx, wb).is_none());
    assert_eq!(h.heartbeat(&a, 2), Err(ErrorCode::RebalanceInProgress));
    assert_eq!(h.groups.validate_offset_commit("g", &a, None, 2, 8, h.now), Ok(()), "may commit what it still owns");
    let (wa, fx) = h.join(join_req(&a, None, 9));
    assert_eq!(join_result(&fx, wa).unwrap().generation, 3);
    assert_eq!(join_result(&fx, wb).unwrap().generation, 3);
    assert!(h.group().is_subscribed_to("u") && h.group().is_subscribed_to("t") && !h.group().is_subscribed_to("v"));
}

#[test]
fn loaded_groups_are_stable_and_expire_members_that_do_not_come_back() {
    let mut h = Harness::new(0);
    let value = GroupValue {
        protocol_type: "consumer".into(),
        generation: 7,
        protocol: Some("range".into()),
        leader: Some("m1".into()),
        state_timestamp: 5,
        members: vec![
            MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: REBALANCE,
                session_timeout_ms: SESSION,
                subscription: sub(&["t"]),
                assignment: Bytes::from("p1"),
            },
            MemberValue {
                member_id: "m2".into(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: REBALANCE,
                session_timeout_ms: SESSION,
                subscription: sub(&["t"]),
                assignment: Bytes::from("p2"),
            },
        ],
    };
    h.groups.load("g", Some(value.clone()), h.now);
    assert_eq!(h.group().state(), GroupState::Stable);
    assert_eq!(h.group().generation(), 7);
    assert_eq!(h.group().to_value(None).members, value.members);
    // the dynamic member's connection survived the broker restart: it just keeps heartbeating
    assert_eq!(h.heartbeat("m2", 7), Ok(()));
    // the static member restarted too: it replaces its old id without a rebalance
    let mut r = join_req("", Some("i1"), 9);
    r.protocols = protos(&["range", "cooperative-sticky"]);
    let (w, fx) = h.join(r);
    let fx = h.persist_all(&fx);
    let res = join_result(&fx, w).unwrap();
    assert_eq!((res.error, res.generation), (None, 7));
    // a dynamic member that never comes back expires
    h.advance(SESSION as i64 / 2);
    assert_eq!(h.groups.heartbeat("g", &res.member_id, Some("i1"), 7, h.now), Ok(()));
    h.advance(SESSION as i64 / 2 + 1);
    assert!(h.group().member("m2").is_none());
    assert_eq!(h.group().state(), GroupState::PreparingRebalance);
    h.groups.load("g", None, h.now);
    assert!(h.groups.get("g").is_none());
}

#[test]
fn next_deadline_tracks_the_earliest_timer() {
    let mut h = Harness::new(0);
    assert_eq!(h.groups.next_deadline(), None);
    let a = stable_one(&mut h);
    assert_eq!(h.groups.next_deadline(), Some(h.now + SESSION as i64));
    h.advance(1000);
    assert_eq!(h.heartbeat(&a, 1), Ok(()));
    assert_eq!(h.groups.next_deadline(), Some(h.now + SESSION as i64));
}

#[test]
fn subscription_parsing() {
    assert_eq!(parse_subscription_topics(&sub(&["a", "b"])), Some(vec!["a".to_string(), "b".to_string()]));
    assert_eq!(parse_subscription_topics(&[0, 1]), None);
    assert_eq!(parse_subscription_topics(&[]), None);
}

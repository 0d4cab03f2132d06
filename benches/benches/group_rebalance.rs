//! The group membership state machine (`sediment_broker::group::state`), in memory: the CPU cost
//! of a full rebalance of a 10-member group (every member rejoins, the leader syncs, the
//! assignment is persisted and released) and of heartbeats. End-to-end numbers over TCP, with
//! fsync, come from `benches/groups_bench.py`.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use sediment_broker::group::state::{Effect, Groups, JoinRequest, Limits, Protocol, SyncRequest};

fn join_req(member: &str, meta: u8) -> JoinRequest {
    JoinRequest {
        member_id: member.to_string(),
        instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol { name: "range".into(), metadata: Bytes::from(vec![0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, meta]) }],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        client_id: "bench".into(),
        client_host: "/127.0.0.1".into(),
        api_version: 3,
    }
}

/// A Stable group of 10 members; returns the member ids and the generation.
fn stable_group(groups: &mut Groups, now: i64) -> (Vec<String>, i32) {
    // member ids are "<client id>-<suffix>"
    let ids: Vec<String> = (0..10).map(|i| format!("bench-m{i}")).collect();
    for i in 0..10u64 {
        groups.join("g", join_req("", 0), i + 1, &format!("m{i}"), now);
    }
    let gen_ = rebalance(groups, &ids, 1, now);
    (ids, gen_)
}

/// Every member rejoins (the first with changed metadata), the leader syncs, the record is
/// persisted. Returns the new generation.
fn rebalance(groups: &mut Groups, ids: &[String], meta: u8, now: i64) -> i32 {
    let mut generation = -1;
    let mut leader = String::new();
    for (i, id) in ids.iter().enumerate() {
        let fx = groups.join("g", join_req(id, if i == 0 { meta } else { 0 }), 100 + i as u64, "x", now);
        for e in fx {
            if let Effect::Join { result, .. } = e {
                generation = result.generation;
                leader = result.leader;
            }
        }
    }
    let assignments: Vec<(String, Bytes)> = ids.iter().map(|m| (m.clone(), Bytes::from_static(b"assignment"))).collect();
    let fx =
        groups.sync("g", SyncRequest { member_id: leader, instance_id: None, generation, protocol_type: None, protocol_name: None, assignments }, 999, now);
    for e in fx {
        if let Effect::Persist { group, token, .. } = e {
            groups.persisted(&group, token, None, now);
        }
    }
    generation
}

fn bench(c: &mut Criterion) {
    let now = 1_000_000;
    c.bench_function("group/rebalance_10_members", |b| {
        let mut groups = Groups::new(Limits::default());
        let (ids, _) = stable_group(&mut groups, now);
        let mut meta = 0u8;
        let mut last = groups.get("g").map(|g| g.generation()).unwrap_or_default();
        b.iter(|| {
            meta = meta.wrapping_add(1);
            let generation = rebalance(&mut groups, &ids, meta, now);
            assert_eq!(generation, last + 1, "every iteration is a full rebalance");
            last = generation;
            generation
        });
    });
    c.bench_function("group/heartbeat", |b| {
        let mut groups = Groups::new(Limits::default());
        let (ids, generation) = stable_group(&mut groups, now);
        b.iter(|| groups.heartbeat("g", &ids[3], None, generation, now));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(1)).warm_up_time(std::time::Duration::from_millis(300));
    targets = bench
}
criterion_main!(benches);

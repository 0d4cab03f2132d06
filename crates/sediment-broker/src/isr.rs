//! In-sync replicas (Kafka's ISR), as a partition's leader sees them.
//!
//! Kafka counts a follower in sync while it keeps reaching, within `replica.lag.time.max.ms`,
//! the log end the leader had when it asked. Raft gives the leader each voter's matched index
//! instead of fetch requests, so the leader remembers where its own log ended over the last
//! lag bound ([`Progress`]): a member of the ISR stays while its broker is alive (liveness
//! beats) and its matched index has reached the leader's log end of `lag` ago; a replica out
//! of it rejoins once its matched index reaches the high watermark. A dead broker drops out as
//! soon as its beats stop; a live one that falls behind, after `lag`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the leader's log ended, sampled over time (oldest first).
#[derive(Default)]
pub struct Progress {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Progress {
    /// Records that the leader's log ends at `last_index` at `now`; keeps what answers
    /// [`Progress::index_at`] for times up to `keep` ago.
    pub fn record(&self, now: Instant, last_index: u64, keep: Duration) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.back().is_none_or(|(_, i)| *i != last_index) {
            s.push_back((now, last_index));
        }
        // keep the newest sample at or before the horizon: it answers for everything older
        let horizon = now.checked_sub(keep);
        while let Some(h) = horizon
            && s.len() > 1
            && s[1].0 <= h
        {
            s.pop_front();
        }
    }

    /// The leader's log end as of `at`: the newest sample at or before it (0 before the first,
    /// so a leader that just took over counts every voter in sync until the bound has passed).
    pub fn index_at(&self, at: Instant) -> u64 {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().take_while(|(t, _)| *t <= at).last().map_or(0, |(_, i)| *i)
    }

    /// Forgets the samples (a new term: the log ends of an earlier leadership say nothing).
    pub fn reset(&self) {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// What the leader knows when it recomputes its ISR.
pub struct View<'a> {
    pub leader: u64,
    /// The ISR as last committed (the leader included or not).
    pub current: &'a [u64],
    /// The leader's log end `lag` ago ([`Progress::index_at`]).
    pub bound: u64,
    /// The leader's high watermark now (its applied index).
    pub committed: u64,
}

/// The in-sync voters among `matched` (voter, index its log matches the leader's up to), in
/// the order given, as Kafka keeps its ISR: a member stays while its broker is alive and its
/// log reached `bound`; anyone else joins once alive and caught up with the high watermark.
/// The leader itself is always in.
pub fn in_sync(view: &View<'_>, matched: impl IntoIterator<Item = (u64, u64)>, alive: impl Fn(u64) -> bool) -> Vec<u64> {
    matched
        .into_iter()
        .filter(|&(id, index)| id == view.leader || (alive(id) && if view.current.contains(&id) { index >= view.bound } else { index >= view.committed }))
        .map(|(id, _)| id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_where_the_log_ended_lag_ago() {
        let p = Progress::default();
        let t0 = Instant::now();
        let keep = Duration::from_secs(30);
        assert_eq!(p.index_at(t0), 0);
        p.record(t0, 10, keep);
        p.record(t0 + Duration::from_secs(10), 50, keep);
        p.record(t0 + Duration::from_secs(20), 50, keep); // unchanged: no new sample
        assert_eq!(p.index_at(t0 + Duration::from_secs(5)), 10);
        p.record(t0 + Duration::from_secs(40), 90, keep);
        assert_eq!(p.index_at(t0 + Duration::from_secs(39)), 50);
        assert_eq!(p.index_at(t0 + Duration::from_secs(41)), 90);
        // pruning keeps the sample that answers for the horizon
        p.record(t0 + Duration::from_secs(100), 95, keep);
        assert_eq!(p.index_at(t0 + Duration::from_secs(70)), 90);
        p.reset();
        assert_eq!(p.index_at(t0 + Duration::from_secs(100)), 0);
    }

    #[test]
    fn members_stay_while_within_the_lag_and_others_join_once_caught_up() {
        let alive = |id: u64| id != 3;
        let view = View { leader: 1, current: &[1, 2, 3], bound: 80, committed: 100 };
        // 2 reached the bound; 3 is dead; 4 is not a member and behind the high watermark
        let matched = [(1, 100), (2, 80), (3, 100), (4, 99), (5, 100)];
        assert_eq!(in_sync(&view, matched, alive), vec![1, 2, 5]);
        let view = View { current: &[1], ..view };
        assert_eq!(in_sync(&view, [(1, 0), (2, 80), (5, 100)], alive), vec![1, 5], "2 rejoins only once caught up");
    }
}

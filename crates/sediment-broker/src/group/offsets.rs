//! Committed offsets of one coordinator shard.
//!
//! A commit is visible (OffsetFetch) only once its record is durable in `__consumer_offsets`:
//! writes are staged in log order with the offset their batch ends at, and
//! [`OffsetStore::apply_durable`] moves every staged write the high watermark has passed into
//! the committed map, in log order. Two commits of the same partition therefore land in the
//! order their records were appended, whichever response future runs first.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::records::OffsetValue;

#[derive(Debug, Clone)]
struct Staged {
    /// The offset after the batch holding the write: durable once the high watermark reaches it.
    end: i64,
    group: String,
    topic: String,
    partition: i32,
    /// None: delete (tombstone).
    value: Option<OffsetValue>,
}

/// Offsets by group, then (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), OffsetValue>;

#[derive(Debug, Default)]
pub struct OffsetStore {
    committed: HashMap<String, GroupOffsets>,
    staged: VecDeque<Staged>,
}

impl OffsetStore {
    /// Stages a write whose record ends at `end` in the log.
    pub fn stage(&mut self, end: i64, group: &str, topic: &str, partition: i32, value: Option<OffsetValue>) {
        debug_assert!(self.staged.back().is_none_or(|s| s.end <= end), "writes are staged in log order");
        self.staged.push_back(Staged { end, group: group.to_string(), topic: topic.to_string(), partition, value });
    }

    /// Applies every staged write below the high watermark `hw`, in log order.
    pub fn apply_durable(&mut self, hw: i64) {
        while self.staged.front().is_some_and(|s| s.end <= hw) {
            let s = self.staged.pop_front().expect("checked above");
            self.apply(&s.group, &s.topic, s.partition, s.value);
        }
    }

    /// Applies a write directly (log replay at start-up).
    pub fn apply(&mut self, group: &str, topic: &str, partition: i32, value: Option<OffsetValue>) {
        match value {
            Some(v) => {
                self.committed.entry(group.to_string()).or_default().insert((topic.to_string(), partition), v);
            }
            None => {
                if let Some(g) = self.committed.get_mut(group) {
                    g.remove(&(topic.to_string(), partition));
                    if g.is_empty() {
                        self.committed.remove(group);
                    }
                }
            }
        }
    }

    /// Discards staged writes (their append failed).
    pub fn unstage_from(&mut self, end: i64) {
        while self.staged.back().is_some_and(|s| s.end >= end) {
            self.staged.pop_back();
        }
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.committed.get(group)?.get(&(topic.to_string(), partition))
    }

    /// The committed offsets of a group.
    pub fn group(&self, group: &str) -> Option<&GroupOffsets> {
        self.committed.get(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.committed.keys()
    }

    /// The end of the last staged write of `group`, if it has writes not yet durable.
    pub fn pending_end(&self, group: &str) -> Option<i64> {
        self.staged.iter().rev().find(|s| s.group == group).map(|s| s.end)
    }

    /// Every (topic, partition) the group has an offset for, committed or staged (what a
    /// DeleteGroups must tombstone).
    pub fn keys_including_staged(&self, group: &str) -> BTreeSet<(String, i32)> {
        let mut keys: BTreeSet<(String, i32)> = self.committed.get(group).map(|g| g.keys().cloned().collect()).unwrap_or_default();
        for s in self.staged.iter().filter(|s| s.group == group) {
            keys.insert((s.topic.clone(), s.partition));
        }
        keys
    }

    /// The state once every staged write is applied (what a snapshot must contain).
    pub fn latest(&self) -> HashMap<String, GroupOffsets> {
        let mut out = self.committed.clone();
        for s in &self.staged {
            match &s.value {
                Some(v) => {
                    out.entry(s.group.clone()).or_default().insert((s.topic.clone(), s.partition), v.clone());
                }
                None => {
                    if let Some(g) = out.get_mut(&s.group) {
                        g.remove(&(s.topic.clone(), s.partition));
                        if g.is_empty() {
                            out.remove(&s.group);
                        }
                    }
                }
            }
        }
        out
    }

    /// Number of committed offsets.
    pub fn len(&self) -> usize {
        self.committed.values().map(|g| g.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(offset: i64) -> Option<OffsetValue> {
        Some(OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp: 0 })
    }

    #[test]
    fn writes_become_visible_in_log_order_once_durable() {
        let mut s = OffsetStore::default();
        s.stage(10, "g", "t", 0, v(5));
        s.stage(11, "g", "t", 0, v(7));
        s.stage(12, "g", "t", 1, v(1));
        assert!(s.get("g", "t", 0).is_none());
        assert_eq!(s.pending_end("g"), Some(12));
        s.apply_durable(10);
        assert_eq!(s.get("g", "t", 0).unwrap().offset, 5);
        s.apply_durable(12);
        assert_eq!(s.get("g", "t", 0).unwrap().offset, 7);
        assert_eq!(s.get("g", "t", 1).unwrap().offset, 1);
        assert_eq!(s.pending_end("g"), None);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn tombstones_delete_and_latest_sees_staged() {
        let mut s = OffsetStore::default();
        s.apply("g", "t", 0, v(5));
        s.stage(3, "g", "t", 0, None);
        s.stage(4, "h", "t", 0, v(9));
        let latest = s.latest();
        assert!(!latest.contains_key("g"));
        assert_eq!(latest["h"][&("t".to_string(), 0)].offset, 9);
        assert_eq!(s.keys_including_staged("g").len(), 1);
        s.apply_durable(100);
        assert!(s.group("g").is_none());
        assert!(s.get("h", "t", 0).is_some());
    }

    #[test]
    fn unstage_drops_a_failed_append() {
        let mut s = OffsetStore::default();
        s.stage(3, "g", "t", 0, v(1));
        s.stage(5, "g", "t", 1, v(1));
        s.unstage_from(5);
        s.apply_durable(100);
        assert!(s.get("g", "t", 0).is_some());
        assert!(s.get("g", "t", 1).is_none());
    }
}

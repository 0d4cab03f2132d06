//! Remote retention: which remote segments `retention.ms` / `retention.bytes` let go.
//!
//! Kafka's semantics for a tiered topic: `retention.*` bound the whole log (remote and local),
//! `local.retention.*` bound what stays on disk. Time: a segment goes when its newest record is
//! older than `retention.ms`. Size: the oldest segments go while the log (remote segments plus
//! the local bytes not uploaded yet) would still hold at least `retention.bytes` without them.
//! Whole segments only; the remote log start offset moves to the first one kept.

use crate::manifest::Manifest;

/// The total-log retention of a topic (`-1` = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub retention_ms: i64,
    pub retention_bytes: i64,
}

/// The new remote log start offset, if retention removes any segment. `local_only_bytes` is
/// the size of local data that is not in the bucket yet.
pub fn remote_log_start_after_retention(m: &Manifest, now_ms: i64, policy: RetentionPolicy, local_only_bytes: u64) -> Option<i64> {
    let segs = &m.segments;
    let mut n = 0;
    if policy.retention_ms >= 0 {
        // a segment without timestamps (-1) is never expired by time
        while n < segs.len() && segs[n].max_timestamp >= 0 && now_ms.saturating_sub(segs[n].max_timestamp) > policy.retention_ms {
            n += 1;
        }
    }
    if policy.retention_bytes >= 0 {
        let mut total: i64 = segs[n..].iter().map(|s| s.log_bytes as i64).sum::<i64>() + local_only_bytes as i64;
        while n < segs.len() && total - segs[n].log_bytes as i64 >= policy.retention_bytes {
            total -= segs[n].log_bytes as i64;
            n += 1;
        }
    }
    (n > 0).then(|| segs[n - 1].next_offset())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ManifestOp, RemoteSegment};

    fn m(n: i64) -> Manifest {
        let mut m = Manifest::default();
        for i in 0..n {
            m.apply(ManifestOp::Add(RemoteSegment {
                base_offset: i * 10,
                last_offset: i * 10 + 9,
                first_timestamp: i * 1000,
                max_timestamp: i * 1000 + 999,
                size_bytes: 120,
                log_bytes: 100,
                key: format!("s{i}"),
                leader_epoch: 0,
                seq: 0,
            }))
            .expect("add");
        }
        m
    }

    #[test]
    fn by_time() {
        let p = RetentionPolicy { retention_ms: 1500, retention_bytes: -1 };
        // now 3000: segments with max ts 999 and 1999 are older than 1500 ms? 3000-999 > 1500 yes, 3000-1999 no
        assert_eq!(remote_log_start_after_retention(&m(5), 3000, p, 0), Some(10));
        assert_eq!(remote_log_start_after_retention(&m(5), 1000, p, 0), None);
        let forever = RetentionPolicy { retention_ms: -1, retention_bytes: -1 };
        assert_eq!(remote_log_start_after_retention(&m(5), i64::MAX, forever, 0), None);
    }

    #[test]
    fn by_size_counts_local_bytes_not_uploaded() {
        let p = RetentionPolicy { retention_ms: -1, retention_bytes: 250 };
        // 500 remote: drop 2 (300 left >= 250), a third would leave 200
        assert_eq!(remote_log_start_after_retention(&m(5), 0, p, 0), Some(20));
        // 100 more local bytes: one more goes
        assert_eq!(remote_log_start_after_retention(&m(5), 0, p, 100), Some(30));
        assert_eq!(remote_log_start_after_retention(&m(2), 0, p, 0), None);
    }
}

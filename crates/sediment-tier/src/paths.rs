//! Every object key Sediment writes, built in one place.
//!
//! ```text
//! <prefix>/                                        (the s3://BUCKET/PREFIX or file:// root)
//! └── topics/<topic>/<topic id>/
//!     ├── meta/<version:020>.json                  topic: name, id, partition count, configs
//!     └── <partition>/
//!         ├── segments/<base:020>-<last:020>-<epoch:010>.seg
//!         │                                        one sealed segment: .log, .index, .timeindex,
//!         │                                        footer (see segment_object)
//!         └── manifest/
//!             ├── chunks/<chunk:010>.json          1000 consecutive segment entries, sealed
//!             └── roots/<version:020>.json         log start offset, chunk list, newest entries
//! ```
//!
//! Keys are deterministic: a segment's key is a function of its base offset, last offset and
//! leader epoch, so an upload retried after a timeout or a crash writes the same bytes to the same
//! key and can never leave two copies. Zero-padded numbers make lexicographic order (S3 listing
//! order) the numeric order, so "everything after X" is one `list_with_offset`.

use object_store::path::Path;

/// A partition's identity in the bucket. `topic_id` distinguishes a topic from an earlier one
/// of the same name that was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionRef {
    pub topic: String,
    pub topic_id: String,
    pub partition: i32,
}

impl std::fmt::Display for PartitionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

pub const TOPICS: &str = "topics";
const SEGMENT_SUFFIX: &str = ".seg";

/// `topics/`
pub fn topics_root() -> Path {
    Path::from(TOPICS)
}

/// `topics/<topic>/`: one child per topic id that ever had that name.
pub fn topic_name_dir(topic: &str) -> Path {
    topics_root().join(topic)
}

/// `topics/<topic>/<topic id>/`
pub fn topic_dir(topic: &str, topic_id: &str) -> Path {
    topic_name_dir(topic).join(topic_id)
}

/// `topics/<topic>/<topic id>/meta/`
pub fn topic_meta_dir(topic: &str, topic_id: &str) -> Path {
    topic_dir(topic, topic_id).join("meta")
}

/// `topics/<topic>/<topic id>/meta/<version>.json`
pub fn topic_meta(topic: &str, topic_id: &str, version: u64) -> Path {
    topic_meta_dir(topic, topic_id).join(format!("{version:020}.json"))
}

/// `topics/<topic>/<topic id>/<partition>/`
pub fn partition_dir(p: &PartitionRef) -> Path {
    topic_dir(&p.topic, &p.topic_id).join(p.partition.to_string())
}

/// `.../<partition>/segments/`
pub fn segments_dir(p: &PartitionRef) -> Path {
    partition_dir(p).join("segments")
}

/// `.../<partition>/segments/<base>-<last>-<epoch>.seg`
pub fn segment(p: &PartitionRef, base_offset: i64, last_offset: i64, leader_epoch: i32) -> Path {
    segments_dir(p).join(format!("{base_offset:020}-{last_offset:020}-{:010}{SEGMENT_SUFFIX}", leader_epoch.max(0)))
}

/// Parses a segment object's file name back into (base offset, last offset, leader epoch).
pub fn parse_segment_name(name: &str) -> Option<(i64, i64, i32)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let mut it = stem.split('-');
    let (b, l, e) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || b.len() != 20 || l.len() != 20 || e.len() != 10 {
        return None;
    }
    Some((b.parse().ok()?, l.parse().ok()?, e.parse().ok()?))
}

/// `.../<partition>/manifest/chunks/`
pub fn manifest_chunks_dir(p: &PartitionRef) -> Path {
    partition_dir(p).join("manifest").join("chunks")
}

/// `.../<partition>/manifest/chunks/<chunk>.json`
pub fn manifest_chunk(p: &PartitionRef, chunk: u64) -> Path {
    manifest_chunks_dir(p).join(format!("{chunk:010}.json"))
}

/// `.../<partition>/manifest/roots/`
pub fn manifest_roots_dir(p: &PartitionRef) -> Path {
    partition_dir(p).join("manifest").join("roots")
}

/// `.../<partition>/manifest/roots/<version>.json`
pub fn manifest_root(p: &PartitionRef, version: u64) -> Path {
    manifest_roots_dir(p).join(format!("{version:020}.json"))
}

/// Parses `<20 digits>.json` (a root or topic metadata version).
pub fn parse_version_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PartitionRef {
        PartitionRef { topic: "orders.v1".into(), topic_id: "3f2c".into(), partition: 7 }
    }

    #[test]
    fn keys_are_stable_and_parse_back() {
        let k = segment(&p(), 42, 99, 3);
        assert_eq!(k.as_ref(), "topics/orders.v1/3f2c/7/segments/00000000000000000042-00000000000000000099-0000000003.seg");
        assert_eq!(parse_segment_name(k.filename().unwrap_or_default()), Some((42, 99, 3)));
        assert_eq!(parse_segment_name("00042-0099-3.seg"), None);
        assert_eq!(manifest_root(&p(), 5).as_ref(), "topics/orders.v1/3f2c/7/manifest/roots/00000000000000000005.json");
        assert_eq!(parse_version_name("00000000000000000005.json"), Some(5));
        assert_eq!(manifest_chunk(&p(), 2).as_ref(), "topics/orders.v1/3f2c/7/manifest/chunks/0000000002.json");
        assert_eq!(topic_meta("t", "id", 9).as_ref(), "topics/t/id/meta/00000000000000000009.json");
    }

    #[test]
    fn lexicographic_order_is_numeric_order() {
        let a = segment(&p(), 9, 10, 0);
        let b = segment(&p(), 10, 20, 0);
        assert!(a.as_ref() < b.as_ref());
    }
}

//! What tiered storage reads back from the bucket: segment objects (footer, index tail) and
//! the JSON manifests and topic metadata, decoded with the same calls the tier makes
//! (`manifest::read_footer`, `reader::ChunkCache::meta`, `ManifestFile::load`,
//! `manifest::get_json`, `bucket::list_topics`), then folded into a `Manifest` the way
//! `load_from_bucket` does. Also the object-key parsers a bucket listing goes through.
//!
//! Every input is tried as each of these. A fuzzer cannot forge a CRC, so the input is also
//! tried as an object tail whose footer magic, index lengths and both CRC-32Cs are repaired:
//! that way mutations reach the footer fields and the index decoders.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sediment_tier::bucket::TopicMeta;
use sediment_tier::manifest::{ChunkObject, Manifest, ManifestFile, ManifestOp, RemoteSegment, RootObject};
use sediment_tier::paths::{parse_segment_name, parse_version_name};
use sediment_tier::segment_object::{FOOTER_LEN, Footer, SegmentMeta};

const KEY: &str = "topics/t/id/0/segments/fuzz.seg";

fuzz_target!(|data: &[u8]| {
    object(data);
    if data.len() >= FOOTER_LEN {
        let fixed = repaired(data);
        object(&fixed);
        tail(&fixed);
    }

    if let Ok(f) = serde_json::from_slice::<ManifestFile>(data) {
        round_trip(&f);
        manifest_queries(&f.manifest);
        fold(f.manifest.log_start_offset, f.manifest.segments);
    }
    if let Ok(root) = serde_json::from_slice::<RootObject>(data) {
        round_trip(&root);
        let segments = root.tail.into_iter().filter(|s| s.last_offset >= root.log_start_offset).collect();
        fold(root.log_start_offset, segments);
    }
    if let Ok(chunk) = serde_json::from_slice::<ChunkObject>(data) {
        round_trip(&chunk);
        fold(i64::MIN, chunk.entries);
    }
    if let Ok(meta) = serde_json::from_slice::<TopicMeta>(data) {
        round_trip(&meta);
    }

    if let Ok(name) = std::str::from_utf8(data) {
        let _ = parse_segment_name(name);
        let _ = parse_version_name(name);
    }
});

/// A whole object as `read_footer` sees it (its last 96 bytes, against the listed size), then
/// its tail as the read-through cache fetches it (from the footer's `log_len` to the end).
fn object(data: &[u8]) {
    let Some(footer_at) = data.len().checked_sub(FOOTER_LEN) else { return };
    let Ok(f) = Footer::decode(&data[footer_at..]) else { return };
    assert_eq!(Footer::decode(&f.encode()), Ok(f), "a decoded footer encodes back to itself");
    assert!(f.base_offset <= f.last_offset && f.log_len > 0);
    // read_footer refuses an object whose size disagrees with its footer
    let _ = f.object_len() == data.len() as u64;
    if let Ok(log_len) = usize::try_from(f.log_len)
        && log_len <= data.len()
    {
        tail(&data[log_len..]);
    }
}

fn tail(tail: &[u8]) {
    let Ok(meta) = SegmentMeta::decode_tail(KEY, tail) else { return };
    let f = meta.footer;
    assert_eq!(meta.offsets.len() * 8, f.index_len as usize);
    assert_eq!(meta.times.len() * 12, f.time_index_len as usize);
    assert_eq!(tail.len(), f.index_len as usize + f.time_index_len as usize + FOOTER_LEN);
    assert!(meta.offsets.windows(2).all(|w| w[0].relative_offset < w[1].relative_offset));
    assert!(meta.times.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    let _ = meta.weight();
}

/// `data` as an object tail with a footer that passes its own checks up to the fields: magic
/// set, index lengths that add up to the bytes before the footer (the stored index length
/// kept where it fits), index and footer CRC-32Cs recomputed.
fn repaired(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    let at = b.len() - FOOTER_LEN;
    let footer = &mut b[at..];
    footer[0..8].copy_from_slice(b"SDMTSEG1");
    let stored = u32::from_be_bytes([footer[16], footer[17], footer[18], footer[19]]) as usize;
    let index_len = if stored <= at { stored } else { stored % (at + 1) };
    footer[16..20].copy_from_slice(&(index_len as u32).to_be_bytes());
    footer[20..24].copy_from_slice(&((at - index_len) as u32).to_be_bytes());
    let index_crc = crc32c::crc32c(&b[..at]);
    let footer = &mut b[at..];
    footer[68..72].copy_from_slice(&index_crc.to_be_bytes());
    let footer_crc = crc32c::crc32c(&footer[..92]);
    footer[92..96].copy_from_slice(&footer_crc.to_be_bytes());
    b
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let bytes = serde_json::to_vec(v).expect("encode what was decoded");
    let back: T = serde_json::from_slice(&bytes).expect("decode what was encoded");
    assert_eq!(&back, v);
}

/// What the tier asks of a loaded manifest.
fn manifest_queries(m: &Manifest) {
    let _ = (m.log_start_offset(), m.end_offset(), m.total_bytes());
    for s in m.segments.iter().take(16) {
        for offset in [s.base_offset, s.last_offset, s.base_offset.saturating_sub(1), s.last_offset.saturating_add(1)] {
            if let Some(i) = m.find(offset) {
                let found = &m.segments[i];
                assert!(found.base_offset <= offset && offset <= found.last_offset, "find({offset}) named {found:?}");
            }
            let _ = m.find_at_or_after(offset);
        }
    }
}

/// Applies bucket-described segments to a manifest one `Add` at a time (then a `RaiseLogStart`),
/// checking what `Manifest::apply` promises: base and last offsets keep ascending, and `find`
/// names a segment that holds the offset.
fn fold(log_start: i64, segments: Vec<RemoteSegment>) {
    let mut m = Manifest::default();
    for seg in segments.into_iter().take(64) {
        let _ = m.apply(ManifestOp::Add(seg));
        assert!(
            m.segments.windows(2).all(|w| w[0].base_offset < w[1].base_offset && w[0].last_offset < w[1].last_offset),
            "manifest segments out of order: {:?}",
            m.segments
        );
    }
    manifest_queries(&m);
    let _ = m.apply(ManifestOp::RaiseLogStart(log_start));
    manifest_queries(&m);
}

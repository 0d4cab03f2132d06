//! Response frames that reference record bytes instead of copying them.
//!
//! `kafka-protocol` encodes a message into one growing buffer, so a Fetch response copies every
//! record set it carries (and copies again each time the buffer grows). [`OutFrame`] is a
//! [`ByteBufMut`] that recognises the record sets it was told about: when the encoder writes one
//! of those slices, the frame keeps a reference to the `Bytes` (a page read from the log, a
//! cached chunk of a remote segment) and starts a new small buffer after it. The socket then
//! gets the frame with one vectored write, and the records go from their buffer to the kernel
//! without a user-space copy.
//!
//! Only slices of at least [`OutFrame::MIN_REFERENCE`] bytes are referenced; smaller ones are
//! copied, which is cheaper than another I/O vector.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// A size-prefixed frame under construction, then the finished list of parts to write.
#[derive(Debug)]
pub struct OutFrame {
    /// Finished parts, in order (the size prefix is added by [`OutFrame::finish`]).
    parts: Vec<Bytes>,
    /// Bytes after the last referenced slice.
    head: BytesMut,
    /// Record sets that may be referenced rather than copied.
    known: Vec<Bytes>,
    /// Bytes in `parts`.
    done: usize,
}

impl OutFrame {
    /// Slices below this size are copied.
    pub const MIN_REFERENCE: usize = 16 * 1024;

    /// A frame that references these record sets when the encoder writes them.
    pub fn new(known: Vec<Bytes>) -> OutFrame {
        OutFrame {
            parts: Vec::new(),
            head: BytesMut::with_capacity(256),
            known: known.into_iter().filter(|b| b.len() >= Self::MIN_REFERENCE).collect(),
            done: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.done + self.head.len()
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame with its 4-byte size prefix, ready to write.
    pub fn finish(mut self) -> FrameParts {
        let len = self.len();
        let mut parts = VecDeque::with_capacity(self.parts.len() + 2);
        parts.push_back(Bytes::copy_from_slice(&(len as i32).to_be_bytes()));
        parts.extend(self.parts);
        if !self.head.is_empty() {
            parts.push_back(self.head.split().freeze());
        }
        FrameParts { parts, remaining: len + 4 }
    }

    fn reference(&self, src: &[u8]) -> Option<Bytes> {
        if src.len() < Self::MIN_REFERENCE {
            return None;
        }
        self.known.iter().find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len()).cloned()
    }
}

// SAFETY: every method delegates to the `BytesMut` that holds the bytes after the last
// referenced slice; `put_slice` only appends to it or pushes finished parts.
unsafe impl BufMut for OutFrame {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is `head`'s.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.reference(src) {
            Some(b) => {
                if !self.head.is_empty() {
                    let h = self.head.split().freeze();
                    self.done += h.len();
                    self.parts.push(h);
                }
                self.done += b.len();
                self.parts.push(b);
            }
            None => self.head.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for OutFrame {
    fn offset(&self) -> usize {
        self.len()
    }

    /// Gaps (record batch encoding) live within the bytes after the last reference.
    fn seek(&mut self, offset: usize) {
        let at = offset.checked_sub(self.done).expect("seek before the last referenced slice");
        if at > self.head.len() {
            self.head.resize(at, 0);
        } else {
            self.head.truncate(at);
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let start = r.start.checked_sub(self.done).expect("range before the last referenced slice");
        &mut self.head[start..r.end - self.done]
    }
}

/// A finished frame: the parts to write, front first.
#[derive(Debug)]
pub struct FrameParts {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl FrameParts {
    /// A frame of one already-encoded body (header included), size prefix added.
    pub fn whole(body: Bytes) -> FrameParts {
        let remaining = body.len() + 4;
        let prefix = Bytes::copy_from_slice(&(body.len() as i32).to_be_bytes());
        FrameParts { parts: [prefix, body].into_iter().filter(|b| !b.is_empty()).collect(), remaining }
    }

    /// The whole frame in one buffer (tests, and callers that want a copy).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.remaining);
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        out.freeze()
    }

    /// How many parts the frame has left (referenced record sets count one each).
    pub fn part_count(&self) -> usize {
        self.parts.len()
    }
}

impl Buf for FrameParts {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| b.as_ref())
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, p) in dst.iter_mut().zip(self.parts.iter()) {
            *slot = IoSlice::new(p);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the frame");
        self.remaining -= cnt;
        while cnt > 0 {
            let front = self.parts.front_mut().expect("parts cover remaining");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
        while self.parts.front().is_some_and(|p| p.is_empty()) {
            self.parts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn response(records: &[Bytes]) -> FetchResponse {
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        for (i, r) in records.iter().enumerate() {
            let mut p = PartitionData::default();
            p.partition_index = i as i32;
            p.records = Some(r.clone());
            t.partitions.push(p);
        }
        let mut r = FetchResponse::default();
        r.responses.push(t);
        r
    }

    fn plain(r: &FetchResponse, version: i16) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i32(0);
        r.encode(&mut b, version).unwrap();
        let len = (b.len() - 4) as i32;
        b[..4].copy_from_slice(&len.to_be_bytes());
        b.freeze()
    }

    #[test]
    fn same_bytes_as_a_plain_encode_with_large_record_sets_referenced() {
        let big = Bytes::from(vec![7u8; 100_000]);
        let big2 = Bytes::from((0..50_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let small = Bytes::from_static(b"small records");
        let records = [big.clone(), small.clone(), big2.clone()];
        let r = response(&records);
        for version in [4i16, 11, 12, 16] {
            let mut f = OutFrame::new(records.to_vec());
            r.encode(&mut f, version).unwrap();
            let parts = f.finish();
            // size prefix, head, big, middle (with the small set copied), big2, and in
            // flexible versions (v12+) a tail of tagged fields
            assert_eq!(parts.part_count(), 5 + usize::from(version >= 12), "v{version}");
            assert_eq!(parts.to_bytes(), plain(&r, version), "v{version}");
        }
    }

    #[test]
    fn unknown_slices_are_copied() {
        let big = Bytes::from(vec![1u8; 100_000]);
        let r = response(std::slice::from_ref(&big));
        let mut f = OutFrame::new(Vec::new());
        r.encode(&mut f, 12).unwrap();
        let parts = f.finish();
        assert_eq!(parts.part_count(), 2);
        assert_eq!(parts.to_bytes(), plain(&r, 12));
    }

    #[test]
    fn advance_walks_across_parts() {
        let big = Bytes::from(vec![3u8; 40_000]);
        let r = response(std::slice::from_ref(&big));
        let mut f = OutFrame::new(vec![big]);
        r.encode(&mut f, 12).unwrap();
        let mut parts = f.finish();
        let whole = parts.to_bytes();
        let mut got = Vec::new();
        let mut step = 1usize;
        while parts.has_remaining() {
            let mut io = [IoSlice::new(&[]); 8];
            let n = parts.chunks_vectored(&mut io);
            assert!(n >= 1);
            let take = step.min(io[0].len() + if n > 1 { io[1].len() } else { 0 }).min(parts.remaining());
            let mut left = take;
            for s in &io[..n] {
                let k = left.min(s.len());
                got.extend_from_slice(&s[..k]);
                left -= k;
                if left == 0 {
                    break;
                }
            }
            parts.advance(take);
            step = step * 3 + 1;
        }
        assert_eq!(got, whole.as_ref());
    }
}

//! The idempotent producer's state: its producer id and epoch, the next sequence of every
//! partition, and which batches are still unresolved.
//!
//! As in Kafka's Java producer (KIP-98, KIP-360), every batch carries the producer id, epoch
//! and the sequence of its first record; the broker appends a batch only if it continues the
//! partition's sequence, answers a retried batch with its original offsets, and refuses a batch
//! that skips ahead with OUT_OF_ORDER_SEQUENCE_NUMBER. Up to five batches of a partition may be
//! in flight, so a batch refused as out of order while an earlier one of its partition is still
//! unresolved is simply retried: the earlier one's retry fills the gap. The broker recognises a
//! retry only among the last five batches it wrote for the partition, so a partition's oldest
//! unresolved batch and every batch after it are at most five: a batch whose retry waits out its
//! backoff holds back the partition's later batches, however many requests are free (counting
//! only unresolved batches would let acknowledged ones after it push it out of the broker's
//! window). A batch that fails for
//! good breaks its partition's sequence, so the producer then takes a fresh producer id for the
//! batches sealed after it (the Java client bumps its epoch instead, which needs KIP-360's
//! InitProducerId with the current id; a fresh id has the same effect for a non-transactional
//! producer).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::InitProducerIdRequest;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;

use crate::conn::Client;
use crate::error::{Error, Result};

/// A batch's place in its partition's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sequenced {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

#[derive(Default)]
struct State {
    producer: Option<(i64, i16)>,
    /// Set when a batch of the current producer id failed for good.
    broken: bool,
    next: HashMap<(StrBytes, i32), i32>,
    /// Per partition, the current producer id's batches from the oldest unresolved one on, in
    /// sequence order: (base sequence, resolved).
    window: HashMap<(StrBytes, i32), VecDeque<(i32, bool)>>,
}

/// Shared by the producer's sender tasks.
pub(crate) struct Idempotence {
    state: Mutex<State>,
    /// Serialises InitProducerId calls, so concurrent senders share one answer.
    init: tokio::sync::Mutex<()>,
    transaction_timeout_ms: i32,
    /// Woken when a batch is resolved (a partition's window may have room again).
    pub(crate) resolved: Notify,
}

/// Batches of one partition the broker deduplicates: Kafka keeps the last five per producer.
pub(crate) const WINDOW: usize = 5;

impl Idempotence {
    pub(crate) fn new() -> Idempotence {
        Idempotence { state: Mutex::new(State::default()), init: tokio::sync::Mutex::new(()), transaction_timeout_ms: 60_000, resolved: Notify::new() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The producer id and epoch to write with, asking a broker for one first if there is
    /// none yet or the current one's sequences broke. Retries retriable errors until `deadline`.
    pub(crate) async fn producer(&self, client: &Client, deadline: Instant) -> Result<(i64, i16)> {
        let current = |s: &State| s.producer.filter(|_| !s.broken);
        if let Some(p) = current(&self.state()) {
            return Ok(p);
        }
        let _init = self.init.lock().await;
        if let Some(p) = current(&self.state()) {
            return Ok(p);
        }
        let mut backoff = Duration::from_millis(50);
        let (id, epoch) = loop {
            match self.init_producer_id(client).await {
                Ok(p) => break p,
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, "InitProducerId failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        };
        let mut s = self.state();
        if s.broken {
            tracing::info!(producer_id = id, "a batch failed for good; continuing with a new producer id");
        }
        *s = State { producer: Some((id, epoch)), ..State::default() };
        drop(s);
        self.resolved.notify_waiters();
        Ok((id, epoch))
    }

    async fn init_producer_id(&self, client: &Client) -> Result<(i64, i16)> {
        let conn = client.bootstrap_connection().await?;
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(self.transaction_timeout_ms)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let resp = conn.send(&req).await?;
        if resp.error_code != 0 {
            return Err(Error::broker("InitProducerId failed", resp.error_code, None));
        }
        Ok((resp.producer_id.0, resp.producer_epoch))
    }

    /// Gives the next `records` sequences of (`topic`, `partition`) to a batch of `producer`.
    /// None if `producer` is no longer the current id (the caller asks for the current one).
    pub(crate) fn assign(&self, producer: (i64, i16), topic: &StrBytes, partition: i32, records: usize) -> Option<Sequenced> {
        let mut s = self.state();
        if s.producer != Some(producer) || s.broken {
            return None;
        }
        let key = (topic.clone(), partition);
        let base = s.next.get(&key).copied().unwrap_or(0);
        // Sequences wrap from i32::MAX to 0, as Kafka's do.
        let n = i32::try_from(records).unwrap_or(i32::MAX);
        let next = if base > i32::MAX - n { n - (i32::MAX - base) - 1 } else { base + n };
        s.next.insert(key.clone(), next);
        s.window.entry(key).or_default().push_back((base, false));
        Some(Sequenced { producer_id: producer.0, epoch: producer.1, base_sequence: base })
    }

    /// Whether (`topic`, `partition`) already has [`WINDOW`] batches unresolved, so its next
    /// batch must wait: a retry further back would not be recognised as one.
    pub(crate) fn window_full(&self, topic: &StrBytes, partition: i32) -> bool {
        let s = self.state();
        s.window.get(&(topic.clone(), partition)).is_some_and(|w| w.len() >= WINDOW)
    }

    /// Whether a batch of the current producer id before `seq` (same partition) is unresolved,
    /// so an OUT_OF_ORDER_SEQUENCE_NUMBER for `seq` only means that batch has not landed yet.
    pub(crate) fn earlier_unresolved(&self, topic: &StrBytes, partition: i32, seq: Sequenced) -> bool {
        let s = self.state();
        if s.producer != Some((seq.producer_id, seq.epoch)) {
            return false;
        }
        // The window starts at the oldest unresolved batch.
        s.window.get(&(topic.clone(), partition)).and_then(|w| w.front()).is_some_and(|(first, _)| *first != seq.base_sequence)
    }

    /// A batch was acknowledged (`ok`) or failed for good.
    pub(crate) fn resolved(&self, topic: &StrBytes, partition: i32, seq: Sequenced, ok: bool) {
        {
            let mut s = self.state();
            if s.producer != Some((seq.producer_id, seq.epoch)) {
                return;
            }
            let key = (topic.clone(), partition);
            if let Some(w) = s.window.get_mut(&key) {
                if let Some(entry) = w.iter_mut().find(|(base, _)| *base == seq.base_sequence) {
                    entry.1 = true;
                }
                while w.front().is_some_and(|(_, done)| *done) {
                    w.pop_front();
                }
            }
            if !ok {
                s.broken = true;
            }
        }
        self.resolved.notify_waiters();
    }
}

/// Whether a Produce error code means the batch was already written (a retry of an
/// acknowledged batch that fell out of the broker's window of five).
pub(crate) fn is_duplicate(code: i16) -> bool {
    code == ResponseError::DuplicateSequenceNumber.code()
}

/// Whether a Produce error code is an out-of-order sequence.
pub(crate) fn is_out_of_order(code: i16) -> bool {
    code == ResponseError::OutOfOrderSequenceNumber.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_producer(id: i64) -> Idempotence {
        let i = Idempotence::new();
        i.state().producer = Some((id, 0));
        i
    }

    #[test]
    fn sequences_continue_per_partition_and_wrap() {
        let i = with_producer(7);
        let t = StrBytes::from_static_str("t");
        assert_eq!(i.assign((7, 0), &t, 0, 10).unwrap().base_sequence, 0);
        assert_eq!(i.assign((7, 0), &t, 0, 5).unwrap().base_sequence, 10);
        assert_eq!(i.assign((7, 0), &t, 1, 3).unwrap().base_sequence, 0);
        i.state().next.insert((t.clone(), 2), i32::MAX - 1);
        assert_eq!(i.assign((7, 0), &t, 2, 4).unwrap().base_sequence, i32::MAX - 1);
        // MAX-1, MAX, 0, 1 were used: the next batch starts at 2.
        assert_eq!(i.assign((7, 0), &t, 2, 1).unwrap().base_sequence, 2);
        assert!(i.assign((8, 0), &t, 0, 1).is_none(), "a stale producer id gets no sequence");
    }

    #[test]
    fn out_of_order_is_retried_only_behind_an_unresolved_batch() {
        let i = with_producer(1);
        let t = StrBytes::from_static_str("t");
        let a = i.assign((1, 0), &t, 0, 10).unwrap();
        let b = i.assign((1, 0), &t, 0, 10).unwrap();
        assert!(i.earlier_unresolved(&t, 0, b), "a is still in flight");
        assert!(!i.earlier_unresolved(&t, 0, a));
        i.resolved(&t, 0, a, true);
        assert!(!i.earlier_unresolved(&t, 0, b), "nothing before b is left to land");
    }

    #[test]
    fn a_partition_holds_at_most_five_unresolved_batches() {
        let i = with_producer(1);
        let t = StrBytes::from_static_str("t");
        let first = i.assign((1, 0), &t, 0, 1).unwrap();
        for _ in 1..WINDOW {
            assert!(!i.window_full(&t, 0));
            i.assign((1, 0), &t, 0, 1).unwrap();
        }
        assert!(i.window_full(&t, 0));
        assert!(!i.window_full(&t, 1), "other partitions are not held back");
        let mut w = i.state().window[&(t.clone(), 0)].clone();
        for (base, _) in w.iter_mut().skip(1) {
            i.resolved(&t, 0, Sequenced { producer_id: 1, epoch: 0, base_sequence: *base }, true);
        }
        assert!(i.window_full(&t, 0), "acknowledged batches after an unresolved one still count");
        i.resolved(&t, 0, first, true);
        assert!(!i.window_full(&t, 0));
    }

    #[test]
    fn a_failed_batch_retires_the_producer_id() {
        let i = with_producer(1);
        let t = StrBytes::from_static_str("t");
        let a = i.assign((1, 0), &t, 0, 10).unwrap();
        i.resolved(&t, 0, a, false);
        assert!(i.assign((1, 0), &t, 0, 1).is_none(), "sequences after a lost batch would never be accepted");
    }
}

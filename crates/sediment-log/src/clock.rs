//! Wall-clock time for everything that stamps or expires data (record timestamps, retention,
//! segment age, group session and offset expiry): one clock, read through [`Clock`] where a
//! test needs to drive time, and [`now_ms`] where the system clock is the only sensible one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch from the system clock (0 if the clock reads before it).
#[allow(clippy::disallowed_methods)] // the one place that reads it
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(ms)))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_after_2020_and_a_manual_one_moves_when_told() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
        let c = ManualClock::at(1_000);
        let shared = c.clone();
        c.advance(250);
        assert_eq!(shared.now_ms(), 1_250);
        shared.set(5);
        assert_eq!(c.now_ms(), 5);
    }
}

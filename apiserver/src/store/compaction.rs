//! When the watch history is compacted, and how far: the pure decisions behind it.
//!
//! The history is bounded twice: by events (`--watch-history`) and by the bytes of the
//! bodies it keeps, each event's object and its previous version (`--watch-history-bytes`).
//! A write that leaves the history over either bound starts a compaction, which drops the
//! oldest events in batches, each its own short transaction under the store lock, so no
//! request waits behind one long delete. A batch ends at a bounded number of rows and
//! bytes; compaction goes on batch by batch until the history is back under both bounds,
//! with slack (an eighth of each) so that the next compaction is some writes away.
//!
//! Architecture Invariant: the compaction point only moves forward, to the revision of the
//! last dropped event, and a watch or continue token from before it gets 410.

/// The watch history's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryBounds {
    /// How many events to keep (default 100,000).
    pub events: u64,
    /// How many bytes of bodies (objects and their previous versions) to keep (default
    /// 256 MiB).
    pub bytes: u64,
}

impl Default for HistoryBounds {
    fn default() -> HistoryBounds {
        HistoryBounds {
            events: 100_000,
            bytes: 256 * 1024 * 1024,
        }
    }
}

/// Most events dropped by one compaction transaction.
pub const BATCH_ROWS: usize = 2048;

/// Most bytes of bodies dropped by one compaction transaction (one event more when a
/// single event is larger).
pub const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// How large the history is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistorySize {
    /// Events kept.
    pub events: u64,
    /// Bytes of bodies kept.
    pub bytes: u64,
}

impl HistoryBounds {
    /// True when the history has outgrown a bound by its slack, so a compaction should
    /// start. (The event bound has always worked this way: compact at an eighth over.)
    pub fn exceeded(&self, size: HistorySize) -> bool {
        size.events > self.events + self.events / 8 || size.bytes > self.bytes
    }

    /// True while a compaction under way should go on: the history is over either bound,
    /// with the byte bound lowered by its slack.
    fn over_target(&self, events: u64, bytes: u64) -> bool {
        events > self.events || bytes > self.bytes - self.bytes / 8
    }

    /// The last revision the next batch drops, given the history's size and its oldest
    /// events as `(revision, bytes)`, oldest first (at least a batch of them when that many
    /// are kept); `None` when the history is within its bounds.
    pub fn cutoff(&self, size: HistorySize, oldest: &[(u64, u64)]) -> Option<u64> {
        let (mut events, mut bytes, mut dropped) = (size.events, size.bytes, 0u64);
        let mut cut = None;
        for &(rv, len) in oldest.iter().take(BATCH_ROWS) {
            if !self.over_target(events, bytes) || (cut.is_some() && dropped + len > BATCH_BYTES) {
                break;
            }
            events -= 1;
            bytes = bytes.saturating_sub(len);
            dropped += len;
            cut = Some(rv);
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(events: u64, bytes: u64) -> HistoryBounds {
        HistoryBounds { events, bytes }
    }

    fn size(events: u64, bytes: u64) -> HistorySize {
        HistorySize { events, bytes }
    }

    /// Events numbered from 1, each `len` bytes.
    fn events(n: u64, len: u64) -> Vec<(u64, u64)> {
        (1..=n).map(|rv| (rv, len)).collect()
    }

    #[test]
    fn compaction_starts_an_eighth_over_the_event_bound_or_over_the_byte_bound() {
        let b = bounds(80, 800);
        assert!(!b.exceeded(size(90, 800)));
        assert!(b.exceeded(size(91, 0)));
        assert!(b.exceeded(size(1, 801)));
    }

    #[test]
    fn the_event_bound_compacts_down_to_the_bound_as_before() {
        // 91 events of 1 byte against a bound of 80: drop the oldest 11.
        assert_eq!(
            bounds(80, 1 << 30).cutoff(size(91, 91), &events(91, 1)),
            Some(11)
        );
    }

    #[test]
    fn the_byte_bound_compacts_down_to_seven_eighths() {
        // 10 events of 100 bytes against 800 bytes: keep at most 700.
        assert_eq!(
            bounds(1000, 800).cutoff(size(10, 1000), &events(10, 100)),
            Some(3)
        );
    }

    #[test]
    fn within_bounds_nothing_is_dropped() {
        assert_eq!(bounds(10, 800).cutoff(size(10, 700), &events(10, 70)), None);
        assert_eq!(bounds(10, 800).cutoff(size(0, 0), &[]), None);
    }

    #[test]
    fn a_batch_is_bounded_in_rows_and_bytes() {
        let many = events(10_000, 1);
        assert_eq!(
            bounds(0, 1 << 30).cutoff(size(10_000, 10_000), &many),
            Some(BATCH_ROWS as u64)
        );
        let big = BATCH_BYTES / 2 + 1;
        assert_eq!(
            bounds(0, 1).cutoff(size(4, 4 * big), &events(4, big)),
            Some(1)
        );
        // One event larger than a batch still goes, alone.
        let huge = BATCH_BYTES * 2;
        assert_eq!(
            bounds(0, 1).cutoff(size(2, 2 * huge), &events(2, huge)),
            Some(1)
        );
    }
}

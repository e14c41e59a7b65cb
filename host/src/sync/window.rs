//! Where each pass starts reading, so that a transaction that commits late
//! with a lower tracking value is still seen.
//!
//! A pass reads in keyset order from its start to the end of the table.
//! A row it missed was committed after the pass had read past its position;
//! its transaction took its tracking value at most `lookback` before that
//! commit. Any position the syncer had reached at or before that moment is
//! below the row (values are handed out in increasing order: timestamps by a
//! clock, sequences by a counter). So the next pass starts at the position
//! reached `lookback` before the previous pass began, which it finds in
//! `marks`: (time, position) pairs recorded as pages commit. Rows re-read
//! in that window that were already emitted are recognised by their
//! (key, tracking value) and skipped (`syncer.rs`).

use serde::{Deserialize, Serialize};

use super::value::Position;

/// The state a syncer keeps between commits (stored as JSON with the events).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// When the current pass began (ms since the Unix epoch); `None` when no pass is under way.
    pub pass_start: Option<u64>,
    /// How far the current pass has read and committed (`None`: from the start).
    pub scan: Option<Position>,
    /// When the previous pass began.
    pub previous_start: Option<u64>,
    /// Positions reached, oldest first: `(time, position)`.
    pub marks: Vec<(u64, Option<Position>)>,
    /// The tracking value at the end of the last page, as shown to users.
    pub last_value: Option<serde_json::Value>,
    /// Where the last page read ended: the rows after it are pending (`lag.rs`).
    #[serde(default)]
    pub watermark: Option<Position>,
    /// When the last hard-delete scan ran.
    pub last_delete_scan: Option<u64>,
}

impl Window {
    /// Starts a pass at `now` (ms), unless one is under way (a restart goes
    /// on where the interrupted pass committed last). Returns where to read from.
    pub fn begin(&mut self, now: u64, lookback_ms: u64) -> Option<Position> {
        if self.pass_start.is_some() {
            return self.scan.clone();
        }
        let start = match self.previous_start {
            // The first pass reads everything.
            None => None,
            Some(prev) => {
                let horizon = prev.saturating_sub(lookback_ms);
                // The newest mark at or before the horizon; none: from the start.
                self.marks.iter().rev().find(|(t, _)| *t <= horizon).and_then(|(_, p)| p.clone())
            }
        };
        self.pass_start = Some(now);
        self.scan = start.clone();
        start
    }

    /// Records that the pass read and committed up to `position` at `now`.
    /// Marks are kept at most one per `lookback / 8` (older marks only make
    /// the window larger, never wrong).
    pub fn advance(&mut self, now: u64, position: Position, lookback_ms: u64) {
        self.scan = Some(position);
        let spacing = (lookback_ms / 8).max(1);
        if self.marks.last().is_none_or(|(t, _)| now >= t + spacing) {
            self.marks.push((now, self.scan.clone()));
        }
    }

    /// Ends the pass at `now`, and forgets marks no later pass can need.
    pub fn finish(&mut self, now: u64, lookback_ms: u64) {
        let start = self.pass_start.take().unwrap_or(now);
        self.previous_start = Some(start);
        // A mark for the end, so an idle table does not keep re-reading
        // from an old position (spaced as in `advance`).
        if self.marks.last().is_none_or(|(t, _)| now >= t + (lookback_ms / 8).max(1)) {
            self.marks.push((now, self.scan.clone()));
        }
        self.scan = None;
        let horizon = start.saturating_sub(lookback_ms);
        // Keep the newest mark at or before the horizon, and all after it.
        if let Some(keep) = self.marks.iter().rposition(|(t, _)| *t <= horizon) {
            self.marks.drain(..keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::value::Val;

    fn at(v: i64) -> Position {
        Position { value: Val::Int(v), key: vec![Val::Int(v)] }
    }

    #[test]
    fn the_first_pass_reads_all_and_the_next_ones_from_lookback_before_the_previous_start() {
        let mut w = Window::default();
        assert_eq!(w.begin(1_000, 100), None);
        w.advance(1_010, at(5), 100);
        w.advance(1_050, at(9), 100);
        w.finish(1_060, 100);
        // Pass 2 starts at 2_000; the previous began at 1_000: horizon 900,
        // before every mark, so it reads from the start again.
        assert_eq!(w.begin(2_000, 100), None);
        w.advance(2_010, at(12), 100);
        w.finish(2_020, 100);
        // Pass 3: horizon 2_000 - 100 = 1_900: the mark at 1_060 (position 9).
        assert_eq!(w.begin(3_000, 100), Some(at(9)));
        w.finish(3_001, 100);
        // Pass 4: horizon 2_900: the end mark of pass 2 (position 12).
        assert_eq!(w.begin(4_000, 100), Some(at(12)));
    }

    #[test]
    fn an_interrupted_pass_resumes_where_it_committed() {
        let mut w = Window::default();
        w.begin(1_000, 100);
        w.advance(1_200, at(7), 100);
        let saved: Window = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        let mut w2 = saved;
        assert_eq!(w2.begin(5_000, 100), Some(at(7)));
        assert_eq!(w2.pass_start, Some(1_000));
    }

    #[test]
    fn marks_stay_few() {
        let mut w = Window::default();
        for pass in 0..1_000u64 {
            let t = pass * 10;
            w.begin(t, 100);
            w.advance(t + 1, at(pass as i64), 100);
            w.advance(t + 2, at(pass as i64), 100);
            w.finish(t + 3, 100);
        }
        assert!(w.marks.len() < 40, "{}", w.marks.len());
    }
}

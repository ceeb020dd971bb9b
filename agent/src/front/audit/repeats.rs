//! Identical refusals from one peer, counted instead of written: the first
//! of its kind opens a window of [`WINDOW`], the first [`BURST`] like it
//! inside the window are written, the rest only add to its count, and when
//! the window ends the count is written as one line. A client repeating a
//! refused request in a loop then costs the log `BURST + 1` lines per
//! window, not one per request, and cannot push other peers' lines past
//! journald's rate limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Outcome, Record};
use crate::front::kubernetes::PodIdentity;
use crate::sync::lock;

/// How long identical refusals are summed up after the first.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Identical refusals written one by one in a window before counting starts.
pub const BURST: u64 = 5;

/// Past this many open windows, refusals are written without counting, so
/// that many different refusals cannot grow the table without bound.
const MAX_WINDOWS: usize = 10_000;

/// What makes two refusals identical: the same peer, request and reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub unit: Option<String>,
    pub exe: Option<String>,
    pub issuer: Option<String>,
    pub app: Option<String>,
    pub reason: Option<&'static str>,
    /// Boxed: most refusals carry no pod, and a verdict moves this around.
    pub kubernetes: Option<Box<PodIdentity>>,
    pub k8s_refusal: Option<&'static str>,
}

impl Kind {
    fn of(record: &Record<'_>) -> Kind {
        Kind {
            uid: record.uid,
            gid: record.gid,
            pid: record.pid,
            unit: record.unit.map(str::to_owned),
            exe: record.exe.as_deref().map(str::to_owned),
            issuer: record.issuer.map(str::to_owned),
            app: record.app.map(str::to_owned),
            reason: record.reason,
            kubernetes: record.kubernetes.cloned().map(Box::new),
            k8s_refusal: record.k8s_refusal,
        }
    }

    /// The line that reports `repeated` more refusals of this kind.
    pub fn summary(&self, repeated: u64) -> Record<'_> {
        Record {
            time: super::record::Stamp::now(),
            uid: self.uid,
            gid: self.gid,
            pid: self.pid,
            unit: self.unit.as_deref(),
            exe: self.exe.as_deref().map(Into::into),
            issuer: self.issuer.as_deref(),
            app: self.app.as_deref(),
            kid: None,
            exp: None,
            cache_hit: None,
            outcome: Outcome::Refused,
            reason: self.reason,
            repeated: Some(repeated),
            kubernetes: self.kubernetes.as_deref(),
            k8s_refusal: self.k8s_refusal,
        }
    }
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    /// Refusals of its kind written in it, the one that opened it included.
    written: u64,
    /// Refusals of its kind counted and not written.
    repeated: u64,
}

impl Window {
    fn new(opened: Instant) -> Window {
        Window {
            opened,
            written: 1,
            repeated: 0,
        }
    }
}

/// What becomes of one audit record.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Counted in an open window; nothing is written now.
    Counted,
    /// Written, after the line for a window of its kind that `ended`.
    Write { ended: Option<(Kind, u64)> },
}

/// The open windows.
#[derive(Debug)]
pub struct Repeats {
    interval: Duration,
    windows: Mutex<HashMap<Kind, Window>>,
}

impl Repeats {
    pub fn new(interval: Duration) -> Repeats {
        Repeats {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// What to do with `record`: every issued line is written, and a
    /// refusal unless [`BURST`] like it were written in a window that is
    /// still open (it is counted there instead). A refusal that finds its window ended
    /// opens the next one, and the ended one's count is to be written first.
    pub fn note(&self, record: &Record<'_>) -> Verdict {
        self.note_at(record, Instant::now())
    }

    /// [`Repeats::note`] with the clock read as `now`.
    fn note_at(&self, record: &Record<'_>, now: Instant) -> Verdict {
        if record.outcome != Outcome::Refused {
            return Verdict::Write { ended: None };
        }
        let kind = Kind::of(record);
        let mut windows = lock(&self.windows);
        match windows.get_mut(&kind) {
            Some(window) if self.open(window, now) => {
                if window.written < BURST {
                    window.written += 1;
                    return Verdict::Write { ended: None };
                }
                window.repeated += 1;
                Verdict::Counted
            }
            Some(window) => {
                let repeated = std::mem::replace(window, Window::new(now)).repeated;
                let ended = (repeated > 0).then_some((kind, repeated));
                Verdict::Write { ended }
            }
            None => {
                if windows.len() < MAX_WINDOWS {
                    windows.insert(kind, Window::new(now));
                }
                Verdict::Write { ended: None }
            }
        }
    }

    /// The windows that have ended (all of them, `at_exit`), with how many
    /// refusals each counted; they are closed.
    pub fn ended(&self, at_exit: bool) -> Vec<(Kind, u64)> {
        self.ended_at(at_exit, Instant::now())
    }

    /// [`Repeats::ended`] with the clock read as `now`.
    fn ended_at(&self, at_exit: bool, now: Instant) -> Vec<(Kind, u64)> {
        let mut windows = lock(&self.windows);
        let mut ended = Vec::new();
        windows.retain(|kind, window| {
            if !at_exit && self.open(window, now) {
                return true;
            }
            if window.repeated > 0 {
                ended.push((kind.clone(), window.repeated));
            }
            false
        });
        ended
    }

    /// Whether `window` is still open at `now`.
    fn open(&self, window: &Window, now: Instant) -> bool {
        now.saturating_duration_since(window.opened) < self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::peer::Peer;

    #[test]
    fn the_first_refusal_is_written_and_the_identical_ones_counted() {
        // The clock is read as `start` plus what the test lets pass.
        let start = Instant::now();
        let repeats = Repeats::new(WINDOW);
        let peer = Peer::new(65534, 65534, Some(7));
        let refusal = || Record::refused(&peer, Some("ttd"), Some("a"), "not-granted");
        for _ in 0..BURST {
            assert_eq!(
                repeats.note_at(&refusal(), start),
                Verdict::Write { ended: None }
            );
        }
        for _ in 0..99 {
            assert_eq!(repeats.note_at(&refusal(), start), Verdict::Counted);
        }
        // Another app, another peer, or an issued token: written.
        let written = Verdict::Write { ended: None };
        let b = Record::refused(&peer, Some("ttd"), Some("b"), "not-granted");
        assert_eq!(repeats.note_at(&b, start), written);
        let other = Peer::new(1000, 1000, Some(8));
        let a = Record::refused(&other, Some("ttd"), Some("a"), "not-granted");
        assert_eq!(repeats.note_at(&a, start), written);
        let almost = start + WINDOW - Duration::from_millis(1);
        assert!(
            repeats.ended_at(false, almost).is_empty(),
            "the windows are still open"
        );
        let after = start + WINDOW;
        let ended = repeats.ended_at(false, after);
        assert_eq!(ended.len(), 1, "only the window that counted repeats");
        assert_eq!(ended[0].1, 99);
        assert_eq!(ended[0].0.app.as_deref(), Some("a"));
        let line: serde_json::Value = serde_json::from_str(&ended[0].0.summary(99).line()).unwrap();
        assert_eq!(line["repeated"], 99);
        assert_eq!(line["reason"], "not-granted");
        // After the window, the next one is written again.
        assert_eq!(repeats.note_at(&refusal(), after), written);
        // One that finds its ended window unflushed brings its count along.
        for _ in 0..BURST - 1 + 3 {
            repeats.note_at(&refusal(), after);
        }
        match repeats.note_at(&refusal(), after + WINDOW) {
            Verdict::Write {
                ended: Some((_, 3)),
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stopping_writes_the_counts_of_windows_still_open() {
        let start = Instant::now();
        let repeats = Repeats::new(WINDOW);
        let peer = Peer::new(65534, 65534, Some(7));
        let refusal = || Record::refused(&peer, Some("ttd"), Some("a"), "not-granted");
        for _ in 0..BURST + 2 {
            repeats.note_at(&refusal(), start);
        }
        assert!(repeats.ended_at(false, start).is_empty());
        let ended = repeats.ended_at(true, start);
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].1, 2);
        assert!(repeats.ended_at(true, start).is_empty(), "closed once");
    }
}

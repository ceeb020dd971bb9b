//! The audit file's writer: one thread appends what requests queued, in
//! batches, so that a request pays for copying its line, not for a write
//! to the file. Lines keep the order they were queued in, each whole.
//! Past [`MAX_PENDING`] bytes queued, requests wait for a slow disk; a
//! file that cannot be written (ENOSPC, EIO) is retried every `RETRY`
//! while its lines wait, and past [`MAX_PENDING`] further lines are
//! dropped and counted rather than holding every request for as long as
//! the disk is full. [`Writer::health`] says so meanwhile.
//! A clean stop ([`Writer::flush`], then drop) writes every queued line
//! the file takes; a SIGKILL loses what was queued in the last moment
//! (about a millisecond's lines, see `GATHER`).

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::open;
use super::outbox::Outbox;
use crate::metrics::AuditCounters;
use crate::sync::lock;

/// Bytes queued past which requests wait for the writer (or, while the
/// file cannot be written, their lines are dropped): a stalled disk slows
/// token requests down rather than costing memory.
pub const MAX_PENDING: usize = 4 << 20;

/// How long the writer lets lines gather after writing a batch: at high
/// rates one write carries many lines, at low rates a line waits at most
/// this long before it is written.
const GATHER: Duration = Duration::from_millis(1);

/// How long the writer waits before it tries a failed write again.
const RETRY: Duration = Duration::from_millis(200);

/// The audit file and the thread that appends to it.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits on it for lines; requests and [`Writer::flush`]
    /// wait on it for the writer.
    changed: Condvar,
    counters: AuditCounters,
}

#[derive(Debug, Default)]
struct State {
    /// Lines queued and not yet taken by the writer.
    pending: Vec<u8>,
    /// Bytes ever queued, and bytes the writer has written: [`Writer::flush`]
    /// waits for the second to reach the first as it was, so a steady
    /// stream of new lines cannot hold it up.
    queued: u64,
    written: u64,
    /// Files to switch to (after [`Writer::reopen`]), each with the
    /// queued total at which it takes over.
    replacements: VecDeque<(u64, File)>,
    /// Why the last write failed, while lines wait for the file.
    failing: Option<String>,
    stopping: bool,
}

impl Writer {
    /// Opens (or creates, mode 0640) `path` for appending ([`open`]) and
    /// starts the writer, which adds its failures to `counters`.
    pub fn open(path: &Path, counters: AuditCounters) -> std::io::Result<Writer> {
        let file = open::append(path)?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed: Condvar::new(),
            counters,
        });
        let (writer, named) = (Arc::clone(&shared), path.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(file, &named))?;
        Ok(Writer {
            path: path.to_path_buf(),
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `line` (newline included) with `build`, which appends it to
    /// the queue; waits while the queue is full, or drops the line (and
    /// counts it) if the queue is full because the file cannot be written.
    pub fn queue(&self, build: impl FnOnce(&mut Vec<u8>)) {
        let mut state = lock(&self.shared.state);
        while state.pending.len() >= MAX_PENDING && !state.stopping {
            if state.failing.is_some() {
                self.shared.counters.lines_dropped.inc();
                return;
            }
            state = self.wait(state);
        }
        let before = state.pending.len();
        build(&mut state.pending);
        state.queued += (state.pending.len() - before) as u64;
        drop(state);
        // Only an empty queue can have left the writer waiting.
        if before == 0 {
            self.shared.changed.notify_all();
        }
    }

    /// Opens the file at its path again (after log rotation moved it):
    /// lines queued before this call still go to the old file, lines
    /// queued from now on to the new one. Does not wait for the writer.
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open::append(&self.path)?;
        let mut state = lock(&self.shared.state);
        let at = state.queued;
        state.replacements.push_back((at, fresh));
        Ok(())
    }

    /// Returns once every line queued before the call is in the file, or
    /// the file cannot be written ([`Writer::health`] says why).
    pub fn flush(&self) {
        let mut state = lock(&self.shared.state);
        let target = state.queued;
        while state.written < target && state.failing.is_none() {
            state = self.wait(state);
        }
    }

    /// Whether the file takes the lines; if not, why, and what to do.
    pub fn health(&self) -> Result<(), String> {
        let state = lock(&self.shared.state);
        match &state.failing {
            None => Ok(()),
            Some(error) => Err(format!(
                "the audit file {} cannot be written ({error}); {} bytes of audit lines wait in memory, and past {} MiB new lines are dropped (access_token_agent_audit_lines_dropped_total); free space on its file system",
                self.path.display(),
                state.queued - state.written,
                MAX_PENDING >> 20,
            )),
        }
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.shared
            .changed
            .wait(state)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Writer {
    /// Writes what is queued and stops the thread.
    fn drop(&mut self) {
        lock(&self.shared.state).stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// The writer thread: takes what is queued, writes it in one go, lets
    /// the next lines gather, until told to stop with nothing queued. A
    /// batch the file did not take is tried again before anything newer,
    /// once more at a stop.
    fn run(&self, mut file: File, path: &Path) {
        let mut outbox = Outbox::default();
        while self.next_batch(&mut outbox) {
            let result = outbox.write(&mut file);
            let failed = result.is_err();
            let stopping = self.wrote(&outbox, result, path);
            match (failed, stopping) {
                (false, _) => std::thread::sleep(GATHER),
                (true, false) => std::thread::sleep(RETRY),
                (true, true) => return self.give_up(&outbox, path),
            }
        }
    }

    /// Puts the queued lines in `outbox` once it is written, waiting for
    /// some; false once told to stop with nothing left to write.
    fn next_batch(&self, outbox: &mut Outbox<File>) -> bool {
        if !outbox.is_written() {
            return true;
        }
        let mut state = lock(&self.state);
        while state.pending.is_empty() && !state.stopping {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if state.pending.is_empty() {
            return false;
        }
        let State {
            pending,
            replacements,
            ..
        } = &mut *state;
        outbox.refill(pending, replacements);
        drop(state);
        // Waiting requests may queue again: the queue is empty.
        self.changed.notify_all();
        true
    }

    /// Records how far the file got and whether it failed; returns whether
    /// the writer is to stop.
    fn wrote(&self, outbox: &Outbox<File>, result: std::io::Result<()>, path: &Path) -> bool {
        let mut state = lock(&self.state);
        state.written = outbox.written();
        match result {
            Ok(()) if state.failing.take().is_some() => {
                tracing::info!(path = %path.display(), "the audit file takes lines again; the lines that waited are written");
            }
            Ok(()) => {}
            Err(e) => {
                self.counters.write_errors.inc();
                if state.failing.is_none() {
                    tracing::error!(path = %path.display(), error = %e, "cannot append to the audit file; its lines wait in memory and the write is retried");
                }
                state.failing = Some(e.to_string());
            }
        }
        let stopping = state.stopping;
        drop(state);
        self.changed.notify_all();
        stopping
    }

    /// At a stop with a file that still fails: says what is lost.
    fn give_up(&self, outbox: &Outbox<File>, path: &Path) {
        let state = lock(&self.state);
        let lost = outbox.unwritten() + state.pending.len();
        tracing::error!(
            path = %path.display(),
            error = state.failing.as_deref().unwrap_or_default(),
            "stopping with {lost} bytes of audit lines the file did not take; the journal has their copy"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> impl FnOnce(&mut Vec<u8>) {
        move |queue: &mut Vec<u8>| queue.extend_from_slice(format!("{{\"n\":{n}}}\n").as_bytes())
    }

    #[test]
    fn lines_from_many_threads_are_all_written_whole_in_each_threads_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let writer = Writer::open(&path, AuditCounters::default()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let writer = &writer;
                scope.spawn(move || (0..5_000).for_each(|i| writer.queue(line(t * 10_000 + i))));
            }
        });
        drop(writer);
        let text = std::fs::read_to_string(&path).unwrap();
        let numbers: Vec<usize> = text
            .lines()
            .map(|l| {
                let json: serde_json::Value = serde_json::from_str(l).unwrap();
                json["n"].as_u64().unwrap() as usize
            })
            .collect();
        assert_eq!(numbers.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<usize> = numbers
                .iter()
                .copied()
                .filter(|n| n / 10_000 == t)
                .collect();
            assert_eq!(mine, (0..5_000).map(|i| t * 10_000 + i).collect::<Vec<_>>());
        }
    }

    #[test]
    fn flush_returns_with_every_line_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let writer = Writer::open(&path, AuditCounters::default()).unwrap();
        (0..100).for_each(|i| writer.queue(line(i)));
        writer.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 100);
    }

    /// Queues numbered lines on a thread of its own until told to stop;
    /// returns how many it queued.
    fn queue_steadily<'a>(
        scope: &'a std::thread::Scope<'a, '_>,
        writer: &'a Writer,
        stop: &'a std::sync::atomic::AtomicBool,
    ) -> std::thread::ScopedJoinHandle<'a, usize> {
        scope.spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer.queue(line(n));
                n += 1;
            }
            n
        })
    }

    fn numbers_in(path: &Path) -> Vec<usize> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                l.trim_start_matches("{\"n\":")
                    .trim_end_matches('}')
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn flush_returns_while_lines_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let writer = Writer::open(&path, AuditCounters::default()).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let total = std::thread::scope(|scope| {
            let producer = queue_steadily(scope, &writer, &stop);
            for _ in 0..50 {
                writer.flush();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            producer.join().unwrap()
        });
        // Every line queued is in the file, whole and in order.
        writer.flush();
        assert_eq!(numbers_in(&path), (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn reopen_under_load_splits_the_lines_where_it_was_called() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rotated) = (dir.path().join("audit.log"), dir.path().join("audit.log.1"));
        let writer = Writer::open(&path, AuditCounters::default()).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let total = std::thread::scope(|scope| {
            let producer = queue_steadily(scope, &writer, &stop);
            std::thread::sleep(Duration::from_millis(20));
            std::fs::rename(&path, &rotated).unwrap();
            writer.reopen().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            producer.join().unwrap()
        });
        drop(writer);
        let (old, new) = (numbers_in(&rotated), numbers_in(&path));
        assert!(
            !old.is_empty() && !new.is_empty(),
            "old {} new {}",
            old.len(),
            new.len()
        );
        let both: Vec<usize> = old.iter().chain(&new).copied().collect();
        assert_eq!(
            both,
            (0..total).collect::<Vec<_>>(),
            "lines lost, doubled or out of order"
        );
    }

    #[test]
    fn lines_queued_before_reopen_go_to_the_old_file_even_if_not_yet_written() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rotated) = (dir.path().join("audit.log"), dir.path().join("audit.log.1"));
        let writer = Writer::open(&path, AuditCounters::default()).unwrap();
        (0..10_000).for_each(|i| writer.queue(line(i)));
        std::fs::rename(&path, &rotated).unwrap();
        writer.reopen().unwrap();
        (10_000..20_000).for_each(|i| writer.queue(line(i)));
        drop(writer);
        assert_eq!(numbers_in(&rotated), (0..10_000).collect::<Vec<_>>());
        assert_eq!(numbers_in(&path), (10_000..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_line_written_alone_reaches_the_file_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let writer = Writer::open(&path, AuditCounters::default()).unwrap();
        writer.queue(line(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(writer);
    }
}

//! When a command is killed: moments from a seeded PRNG, by delay or just
//! after the command's nth write to the store appears, and the kill itself,
//! with what it may have destroyed of the token counted and put back.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use integration_tests::{Store, TestToken, PIN};

/// xorshift64*: small, seeded, good enough to spread kill moments.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from `ENROLMENT_KILL_SEED`, else the clock; prints the seed
    /// under `what`.
    pub(crate) fn from_env_or_clock(what: &str) -> Rng {
        let seed = std::env::var("ENROLMENT_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("{what}: ENROLMENT_KILL_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..=max`.
    pub(crate) fn below(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }
}

/// When the command is killed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Moment {
    /// This long after it was started.
    After(Duration),
    /// This long after its `nth` write to the store appeared ([`Writes`]).
    AfterWrite { nth: usize, then: Duration },
}

/// Picks a kill moment: even trials by delay, odd ones just after one of
/// the `writes` a normal run makes to the store (then up to a tenth of the
/// normal duration later).
pub(crate) fn pick_moment(rng: &mut Rng, trial: usize, normal: Duration, writes: usize) -> Moment {
    if trial % 2 == 0 {
        let max = normal.as_micros() as u64 * 5 / 4;
        Moment::After(Duration::from_micros(rng.below(max)))
    } else {
        let then = (normal.as_micros() as u64 / 10).max(3_000);
        Moment::AfterWrite {
            nth: 1 + rng.below(writes.max(1) as u64 - 1) as usize,
            then: Duration::from_micros(rng.below(then)),
        }
    }
}

/// The writes a command has made to the store so far, as seen from
/// outside: SoftHSM's new object files (one per object), or the changes of
/// Kryoptic's database file (one or more per object, one transaction each).
pub(crate) struct Writes<'t> {
    token: &'t TestToken,
    files_before: usize,
    modified: Option<SystemTime>,
    changes: usize,
}

impl<'t> Writes<'t> {
    pub(crate) fn watch(token: &'t TestToken) -> Writes<'t> {
        let mut writes = Writes {
            token,
            files_before: 0,
            modified: None,
            changes: 0,
        };
        match token.store() {
            Store::SoftHsm => writes.files_before = token.object_files().len(),
            Store::Kryoptic => writes.modified = writes.database_modified(),
        }
        writes
    }

    /// How many writes have appeared since [`Writes::watch`]; call it often.
    pub(crate) fn count(&mut self) -> usize {
        match self.token.store() {
            Store::SoftHsm => self
                .token
                .object_files()
                .len()
                .saturating_sub(self.files_before),
            Store::Kryoptic => {
                let now = self.database_modified();
                if now != self.modified {
                    self.modified = now;
                    self.changes += 1;
                }
                self.changes
            }
        }
    }

    fn database_modified(&self) -> Option<SystemTime> {
        std::fs::metadata(self.token.kryoptic_database())
            .and_then(|m| m.modified())
            .ok()
    }
}

/// What a kill can destroy of the token itself, saved before the command
/// so that a loss is counted and undone as restoring a backup would:
/// SoftHSM's `token.object` (rewritten in place at every login), Kryoptic's
/// database.
struct Saved {
    file: PathBuf,
    bytes: Vec<u8>,
}

impl Saved {
    fn take(token: &TestToken) -> Saved {
        let file = match token.store() {
            Store::SoftHsm => token.token_file(),
            Store::Kryoptic => token.kryoptic_database(),
        };
        let bytes = std::fs::read(&file).expect("read the token's store");
        Saved { file, bytes }
    }

    /// Whether the token is gone: SoftHSM's `token.object` changed size (a
    /// login rewrites it with the same bytes), or Kryoptic's module no
    /// longer shows the token or cannot read its objects.
    fn lost(&self, token: &TestToken) -> bool {
        match token.store() {
            Store::SoftHsm => {
                let now = std::fs::metadata(&self.file).expect("token.object").len();
                now != self.bytes.len() as u64
            }
            Store::Kryoptic => !token
                .pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"])
                .status
                .success(),
        }
    }

    fn restore(&self) {
        // A rolled-back SQLite transaction's journal belongs to the lost
        // state, not to the backup.
        let _ = std::fs::remove_file(self.file.with_extension("sql-journal"));
        std::fs::write(&self.file, &self.bytes).expect("restore the token's store");
    }
}

/// What one kill did.
pub(crate) struct Kill {
    /// The kill landed (false: the command had already finished, successfully).
    pub(crate) landed: bool,
    /// It destroyed the token itself ([`Saved`]); the store was put back.
    pub(crate) token_lost: bool,
}

/// Runs the agent with `args` to its end: how long it took, and how many
/// writes to the store it made.
pub(crate) fn run_whole(token: &TestToken, args: &[&str]) -> (Duration, usize, String) {
    let mut writes = Writes::watch(token);
    let started = Instant::now();
    let child = token
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start access-token-agent");
    let mut child = integration_tests::AgentProcess(child);
    while matches!(child.try_wait(), Ok(None)) {
        writes.count();
        std::thread::sleep(Duration::from_micros(100));
    }
    let took = started.elapsed();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("piped"), &mut stdout)
        .expect("read the command's output");
    assert!(child.wait().expect("reap").success(), "{args:?} failed");
    (took, writes.count(), stdout)
}

/// Runs the agent with `args` and sends it `signal` at `moment`.
pub(crate) fn run_and_kill(
    token: &TestToken,
    args: &[&str],
    moment: Moment,
    signal: libc::c_int,
) -> Kill {
    let saved = Saved::take(token);
    let mut writes = Writes::watch(token);
    let started = Instant::now();
    let mut child = token
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start access-token-agent");
    match moment {
        Moment::After(delay) => std::thread::sleep(delay),
        Moment::AfterWrite { nth, then } => {
            while writes.count() < nth
                && matches!(child.try_wait(), Ok(None))
                && started.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(then);
        }
    }
    // SAFETY: kill(2) on the child's pid, which stays reserved until wait.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let status = child.wait().expect("reap the killed agent");
    let landed = match status.signal() {
        Some(received) if received == signal => true,
        _ => {
            assert!(status.success(), "{args:?} failed by itself: {status:?}");
            false
        }
    };
    let token_lost = saved.lost(token);
    if token_lost {
        assert!(landed, "the token was lost without a kill");
        saved.restore();
    }
    Kill { landed, token_lost }
}

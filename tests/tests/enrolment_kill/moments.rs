//! When a command is killed: moments from a seeded PRNG, by delay or just
//! after the command's nth object file appears, and the kill itself.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration_tests::TestToken;

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

/// When the enrolment is killed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Moment {
    /// This long after it was started.
    After(Duration),
    /// This long after its `nth` new object file appeared on the token.
    AfterObject { nth: usize, then: Duration },
}

/// Picks a kill moment: even trials by delay, odd ones by object files
/// (then up to a tenth of the normal duration later).
pub(crate) fn pick_moment(rng: &mut Rng, trial: usize, normal: Duration, objects: usize) -> Moment {
    if trial % 2 == 0 {
        let max = normal.as_micros() as u64 * 5 / 4;
        Moment::After(Duration::from_micros(rng.below(max)))
    } else {
        let then = (normal.as_micros() as u64 / 10).max(3_000);
        Moment::AfterObject {
            nth: 1 + rng.below(objects as u64 - 1) as usize,
            then: Duration::from_micros(rng.below(then)),
        }
    }
}

/// What one kill did.
pub(crate) struct Kill {
    /// The kill landed (false: the command had already finished, successfully).
    pub(crate) landed: bool,
    /// It emptied SoftHSM's `token.object` mid-login; the file was put back.
    pub(crate) token_file_restored: bool,
}

/// Runs the agent with `args` and sends it `signal` at `moment`.
pub(crate) fn run_and_kill(
    token: &TestToken,
    args: &[&str],
    moment: Moment,
    signal: libc::c_int,
) -> Kill {
    let token_file = token.token_file();
    let token_state = std::fs::read(&token_file).expect("read token.object");
    let files_before = token.object_files().len();
    let started = Instant::now();
    let mut child = token
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start access-token-agent");
    match moment {
        Moment::After(delay) => std::thread::sleep(delay),
        Moment::AfterObject { nth, then } => {
            while token.object_files().len() < files_before + nth
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
    let now = std::fs::metadata(&token_file).expect("token.object").len();
    let token_file_restored = now != token_state.len() as u64;
    if token_file_restored {
        assert!(
            landed,
            "token.object changed size without a kill: {now} bytes"
        );
        std::fs::write(&token_file, &token_state).expect("restore token.object");
    }
    Kill {
        landed,
        token_file_restored,
    }
}

//! `keys import` and `keys generate` killed with SIGKILL, and terminated
//! with SIGTERM, at random moments.
//!
//! After every kill the token must hold the complete pair or nothing usable
//! of it: every object pkcs11-tool sees belongs to a pair `keys list` shows;
//! a pair listed complete really signs (a pinned `mint` verifies against its
//! exported certificate); an incomplete pair is never active and `mint`
//! ignores it (the issuer's earlier key signs, or "no key" when there is
//! none); `keys delete --kid` removes every object of it.
//!
//! Half the kills come after a random delay from 0 to a quarter more than
//! the command's normal duration, measured first. The other half watch
//! SoftHSM's token directory and kill just after the command's first,
//! second or third object file appears, so that the moments between "key
//! written" and "certificate written" are hit on purpose, not by luck.
//! The moments come from a seeded PRNG; the seed is printed (run with
//! `--nocapture`) and `ENROLMENT_KILL_SEED=<seed>` replays a run.
//!
//! SoftHSM's file backend rewrites `token.object` in place (truncate, then
//! write) on every C_Login, so a kill in that instant leaves it empty and
//! the whole token, every key on it, disappears. That is SoftHSM's, not the
//! enrolment's; when it happens the test counts it, puts the file back from
//! the copy taken before the command (what restoring a backup would do) and
//! checks the enrolment invariants as usual. RELIABILITY.md has the details.
//!
//! SIGTERM (and Ctrl-C) can be held back, and the agent holds them while
//! it logs in and while an enrolment writes: terminated at any moment, a
//! command finishes the enrolment or ends before it began, and never
//! empties `token.object`.

mod campaign;
mod checks;
mod moments;

use std::time::{Duration, Instant};

use integration_tests::{OutputExt, TestToken};

use campaign::{kill_generate, kill_import, Tally};
use checks::Outcome;
use moments::{run_and_kill, Moment, Rng};

/// The issuer that has a complete key before the kills begin.
const ENROLLED: &str = "ttd";
/// The issuer that has no key except what the killed commands leave.
const FRESH: &str = "fresh";

/// Ctrl-C, `kill` and systemd's stop wait while an enrolment writes: the
/// command finishes it and then ends, or ends before it began.
fn assert_never_half_done(tally: &Tally) {
    assert_eq!(tally.outcomes.get(&Outcome::Incomplete), None, "{tally:?}");
    assert_eq!(tally.token_files_restored, 0, "{tally:?}");
}

#[test]
fn import_killed_at_random_moments_leaves_a_complete_pair_or_nothing_usable() {
    kill_import(libc::SIGKILL, 30);
}

#[test]
fn generate_rsa2048_killed_at_random_moments_leaves_a_complete_pair_or_nothing_usable() {
    kill_generate("rsa2048", libc::SIGKILL, 20);
}

#[test]
fn generate_p256_killed_at_random_moments_leaves_a_complete_pair_or_nothing_usable() {
    kill_generate("p256", libc::SIGKILL, 20);
}

#[test]
fn import_terminated_at_random_moments_finishes_or_leaves_nothing() {
    assert_never_half_done(&kill_import(libc::SIGTERM, 20));
}

#[test]
fn generate_terminated_at_random_moments_finishes_or_leaves_nothing() {
    assert_never_half_done(&kill_generate("p256", libc::SIGTERM, 10));
}

/// SoftHSM rewrites `token.object` during C_Login; SIGTERM (systemd's stop,
/// `kill`) in that instant used to empty it, losing the whole token in
/// about one of twelve such kills of `keys list`.
#[test]
fn terminating_a_command_never_empties_the_token() {
    let token = TestToken::new();
    let normal = normal_duration_of_list(&token);
    let mut rng = Rng::from_env_or_clock("keys list");
    let mut landed = 0;
    for _ in 0..100 {
        let moment = Moment::After(Duration::from_micros(
            rng.below(normal.as_micros() as u64 * 5 / 4),
        ));
        let kill = run_and_kill(&token, &["keys", "list"], moment, libc::SIGTERM);
        assert!(!kill.token_file_restored, "token.object was emptied");
        landed += usize::from(kill.landed);
    }
    eprintln!("keys list, 100 times SIGTERM, {landed} landed before it finished");
    token.agent(&["keys", "list"]).success();
}

fn normal_duration_of_list(token: &TestToken) -> Duration {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            token.agent(&["keys", "list"]).success();
            started.elapsed()
        })
        .max()
        .expect("three runs")
}

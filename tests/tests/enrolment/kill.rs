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
//! the command's normal duration, measured first. The other half watch the
//! store and kill just after one of the command's writes appears (SoftHSM:
//! its first, second or third object file), so that the moments between
//! "key written" and "certificate written" are hit on purpose, not by luck.
//! The moments come from a seeded PRNG; the seed is printed (run with
//! `--nocapture`) and `ENROLMENT_KILL_SEED=<seed>` replays a run.
//!
//! Every test runs on both stores. SoftHSM's file backend rewrites
//! `token.object` in place (truncate, then write) on every C_Login, so a
//! kill in that instant leaves it empty and the whole token, every key on
//! it, disappears. That is SoftHSM's, not the enrolment's; when it happens
//! the test counts it, puts the file back from the copy taken before the
//! command (what restoring a backup would do) and checks the enrolment
//! invariants as usual. Kryoptic keeps the token in one SQLite database
//! changed only in transactions: there no kill may lose it. On Kryoptic the
//! moments "just after a write" watch the database file's changes instead
//! of object files. RELIABILITY.md has the figures.
//!
//! SIGTERM (and Ctrl-C) can be held back, and the agent holds them while
//! it logs in and while an enrolment writes: terminated at any moment, a
//! command finishes the enrolment or ends before it began, and never
//! empties `token.object`.

mod campaign;
mod checks;
mod moments;

use std::time::Duration;

use integration_tests::{on_every_store, OutputExt, Store, TestToken};

use campaign::{kill_generate, kill_import, Tally};
use checks::Outcome;
use moments::{run_and_kill, run_whole, Moment, Rng};

/// The issuer that has a complete key before the kills begin.
const ENROLLED: &str = "ttd";
/// The issuer that has no key except what the killed commands leave.
const FRESH: &str = "fresh";

/// Ctrl-C, `kill` and systemd's stop wait while an enrolment writes: the
/// command finishes it and then ends, or ends before it began.
fn assert_never_half_done(tally: &Tally) {
    assert_eq!(tally.outcomes.get(&Outcome::Incomplete), None, "{tally:?}");
    assert_eq!(tally.tokens_lost, 0, "{tally:?}");
}

/// A SQLite store loses no token to a kill, SIGKILL included; SoftHSM's
/// losses are counted and reported (RELIABILITY.md).
fn assert_kryoptic_keeps_its_token(tally: &Tally) {
    if Store::current() == Store::Kryoptic {
        assert_eq!(tally.tokens_lost, 0, "{tally:?}");
    }
}

on_every_store! {
    fn import_killed_at_random_moments_leaves_a_complete_pair_or_nothing_usable() {
        assert_kryoptic_keeps_its_token(&kill_import(libc::SIGKILL, 30));
    }

    fn generate_rsa2048_killed_at_random_moments_leaves_a_complete_pair_or_nothing_usable() {
        assert_kryoptic_keeps_its_token(&kill_generate("rsa2048", libc::SIGKILL, 20));
    }

    fn generate_p256_killed_at_random_moments_leaves_a_complete_pair_or_nothing_usable() {
        assert_kryoptic_keeps_its_token(&kill_generate("p256", libc::SIGKILL, 20));
    }

    fn import_terminated_at_random_moments_finishes_or_leaves_nothing() {
        assert_never_half_done(&kill_import(libc::SIGTERM, 20));
    }

    fn generate_terminated_at_random_moments_finishes_or_leaves_nothing() {
        assert_never_half_done(&kill_generate("p256", libc::SIGTERM, 10));
    }

    /// SoftHSM rewrites `token.object` during C_Login; SIGTERM (systemd's
    /// stop, `kill`) in that instant used to empty it, losing the whole
    /// token in about one of twelve such kills of `keys list`.
    fn terminating_a_command_never_loses_the_token() {
        let lost = kill_list(libc::SIGTERM, 100);
        assert_eq!(lost, 0, "the token was lost");
    }

    /// SIGKILL cannot be held: SoftHSM loses the token when it lands in
    /// C_Login's rewrite of `token.object` (counted); Kryoptic never.
    fn killing_a_command_loses_no_kryoptic_token() {
        let lost = kill_list(libc::SIGKILL, 50);
        if Store::current() == Store::Kryoptic {
            assert_eq!(lost, 0, "the token was lost");
        }
    }
}

/// `keys list` sent `signal` `kills` times at random moments of its run;
/// how many kills lost the token (each put back before the next).
fn kill_list(signal: libc::c_int, kills: usize) -> usize {
    let token = TestToken::new();
    token.generate(ENROLLED, Some("p256")).success();
    let normal = (0..3)
        .map(|_| run_whole(&token, &["keys", "list"]).0)
        .max()
        .expect("three runs");
    let store = token.store().name();
    let mut rng = Rng::from_env_or_clock(&format!("{store}: keys list, signal {signal}"));
    let (mut landed, mut lost) = (0, 0);
    for _ in 0..kills {
        let moment = Moment::After(Duration::from_micros(
            rng.below(normal.as_micros() as u64 * 5 / 4),
        ));
        let kill = run_and_kill(&token, &["keys", "list"], moment, signal);
        landed += usize::from(kill.landed);
        lost += usize::from(kill.token_lost);
    }
    eprintln!("{store}: keys list, {kills} times signal {signal}, {landed} landed before it finished, {lost} lost the token");
    assert_eq!(token.keys_json().len(), 1, "the key is still there");
    lost
}

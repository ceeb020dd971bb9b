//! Signals while the agent logs in again after an HSM fault: every
//! termination signal it is sent ends it gracefully (exit 0) after the
//! login, instead of its default action cutting SoftHSM's rewrite of
//! `token.object` short, and the token keeps its key.

use std::time::Duration;

use integration_tests::daemon::{log_tail, status_of, ttd_token, Daemon};
use integration_tests::poll_until;

/// A xorshift generator, seeded so that a failure replays.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn termination_signals_during_a_new_login_end_the_agent_gracefully() {
    let seed = 0x5eed_5167_u64;
    let mut random = Random(seed);
    let token = ttd_token("p256", "[token]\ncache = false\n");
    let signals = [libc::SIGQUIT, libc::SIGTERM, libc::SIGINT];
    let mut before_ready = 0;
    for round in 0..8 {
        let mut daemon = Daemon::start(&token);
        let (home, away) = (
            token.path().join("tokens"),
            token.path().join("tokens.away"),
        );
        std::fs::rename(&home, &away).unwrap();
        // A request finds the token gone; the agent reconnects with backoff.
        let _ = daemon.get("/v1/token?issuer=ttd&app=a", &[]);
        poll_until("503 on /readyz", || {
            status_of(&daemon.get("/readyz", &[])) == 503
        });
        // Random moments on purpose: away a while longer, then back.
        std::thread::sleep(Duration::from_millis(random.below(300)));
        std::fs::rename(&away, &home).unwrap();
        // Somewhere in the next attempt to log in again.
        std::thread::sleep(Duration::from_millis(random.below(500)));
        if random.below(2) == 0 {
            daemon.signal(libc::SIGHUP);
        }
        let signal = signals[random.below(3) as usize];
        let reconnecting = status_of(&daemon.get("/readyz", &[])) == 503;
        daemon.signal(signal);
        before_ready += usize::from(reconnecting);
        let status = daemon.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round} (seed {seed:#x}): signal {signal} gave {status}\n{}",
            log_tail(&token)
        );
        let state = std::fs::metadata(token.token_file()).unwrap().len();
        assert!(state > 0, "round {round}: token.object was emptied");
        assert_eq!(
            token.keys_json().len(),
            1,
            "round {round}: the key is listed"
        );
    }
    // The moments fall before, around and after the new login.
    eprintln!("{before_ready} of 8 signals came while the agent was not ready yet");
    assert!(before_ready >= 1, "no signal came before the new login");
}

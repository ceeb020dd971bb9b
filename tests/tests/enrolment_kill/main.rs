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

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration_tests::{
    jws_part, rsa_self_signed, sha1_thumbprint, verify_jwt, OutputExt, Pkcs12Kind, TestToken,
};
use serde_json::Value;

/// The issuer that has a complete key before the kills begin.
const ENROLLED: &str = "ttd";
/// The issuer that has no key except what the killed commands leave.
const FRESH: &str = "fresh";

/// xorshift64*: small, seeded, good enough to spread kill moments.
struct Rng(u64);

impl Rng {
    /// Seeded from `ENROLMENT_KILL_SEED`, else the clock; prints the seed
    /// under `what`.
    fn from_env_or_clock(what: &str) -> Rng {
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
    fn below(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }
}

/// When the enrolment is killed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// This long after it was started.
    After(Duration),
    /// This long after its `nth` new object file appeared on the token.
    AfterObject { nth: usize, then: Duration },
}

/// What a killed command left, as the checks found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Killed before any object was visible.
    Nothing,
    /// Killed half-way: incomplete pair(s), never used, deleted.
    Incomplete,
    /// Killed after the certificate was written: a complete, working pair.
    Complete,
    /// The command finished before the kill arrived.
    Finished,
}

/// A complete pair made before the kills, which must survive all of them.
struct Baseline {
    kid: String,
    pem: Vec<u8>,
}

fn enrol_baseline(token: &TestToken) -> Baseline {
    let out = token.generate(ENROLLED, Some("p256")).success();
    let kid = out.stdout_text().trim().to_owned();
    let pem = export_pem(token, ENROLLED, &kid);
    Baseline { kid, pem }
}

fn export_pem(token: &TestToken, issuer: &str, kid: &str) -> Vec<u8> {
    token
        .agent(&[
            "keys",
            "export-cert",
            "--issuer",
            issuer,
            "--kid",
            kid,
            "--format",
            "pem",
        ])
        .success()
        .stdout
}

/// The longest of three uninterrupted runs of `args`, each undone again.
fn normal_duration(token: &TestToken, args: &[String]) -> Duration {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let out = token.agent(&args).success();
            let took = started.elapsed();
            let kid = out.stdout_text().trim().to_owned();
            token
                .agent(&["keys", "delete", "--kid", &kid, "--yes"])
                .success();
            took
        })
        .max()
        .expect("three runs")
}

/// Picks a kill moment: even trials by delay, odd ones by object files
/// (then up to a tenth of the normal duration later).
fn pick_moment(rng: &mut Rng, trial: usize, normal: Duration, objects: usize) -> Moment {
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
struct Kill {
    /// The kill landed (false: the command had already finished, successfully).
    landed: bool,
    /// It emptied SoftHSM's `token.object` mid-login; the file was put back.
    token_file_restored: bool,
}

/// Runs the agent with `args` and sends it `signal` at `moment`.
fn run_and_kill(token: &TestToken, args: &[&str], moment: Moment, signal: libc::c_int) -> Kill {
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

/// Every invariant after one kill; then removes what the kill left, so
/// the next trial starts from the baseline again.
fn check_and_clean(
    token: &TestToken,
    baseline: &Baseline,
    killed: bool,
    expected_kid: Option<&str>,
) -> Outcome {
    let rows = token.keys_json();
    let context = format!("rows after the kill: {rows:#?}");

    // Nothing on the token escapes the listing.
    for id in token.object_ids() {
        let kid = id.to_ascii_uppercase();
        assert!(
            rows.iter().any(|row| row["kid"] == kid.as_str()),
            "object with ID {id} is not part of any listed pair; {context}"
        );
    }
    let base = rows
        .iter()
        .find(|row| row["kid"] == baseline.kid.as_str())
        .unwrap_or_else(|| panic!("the earlier key is gone; {context}"));
    assert_eq!(base["complete"], true, "{context}");

    let left: Vec<&Value> = rows
        .iter()
        .filter(|row| row["kid"] != baseline.kid.as_str())
        .collect();
    let mut outcome = Outcome::Nothing;
    for row in &left {
        let kid = row["kid"].as_str().expect("a kid");
        let issuer = row["issuer"].as_str().expect("an issuer");
        if row["complete"] == true {
            if let Some(expected) = expected_kid {
                assert_eq!(
                    kid, expected,
                    "a complete pair under a foreign kid; {context}"
                );
            }
            check_complete_pair_signs(token, issuer, kid);
            outcome = outcome.max(Outcome::Complete);
        } else {
            assert_eq!(
                row["active"], false,
                "an incomplete pair is active; {context}"
            );
            outcome = outcome.max(Outcome::Incomplete);
        }
    }
    if !killed {
        assert_eq!(
            outcome,
            Outcome::Complete,
            "finished but not complete; {context}"
        );
        outcome = Outcome::Finished;
    }

    for issuer in [ENROLLED, FRESH] {
        check_mint_uses_only_complete_keys(token, issuer, &rows, baseline);
    }

    for row in &left {
        let kid = row["kid"].as_str().expect("a kid");
        token
            .agent(&["keys", "delete", "--kid", kid, "--yes"])
            .success();
        let lower = kid.to_ascii_lowercase();
        assert!(
            !token.object_ids().contains(&lower),
            "objects of {kid} survive `keys delete`:\n{}",
            token.list_objects()
        );
    }
    assert_eq!(
        token.object_ids().len(),
        3,
        "only the earlier key's private key, public key and certificate remain:\n{}",
        token.list_objects()
    );
    outcome
}

/// A pair listed complete must really work: its exported certificate has
/// the kid as thumbprint, and a token minted with the kid pinned verifies.
fn check_complete_pair_signs(token: &TestToken, issuer: &str, kid: &str) {
    let pem_path = token.write_file("complete.pem", export_pem(token, issuer, kid));
    assert_eq!(sha1_thumbprint(&pem_path), kid);
    token.write_config(&format!("[[issuer]]\nname = {issuer:?}\nkid = {kid:?}\n"));
    let minted = token.agent(&["mint", "--issuer", issuer]).success();
    token.write_config("");
    let jwt = minted.stdout_text().trim().to_owned();
    assert_eq!(jws_part(&jwt, 0)["kid"], kid);
    verify_jwt(&jwt, &std::fs::read(&pem_path).unwrap(), issuer);
}

/// `mint` for `issuer` signs with one of its complete pairs, or says there
/// is no key when it has none; it never signs with an incomplete pair.
fn check_mint_uses_only_complete_keys(
    token: &TestToken,
    issuer: &str,
    rows: &[Value],
    baseline: &Baseline,
) {
    let complete: Vec<&str> = rows
        .iter()
        .filter(|row| row["issuer"] == issuer && row["complete"] == true)
        .map(|row| row["kid"].as_str().expect("a kid"))
        .collect();
    let out = token.agent(&["mint", "--issuer", issuer]);
    if complete.is_empty() {
        let out = out.exit(69);
        assert!(
            out.stderr_text()
                .contains(&format!("no key for issuer {issuer:?}")),
            "{}",
            out.stderr_text()
        );
        return;
    }
    let jwt = out.success().stdout_text().trim().to_owned();
    let kid = jws_part(&jwt, 0)["kid"]
        .as_str()
        .expect("a kid header")
        .to_owned();
    assert!(
        complete.contains(&kid.as_str()),
        "{issuer} signed with {kid}, not one of its complete keys {complete:?}"
    );
    if kid == baseline.kid {
        verify_jwt(&jwt, &baseline.pem, issuer);
    }
}

/// One command's series of kills.
struct Campaign<'t> {
    token: &'t TestToken,
    /// The command's uninterrupted duration.
    normal: Duration,
    /// How many objects the command writes.
    objects_written: usize,
    /// The kid a complete pair must have, when known in advance.
    expected_kid: Option<&'t str>,
    /// How many times the command is killed.
    kills: usize,
    /// SIGKILL, or SIGTERM (what Ctrl-C, `kill` and systemd's stop send).
    signal: libc::c_int,
}

/// What the kills of a campaign left, counted.
#[derive(Debug, Default)]
struct Tally {
    outcomes: BTreeMap<Outcome, usize>,
    token_files_restored: usize,
}

impl Campaign<'_> {
    /// Runs the trials of the command `args_for(issuer)`. The kind of
    /// moment alternates every trial, the issuer every second, so that
    /// every combination recurs.
    fn run(&self, rng: &mut Rng, args_for: impl Fn(&str) -> Vec<String>) -> Tally {
        let baseline = enrol_baseline(self.token);
        let mut tally = Tally::default();
        for trial in 0..self.kills {
            let issuer = if (trial / 2) % 2 == 0 {
                ENROLLED
            } else {
                FRESH
            };
            let args = args_for(issuer);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let moment = pick_moment(rng, trial, self.normal, self.objects_written);
            let kill = run_and_kill(self.token, &args, moment, self.signal);
            let outcome = check_and_clean(self.token, &baseline, kill.landed, self.expected_kid);
            eprintln!(
                "trial {trial:2}: {} at {moment:?}: {outcome:?}{}",
                args[1..].join(" "),
                if kill.token_file_restored {
                    " (token.object emptied mid-login, restored)"
                } else {
                    ""
                }
            );
            *tally.outcomes.entry(outcome).or_insert(0) += 1;
            tally.token_files_restored += usize::from(kill.token_file_restored);
        }
        tally
    }
}

/// Prints what SoftHSM left on disk that no PKCS#11 call shows. SoftHSM
/// creates an object's file empty, then writes its default attributes
/// (CKA_TOKEN false, empty CKA_ID, CKA_LABEL and key values), then the real
/// ones; a kill between these steps leaves a file that holds no key
/// material, label or ID, is not an object to PKCS#11, and so is neither
/// listed nor removable by `keys delete`. RELIABILITY.md records the counts.
fn report_invisible_files(token: &TestToken, what: &str) {
    let sizes: Vec<u64> = token
        .object_files()
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .collect();
    let empty = sizes.iter().filter(|&&size| size == 0).count();
    let visible = token.object_ids().len();
    eprintln!(
        "{what}: {} object files on disk for {visible} visible objects: {} invisible, {empty} of them empty",
        sizes.len(),
        sizes.len() - visible
    );
}

/// `keys import` of one PKCS#12 file, sent `signal` `kills` times.
fn kill_import(signal: libc::c_int, kills: usize) -> Tally {
    let token = TestToken::new();
    let files = rsa_self_signed(token.path(), "org", 2048, "/CN=ttd");
    let kid = sha1_thumbprint(&files.cert);
    let pfx = files.pkcs12("", Pkcs12Kind::Modern);
    let pfx = pfx.to_str().unwrap().to_owned();
    let import = |issuer: &str| -> Vec<String> {
        ["keys", "import", "--issuer", issuer, "--pfx", &pfx]
            .map(String::from)
            .to_vec()
    };
    let campaign = Campaign {
        token: &token,
        normal: normal_duration(&token, &import(FRESH)),
        // The private key, then the certificate.
        objects_written: 2,
        expected_kid: Some(&kid),
        kills,
        signal,
    };
    eprintln!("keys import takes {:?} uninterrupted", campaign.normal);
    let tally = campaign.run(
        &mut Rng::from_env_or_clock(&format!("keys import, signal {signal}")),
        import,
    );
    eprintln!("keys import, {kills} times signal {signal}: {tally:?}");
    report_invisible_files(&token, &format!("keys import, signal {signal}"));
    tally
}

/// `keys generate --key-type <key_type>`, sent `signal` `kills` times.
fn kill_generate(key_type: &str, signal: libc::c_int, kills: usize) -> Tally {
    let token = TestToken::new();
    let generate = |issuer: &str| -> Vec<String> {
        [
            "keys",
            "generate",
            "--issuer",
            issuer,
            "--key-type",
            key_type,
        ]
        .map(String::from)
        .to_vec()
    };
    let campaign = Campaign {
        token: &token,
        normal: normal_duration(&token, &generate(FRESH)),
        // The two keys, then the certificate.
        objects_written: 3,
        expected_kid: None,
        kills,
        signal,
    };
    eprintln!(
        "keys generate {key_type} takes {:?} uninterrupted",
        campaign.normal
    );
    let tally = campaign.run(
        &mut Rng::from_env_or_clock(&format!("keys generate {key_type}, signal {signal}")),
        generate,
    );
    eprintln!("keys generate {key_type}, {kills} times signal {signal}: {tally:?}");
    report_invisible_files(
        &token,
        &format!("keys generate {key_type}, signal {signal}"),
    );
    tally
}

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

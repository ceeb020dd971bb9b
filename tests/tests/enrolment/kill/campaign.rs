//! One command killed again and again: its normal duration, the trials,
//! and the outcomes tallied.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::{
    rsa_self_signed, sha1_thumbprint, OutputExt, Pkcs12Kind, Store, TestToken,
};

use super::checks::{check_and_clean, enrol_baseline, Outcome};
use super::moments::{pick_moment, run_and_kill, run_whole, Rng};
use super::{ENROLLED, FRESH};

/// The longest of three uninterrupted runs of `args`, each undone again,
/// and the fewest writes to the store one of them made.
fn normal_run(token: &TestToken, args: &[String]) -> (Duration, usize) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runs: Vec<(Duration, usize)> = (0..3)
        .map(|_| {
            let (took, writes, stdout) = run_whole(token, &args);
            token
                .agent(&["keys", "delete", "--kid", stdout.trim(), "--yes"])
                .success();
            (took, writes)
        })
        .collect();
    let longest = runs.iter().map(|run| run.0).max().expect("three runs");
    let fewest = runs.iter().map(|run| run.1).min().expect("three runs");
    (longest, fewest)
}

/// One command's series of kills.
struct Campaign<'t> {
    token: &'t TestToken,
    /// The command's uninterrupted duration.
    normal: Duration,
    /// How many writes to the store it makes ([`super::moments::Writes`]).
    writes: usize,
    /// The kid a complete pair must have, when known in advance.
    expected_kid: Option<&'t str>,
    /// How many times the command is killed.
    kills: usize,
    /// SIGKILL, or SIGTERM (what Ctrl-C, `kill` and systemd's stop send).
    signal: libc::c_int,
}

/// What the kills of a campaign left, counted.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) outcomes: BTreeMap<Outcome, usize>,
    /// Kills that destroyed the token itself (put back from a copy).
    pub(crate) tokens_lost: usize,
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
            let moment = pick_moment(rng, trial, self.normal, self.writes);
            let kill = run_and_kill(self.token, &args, moment, self.signal);
            let outcome = check_and_clean(self.token, &baseline, kill.landed, self.expected_kid);
            eprintln!(
                "trial {trial:2}: {} at {moment:?}: {outcome:?}{}",
                args[1..].join(" "),
                if kill.token_lost {
                    " (the token itself was lost, restored)"
                } else {
                    ""
                }
            );
            *tally.outcomes.entry(outcome).or_insert(0) += 1;
            tally.tokens_lost += usize::from(kill.token_lost);
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
    if token.store() != Store::SoftHsm {
        return;
    }
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
pub(crate) fn kill_import(signal: libc::c_int, kills: usize) -> Tally {
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
    let (normal, writes) = normal_run(&token, &import(FRESH));
    let campaign = Campaign {
        token: &token,
        normal,
        writes,
        expected_kid: Some(&kid),
        kills,
        signal,
    };
    eprintln!(
        "{}: keys import takes {:?} and {writes} writes uninterrupted",
        token.store().name(),
        campaign.normal
    );
    let tally = campaign.run(
        &mut Rng::from_env_or_clock(&format!("keys import, signal {signal}")),
        import,
    );
    eprintln!(
        "{}: keys import, {kills} times signal {signal}: {tally:?}",
        token.store().name()
    );
    report_invisible_files(&token, &format!("keys import, signal {signal}"));
    tally
}

/// `keys generate --key-type <key_type>`, sent `signal` `kills` times.
pub(crate) fn kill_generate(key_type: &str, signal: libc::c_int, kills: usize) -> Tally {
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
    let (normal, writes) = normal_run(&token, &generate(FRESH));
    let campaign = Campaign {
        token: &token,
        normal,
        writes,
        expected_kid: None,
        kills,
        signal,
    };
    eprintln!(
        "{}: keys generate {key_type} takes {:?} and {writes} writes uninterrupted",
        token.store().name(),
        campaign.normal
    );
    let tally = campaign.run(
        &mut Rng::from_env_or_clock(&format!("keys generate {key_type}, signal {signal}")),
        generate,
    );
    eprintln!(
        "{}: keys generate {key_type}, {kills} times signal {signal}: {tally:?}",
        token.store().name()
    );
    report_invisible_files(
        &token,
        &format!("keys generate {key_type}, signal {signal}"),
    );
    tally
}

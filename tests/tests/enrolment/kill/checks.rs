//! What a killed command may leave: every invariant checked after a kill,
//! and what the kill left removed again.

use integration_tests::{jws_part, sha1_thumbprint, verify_jwt, OutputExt, TestToken};
use serde_json::Value;

use super::{ENROLLED, FRESH};

/// What a killed command left, as the checks found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
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
pub(crate) struct Baseline {
    kid: String,
    pem: Vec<u8>,
}

pub(crate) fn enrol_baseline(token: &TestToken) -> Baseline {
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

/// Every invariant after one kill; then removes what the kill left, so
/// the next trial starts from the baseline again.
pub(crate) fn check_and_clean(
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

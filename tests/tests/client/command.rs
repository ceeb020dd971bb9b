//! The `access-token` command: the bare token or the header line, exit codes
//! that tell the failures apart, `status`, `decode` and `verify`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use access_token_client::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::daemon::{
    client_as, client_binary, exported_cert, open_socket_to_others, ttd_token, Daemon,
};
use integration_tests::{
    jws_part, openssl, rsa_self_signed, sha1_thumbprint, ttd_pem, ttd_pfx, unix_now, verify_jwt,
    OutputExt, TestToken, PATIENCE,
};

use crate::{access_token, blocking_client, single_line, token_granting_an_unknown_issuer};

#[test]
fn the_token_command_prints_the_bare_token_or_the_header() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let pem = exported_cert(&token, "pem");

    let out = access_token(&daemon.socket, &["token", "--issuer", "ttd", "--app", "a"]).success();
    let bare = single_line(&out);
    assert_eq!(verify_jwt(&bare, &pem, "ttd")["urn:altinn:app"], "a");
    assert!(out.stderr.is_empty(), "{}", out.stderr_text());

    // --socket wins over the environment.
    let out = Command::new(client_binary())
        .env(
            access_token_client::SOCKET_ENV,
            token.path().join("absent.sock"),
        )
        .args(["--socket", daemon.socket.to_str().unwrap()])
        .args(["token", "--issuer", "ttd", "--app", "b", "--header"])
        .output()
        .unwrap()
        .success();
    let line = single_line(&out);
    let header = line
        .strip_prefix("PlatformAccessToken: ")
        .unwrap_or_else(|| panic!("a header line: {line:?}"));
    assert_eq!(verify_jwt(header, &pem, "ttd")["urn:altinn:app"], "b");
}

#[test]
fn the_token_command_exit_codes_tell_the_failures_apart() {
    let token = token_granting_an_unknown_issuer("p256", "");
    let daemon = Daemon::start(&token);
    let run = |args: &[&str]| access_token(&daemon.socket, args);

    let not_granted = run(&["token", "--issuer", "nope", "--app", "a"]).exit(3);
    assert!(not_granted.stdout.is_empty());
    assert!(
        not_granted.stderr_text().contains("no grant for"),
        "the agent's detail: {}",
        not_granted.stderr_text()
    );
    let unknown = run(&["token", "--issuer", "other", "--app", "a"]).exit(4);
    assert!(
        unknown.stderr_text().contains("other"),
        "{}",
        unknown.stderr_text()
    );
    let malformed = run(&["token", "--issuer", "ttd", "--app", "a\nb"]).exit(2);
    assert!(malformed.stderr_text().contains("bad request"));
    let usage = run(&["token", "--issuer"]).exit(2);
    assert!(
        usage.stderr_text().contains("--issuer"),
        "{}",
        usage.stderr_text()
    );
    run(&["token", "--bogus"]).exit(2);
    run(&["frobnicate"]).exit(2);

    let absent = token.path().join("absent.sock");
    let unreachable = access_token(&absent, &["token", "--issuer", "ttd", "--app", "a"]).exit(5);
    let message = unreachable.stderr_text();
    assert!(message.contains(absent.to_str().unwrap()), "{message}");
    assert!(message.contains("ACCESS_TOKEN_AGENT_SOCKET"), "{message}");

    let help = run(&["--help"]).success().stdout_text();
    for (code, meaning) in [
        (2, "usage"),
        (3, "not granted"),
        (4, "unknown issuer"),
        (5, "unreachable"),
        (7, "verify"),
    ] {
        assert!(
            help.lines()
                .any(|line| line.starts_with(&format!("  {code}  ")) && line.contains(meaning)),
            "exit code {code} ({meaning}) in --help:\n{help}"
        );
    }
}

#[test]
fn status_shows_readiness_and_the_callers_grants() {
    let token = token_granting_an_unknown_issuer("p256", "");
    open_socket_to_others(&token);
    let daemon = Daemon::start(&token);
    let out = access_token(&daemon.socket, &["status"]).success();
    let text = out.stdout_text();
    assert!(text.contains("ready: yes"), "{text}");
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    assert!(text.contains(&format!("uid {me}")), "{text}");
    assert!(text.contains("issuer ttd apps *"), "{text}");
    assert!(text.contains("issuer other apps *"), "{text}");

    // Another user without grants is told so.
    let nobody = client_as(65534, 65534, &daemon.socket, &["status"]);
    let text = nobody.success().stdout_text();
    assert!(text.contains("ready: yes"), "{text}");
    assert!(text.contains("granted: nothing"), "{text}");

    let absent = token.path().join("absent.sock");
    access_token(&absent, &["status"]).exit(5);
}

#[test]
fn status_says_not_ready_while_the_hsm_is_away() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    token.move_away();
    let deadline = Instant::now() + PATIENCE;
    let out = loop {
        let out = access_token(&daemon.socket, &["status"]);
        if out.code() != 0 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.exit(6);
    assert!(
        out.stdout_text().contains("ready: no"),
        "{}",
        out.stdout_text()
    );
    assert!(
        out.stdout_text().contains("issuer ttd"),
        "grants still shown"
    );
    let refused = access_token(&daemon.socket, &["token", "--issuer", "ttd", "--app", "a"]);
    let message = refused.exit(6).stderr_text();
    assert!(
        message.starts_with("access-token: agent unavailable: "),
        "{message}"
    );
    token.bring_back();
}

/// The JSON a `decode` output line `name: {...}` starts, up to the next
/// line that starts without indentation.
fn decoded_json(text: &str, name: &str) -> serde_json::Value {
    let start = text
        .find(&format!("{name}: "))
        .unwrap_or_else(|| panic!("{name} in {text}"))
        + name.len()
        + 2;
    let rest = &text[start..];
    let end = rest.find("\n}").expect("the JSON's closing brace") + 2;
    serde_json::from_str(&rest[..end]).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))
}

#[test]
fn decode_shows_header_claims_and_time_left() {
    let token = ttd_token("p256", "");
    let daemon = Daemon::start(&token);
    let issued = blocking_client(Client::new(&daemon.socket))
        .token(Some("ttd"), Some("a"))
        .unwrap();
    let before = unix_now();
    let out = access_token(&daemon.socket, &["decode", &issued.token]).success();
    let after = unix_now();
    let text = out.stdout_text();
    assert_eq!(decoded_json(&text, "header"), jws_part(&issued.token, 0));
    assert_eq!(decoded_json(&text, "claims"), jws_part(&issued.token, 1));
    let left: i64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("time left: ")?
                .strip_suffix(" s")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("time left in {text}"));
    assert!(
        (issued.expires_at - after..=issued.expires_at - before).contains(&left),
        "{left}"
    );

    let expired = mint_at(&altinn_ttd_token(), unix_now() - 3600);
    let text = access_token(&daemon.socket, &["decode", &expired])
        .success()
        .stdout_text();
    assert!(text.contains("time left: none, expired"), "{text}");
    access_token(&daemon.socket, &["decode", "not-a-token"]).exit(2);
}

/// A token holding Altinn's ttd test key (tests/data/ttd-org.pfx), whose
/// certificate is valid from 2020 to 2030, so tokens can be minted in the
/// past; generated keys' certificates start now.
fn altinn_ttd_token() -> TestToken {
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let pfx = token.path().join("ttd-org.pfx");
    std::fs::copy(ttd_pfx(), &pfx).unwrap();
    let pfx = pfx.to_str().unwrap();
    let args = ["keys", "import", "--issuer", "ttd", "--pfx", pfx];
    token.agent(&args).success();
    token
}

/// A token for ttd/a minted by the agent as of `now` (Unix seconds).
fn mint_at(token: &TestToken, now: i64) -> String {
    let now = now.to_string();
    let args = ["mint", "--issuer", "ttd", "--app", "a", "--now", &now];
    token.agent(&args).success().stdout_text().trim().to_owned()
}

/// `token` with its claims replaced by `claims` and its signature kept.
fn with_claims(token: &str, claims: &serde_json::Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{}.{claims}.{}", parts[0], parts[2])
}

#[test]
fn verify_checks_tokens_as_platform_does_and_says_what_fails() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let issued = blocking_client(Client::new(&daemon.socket))
        .token(Some("ttd"), Some("a"))
        .unwrap();
    let socket = &daemon.socket;
    let verify = |cert: &Path, jwt: &str| {
        access_token(socket, &["verify", "--cert", cert.to_str().unwrap(), jwt])
    };

    let pem = token.write_file("ttd.pem", exported_cert(&token, "pem"));
    let der = token.write_file("ttd.der", exported_cert(&token, "der"));
    let keyvault = token.write_file("ttd.b64", exported_cert(&token, "keyvault"));
    assert_eq!(
        openssl(token.path(), &["x509", "-inform", "der", "-in", "ttd.der"]).stdout,
        std::fs::read(&pem).unwrap(),
        "the DER export is the PEM's certificate"
    );
    for cert in [&pem, &der, &keyvault] {
        let out = verify(cert, &issued.token).success();
        assert!(
            out.stdout_text().starts_with("valid"),
            "{}",
            out.stdout_text()
        );
    }

    let mut claims = jws_part(&issued.token, 1);
    claims["urn:altinn:app"] = "someone-elses-app".into();
    let tampered = verify(&pem, &with_claims(&issued.token, &claims)).exit(7);
    let tampered = tampered.stderr_text();
    assert!(
        tampered.contains("altered after it was signed"),
        "{tampered}"
    );

    let minted_at = unix_now() - 3600;
    let expired = verify(&ttd_pem(), &mint_at(&altinn_ttd_token(), minted_at)).exit(7);
    let expired = expired.stderr_text();
    // Altinn's lifetime is 300 s: exp is the minting time plus 300.
    assert!(
        expired.contains(&format!("expired at {}", minted_at + 300)),
        "{expired}"
    );

    let other = rsa_self_signed(token.path(), "other", 2048, "/CN=other");
    let wrong = verify(&other.cert, &issued.token).exit(7);
    let wrong = wrong.stderr_text();
    assert!(
        wrong.contains(&sha1_thumbprint(&pem)),
        "names the signer: {wrong}"
    );
    assert!(
        wrong.contains(&sha1_thumbprint(&other.cert)),
        "and this cert: {wrong}"
    );

    let messages: BTreeSet<_> = [&tampered, &expired, &wrong].into_iter().collect();
    assert_eq!(messages.len(), 3, "each failure has its own message");

    // The certificate outside its validity: Platform refuses it too.
    let far_future = (unix_now() + 100 * 365 * 86_400).to_string();
    let pem_path = pem.to_str().unwrap();
    let args = [
        "verify",
        "--now",
        &far_future,
        "--cert",
        pem_path,
        &issued.token,
    ];
    let late = access_token(socket, &args).exit(7);
    assert!(
        late.stderr_text().contains("certificate has expired"),
        "{}",
        late.stderr_text()
    );

    let not_a_cert = token.write_file("garbage.pem", "hello");
    let out = verify(&not_a_cert, &issued.token).exit(2);
    assert!(
        out.stderr_text().contains("certificate"),
        "{}",
        out.stderr_text()
    );
}

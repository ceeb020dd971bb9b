//! The HSM across a process boundary: a real `p11-kit server` serves the
//! token (SoftHSM's, and Kryoptic's) over a Unix socket, and the agent loads p11-kit's client
//! module, finding the server through `[hsm] environment`. Enrolment,
//! listing and serving through it, checked against the token itself (seen
//! in process, without the server) and against openssl. The server going
//! away is in `hsm_faults::p11_kit`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::daemon::{issuer_granted_to_me, serve_config, Daemon};
use integration_tests::on_every_store;
use integration_tests::p11kit::P11KitServer;
use integration_tests::{
    jws_part, openssl_sign_sha256, rsa_self_signed, sha1_thumbprint, verify_jwt, OutputExt,
    Pkcs12Kind, TestToken,
};

/// Runs the agent with `args` on the token through the server only.
fn remote(token: &TestToken, args: &[&str]) -> std::process::Output {
    let mut command = token.command(args);
    P11KitServer::only_through(token, &mut command);
    command.output().expect("run access-token-agent")
}

on_every_store! {
    fn keys_enrolled_listed_and_served_through_p11_kit_remoting() {
        let token = TestToken::new();
        let server = P11KitServer::start(&token);
        let grants = format!(
            "{}\n{}",
            issuer_granted_to_me("ttd"),
            issuer_granted_to_me("digdir")
        );
        server.write_config(&token, &serve_config(&token, &grants));

        let files = rsa_self_signed(token.path(), "org", 2048, "/CN=ttd");
        let pfx = files.pkcs12("", Pkcs12Kind::Modern);
        let pfx = pfx.to_str().unwrap();
        let out = remote(&token, &["keys", "import", "--issuer", "ttd", "--pfx", pfx]).success();
        let rsa_kid = out.stdout_text().trim().to_owned();
        assert_eq!(rsa_kid, sha1_thumbprint(&files.cert));
        let out = remote(
            &token,
            &[
                "keys",
                "generate",
                "--issuer",
                "digdir",
                "--key-type",
                "p256",
            ],
        );
        let ec_kid = out.success().stdout_text().trim().to_owned();

        // What the agent lists through the socket is what is on the token.
        let listed = remote(&token, &["keys", "list", "--json"]).success();
        let remote_rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let local_config = std::fs::read_to_string(token.config_path()).unwrap();
        token.write_config(&serve_config(&token, &grants));
        let local_rows = serde_json::Value::Array(token.keys_json());
        std::fs::write(token.config_path(), local_config).unwrap();
        assert_eq!(remote_rows, local_rows);
        for kid in [&rsa_kid, &ec_kid] {
            let row = remote_rows
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["kid"] == kid.as_str());
            let row = row.unwrap_or_else(|| panic!("{kid} in {remote_rows:#}"));
            assert_eq!(
                (row["usable"].clone(), row["active"].clone()),
                (true.into(), true.into())
            );
        }

        let mut daemon = Daemon::spawn(&token, |mut command| {
            P11KitServer::only_through(&token, &mut command);
            command
        });
        daemon = daemon.ready(&token);
        let client = daemon.client();
        // RS256 is deterministic: openssl with the key's PEM gives the same bytes.
        let rs256 = client
            .token(Some("ttd"), Some("app"))
            .expect("an RS256 token")
            .token;
        let (signing_input, signature) = rs256.rsplit_once('.').unwrap();
        let expected = openssl_sign_sha256(&files.key, signing_input.as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap(), expected);
        assert_eq!(jws_part(&rs256, 0)["kid"], rsa_kid.as_str());
        // ES256 through CKM_ECDSA, which p11-kit forwards.
        let es256 = client
            .token(Some("digdir"), Some("app"))
            .expect("an ES256 token")
            .token;
        let pem = remote(
            &token,
            &[
                "keys",
                "export-cert",
                "--issuer",
                "digdir",
                "--format",
                "pem",
            ],
        );
        verify_jwt(&es256, &pem.success().stdout, "digdir");
        assert_eq!(jws_part(&es256, 0)["alg"], "ES256");
    }
}

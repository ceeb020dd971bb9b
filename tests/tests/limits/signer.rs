//! The signing back against real SoftHSM: the thread pool under concurrent
//! load, the cache's single flight, the bounded queue, reloads, and the
//! start-up self-test.

use std::sync::{Arc, Barrier};

use access_token_agent::back::ConnectError;
use access_token_agent::issue::{IssueError, TokenSource};
use integration_tests::signer::{exported_pem, serial, token_with_key, Running};
use integration_tests::{openssl, rsa_self_signed, sha1_thumbprint, verify_jwt, OutputExt};

#[test]
fn concurrent_requests_from_many_threads_each_get_a_token_that_verifies() {
    let _serial = serial();
    let token = token_with_key(
        "rsa2048",
        "[token]\ncache = false\n[signing]\nthreads = 2\n",
    );
    let running = Running::start(&token).unwrap();
    let pem = exported_pem(&token, "ttd");

    let threads = 8;
    let per_thread = 25;
    let start = Arc::new(Barrier::new(threads));
    let tokens: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let start = Arc::clone(&start);
                let running = &running;
                scope.spawn(move || {
                    start.wait();
                    (0..per_thread)
                        .map(|n| {
                            let app = format!("app-{t}-{n}");
                            (app.clone(), running.issue("ttd", &app).unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });

    assert_eq!(tokens.len(), threads * per_thread);
    for (app, issued) in &tokens {
        let claims = verify_jwt(&issued.token, pem.as_bytes(), "ttd");
        assert_eq!(claims["urn:altinn:app"], app.as_str());
        assert_eq!(claims["exp"].as_i64(), Some(issued.expires_at));
        assert!(!issued.cache_hit);
    }
    // Every request was one C_Sign on a pool thread.
    assert_eq!(
        running.metric("access_token_agent_signing_seconds_count"),
        (threads * per_thread) as f64
    );
    assert_eq!(running.metric("access_token_agent_sessions_busy"), 0.0);
}

#[test]
fn a_burst_for_one_app_costs_one_signature_and_shares_the_token() {
    let _serial = serial();
    // ECDSA signatures differ every time, so equal tokens prove sharing.
    let token = token_with_key("p256", "");
    let running = Running::start(&token).unwrap();
    let requests = 64;
    let start = Arc::new(Barrier::new(requests));
    let issued: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..requests)
            .map(|_| {
                let start = Arc::clone(&start);
                let running = &running;
                scope.spawn(move || {
                    start.wait();
                    running.issue("ttd", "burst").unwrap()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(issued.iter().all(|i| i.token == issued[0].token));
    assert_eq!(issued.iter().filter(|i| !i.cache_hit).count(), 1);
    assert_eq!(
        running.metric("access_token_agent_signing_seconds_count"),
        1.0
    );
    assert_eq!(running.metric("access_token_agent_cache_misses_total"), 1.0);
    assert_eq!(
        running.metric("access_token_agent_cache_hits_total"),
        (requests - 1) as f64
    );
    verify_jwt(
        &issued[0].token,
        exported_pem(&token, "ttd").as_bytes(),
        "ttd",
    );
}

#[test]
fn a_full_queue_refuses_as_overloaded_and_the_rest_are_served() {
    let _serial = serial();
    let token = token_with_key(
        "rsa2048",
        "[token]\ncache = false\n[signing]\nthreads = 1\nqueue_size = 1\n",
    );
    let running = Running::start(&token).unwrap();
    let requests = 32;
    let start = Arc::new(Barrier::new(requests));
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..requests)
            .map(|n| {
                let start = Arc::clone(&start);
                let running = &running;
                scope.spawn(move || {
                    start.wait();
                    running.issue("ttd", &format!("app-{n}"))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let overloaded = outcomes
        .iter()
        .filter(|o| matches!(o, Err(IssueError::Overloaded)))
        .count();
    let served = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(
        overloaded > 0,
        "one thread and one queue slot for {requests} requests"
    );
    assert_eq!(overloaded + served, requests, "{outcomes:?}");
    assert!(
        running.issue("ttd", "after").is_ok(),
        "served again once idle"
    );
}

#[test]
fn reload_activates_a_newly_enrolled_key_and_refuses_an_issuer_without_one() {
    let _serial = serial();
    let token = token_with_key("rsa2048", "");
    let running = Running::start(&token).unwrap();
    let old = running.issue("ttd", "a").unwrap();
    assert!(matches!(
        running.issue("digdir", "a"),
        Err(IssueError::UnknownIssuer(name)) if name == "digdir"
    ));

    // A later not-before makes the new key the active one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    token.generate("ttd", None).success();
    running.reload(&token).unwrap();
    let new = running.issue("ttd", "a").unwrap();
    assert_ne!(new.kid, old.kid);
    assert!(!new.cache_hit, "the old key's token is not served");
    let pem = exported_pem(&token, "ttd");
    verify_jwt(&new.token, pem.as_bytes(), "ttd");
    let metrics = running.metrics.render();
    assert!(
        metrics.contains(&format!("issuer=\"ttd\",kid=\"{}\"", new.kid)),
        "{metrics}"
    );

    // An issuer with no key on the token: the whole reload is refused.
    token.write_config("[[issuer]]\nname = \"ttd\"\n[[issuer]]\nname = \"digdir\"\n");
    let refused = running.reload(&token).unwrap_err();
    assert!(refused.contains("\"digdir\""), "{refused}");
    assert!(
        refused.contains("keys import"),
        "says how to enrol: {refused}"
    );
    assert!(matches!(
        running.issue("digdir", "a"),
        Err(IssueError::UnknownIssuer(_))
    ));
    assert_eq!(running.issue("ttd", "b").unwrap().kid, new.kid);
    assert_eq!(running.signer.readiness(), Ok(()));
}

#[test]
fn start_refuses_a_private_key_that_does_not_belong_to_its_certificate() {
    let _serial = serial();
    let token = integration_tests::TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let dir = token.path();
    let signing = rsa_self_signed(dir, "signing", 2048, "/CN=ttd");
    let other = rsa_self_signed(dir, "other", 2048, "/CN=ttd");
    // The objects pair up by CKA_ID, the certificate's thumbprint: the
    // private key of one pair under the certificate of the other.
    let key_der = dir.join("signing.der");
    let key_path = signing.key.to_str().unwrap().to_owned();
    let der_path = key_der.to_str().unwrap().to_owned();
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", &key_path, "-outform", "DER", "-out", &der_path,
        ],
    );
    let cert_der = dir.join("other.der");
    std::fs::write(&cert_der, integration_tests::cert_der(&other.cert)).unwrap();
    let id = sha1_thumbprint(&other.cert).to_ascii_lowercase();
    let pin = integration_tests::PIN;
    for (file, kind) in [(&key_der, "privkey"), (&cert_der, "cert")] {
        token
            .pkcs11_tool(&[
                "--login",
                "--pin",
                pin,
                "--write-object",
                file.to_str().unwrap(),
                "--type",
                kind,
                "--id",
                &id,
                "--label",
                "ttd",
                "--usage-sign",
            ])
            .success();
    }

    let Err(error) = Running::start(&token) else {
        panic!("a mismatched key pair must not start");
    };
    // Its modulus is not the certificate's: refused before any signature.
    assert!(matches!(error, ConnectError::Hsm(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("the certificate does not hold the public key shown by the private key"),
        "{message}"
    );
    assert!(
        message.contains(&sha1_thumbprint(&other.cert)),
        "names the kid: {message}"
    );
}

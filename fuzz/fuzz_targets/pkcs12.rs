//! The PKCS#12 reading step of `keys import` on arbitrary bytes, with the
//! empty password Altinn's files use: it never panics, refusals carry a
//! message, and what it accepts is a supported key with its own certificate.

#![no_main]

use access_token_agent::cert::Certificate;
use access_token_agent::hsm::enrol::import::read_pkcs12;
use access_token_agent::hsm::enrol::EnrolError;
use access_token_agent::key_type::{KeyKind, MIN_RSA_BITS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| match read_pkcs12(data, "") {
    Ok(material) => {
        let cert = &material.certificate;
        let again =
            Certificate::from_der(&cert.der).expect("the accepted certificate parses again");
        assert_eq!(again.thumbprint, cert.thumbprint);
        match cert.key {
            KeyKind::Rsa { bits } => assert!(bits >= MIN_RSA_BITS),
            KeyKind::P256 => {}
        }
    }
    Err(EnrolError::Input(message)) => assert!(!message.trim().is_empty()),
    Err(other) => panic!("reading a file touched the token: {other}"),
});

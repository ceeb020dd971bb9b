//! Choosing the active key, and the rules that judge a pair: real keys and
//! certificates made with OpenSSL, objects as a token would report them.

use openssl::pkey::{PKey, Private};

use super::objects::{CertificateObject, PublicKey};
use super::*;
use crate::key_type::{public_key_bytes, KeyKind};
use crate::test_keys::{certificate, p256, rsa};

// SAFETY: the handles are never passed to a PKCS#11 module.
fn handle(raw: u64) -> ObjectHandle {
    unsafe { ObjectHandle::new_from_raw(raw) }
}

/// A complete pair of `issuer` whose certificate is valid from
/// `not_before` to `not_after`; `n` tells pairs apart.
fn pair(issuer: &str, n: u8, not_before: i64, not_after: i64) -> KeyPair {
    let thumbprint = [n; 20];
    KeyPair {
        issuer: issuer.into(),
        id: thumbprint.to_vec(),
        key_id: thumbprint.to_vec(),
        certificate: Some((
            handle(2 * u64::from(n)),
            Certificate {
                der: Vec::new(),
                thumbprint,
                subject: format!("CN={issuer}"),
                not_before,
                not_after,
                key: KeyKind::P256,
            },
        )),
        private_key: Some(generated_key(2 * u64::from(n) + 1)),
        public_key: None,
        flaws: Vec::new(),
        ignored: Vec::new(),
    }
}

/// A private key as `keys generate` leaves it.
fn generated_key(raw: u64) -> PrivateKey {
    PrivateKey {
        handle: handle(raw),
        token: Some(true),
        private: Some(true),
        sensitive: Some(true),
        extractable: Some(false),
        always_sensitive: Some(true),
        never_extractable: Some(true),
        sign: Some(true),
        local: Some(true),
    }
}

/// A private key as `keys import` leaves it on a token that tells the
/// truth about its past (Kryoptic).
fn imported_key(raw: u64) -> PrivateKey {
    PrivateKey {
        always_sensitive: Some(false),
        never_extractable: Some(false),
        local: Some(false),
        ..generated_key(raw)
    }
}

/// The public values a token shows for `key`: RSA's on the private key
/// object, an EC point (DER-wrapped, as SoftHSM gives it) on a public key.
fn values_of(key: &PKey<Private>) -> Vec<Attribute> {
    match key.rsa() {
        Ok(rsa) => vec![
            Attribute::Modulus(rsa.n().to_vec()),
            Attribute::PublicExponent(rsa.e().to_vec()),
        ],
        Err(_) => {
            let mut point = vec![0x04, 0x41];
            point.extend(public_key_bytes(key).unwrap());
            vec![Attribute::EcPoint(point)]
        }
    }
}

/// The objects of a pair: `key`'s certificate (its thumbprint the pair's
/// CKA_ID), the private key `private` showing `key`'s values if RSA, and a
/// public key object generated with it.
fn members(key: &PKey<Private>, private: PrivateKey) -> (Vec<u8>, Members) {
    let cert = certificate(key);
    let id = cert.thumbprint.to_vec();
    let rsa_values = if key.rsa().is_ok() {
        values_of(key)
    } else {
        Vec::new()
    };
    let members = Members {
        certificates: vec![CertificateObject {
            handle: handle(1),
            parsed: Ok(cert),
        }],
        private_keys: vec![(private, rsa_values)],
        public_keys: vec![PublicKey {
            handle: handle(3),
            private: Some(false),
            local: Some(true),
            values: values_of(key),
        }],
    };
    (id, members)
}

fn flaws(id: Vec<u8>, members: Members) -> Vec<Flaw> {
    KeyPair::judged("ttd".into(), id, members).flaws
}

#[test]
fn generated_pairs_of_both_key_types_are_usable() {
    for key in [rsa(), p256()] {
        let (id, members) = members(&key, generated_key(2));
        let pair = KeyPair::judged("ttd".into(), id, members);
        assert!(pair.is_usable(), "{}", pair.why_not_usable());
        assert!(pair.signing_key().is_some());
    }
}

#[test]
fn an_imported_key_need_not_be_never_extractable_but_must_not_leave_now() {
    let key = rsa();
    let (id, mut members) = members(&key, imported_key(2));
    members.public_keys.clear();
    assert_eq!(flaws(id.clone(), members), []);

    for (private, why) in [
        (
            PrivateKey {
                extractable: Some(true),
                ..imported_key(2)
            },
            "is extractable (CKA_EXTRACTABLE)",
        ),
        (
            PrivateKey {
                extractable: None,
                ..imported_key(2)
            },
            "is extractable (CKA_EXTRACTABLE)",
        ),
        (
            PrivateKey {
                sensitive: Some(false),
                ..imported_key(2)
            },
            "is not sensitive (CKA_SENSITIVE)",
        ),
        (
            PrivateKey {
                private: Some(false),
                ..imported_key(2)
            },
            "is not private: it was written without logging in (CKA_PRIVATE)",
        ),
        (
            PrivateKey {
                sign: Some(false),
                ..imported_key(2)
            },
            "may not sign (CKA_SIGN)",
        ),
        (
            PrivateKey {
                token: Some(false),
                ..imported_key(2)
            },
            "is a session object, not a token object (CKA_TOKEN)",
        ),
    ] {
        let (id, mut members) = self::members(&key, private);
        members.public_keys.clear();
        assert_eq!(flaws(id, members), [Flaw::Protection(why)]);
    }
}

#[test]
fn a_key_generated_on_the_token_must_never_have_been_extractable_or_readable() {
    let key = p256();
    let once_extractable = PrivateKey {
        never_extractable: Some(false),
        ..generated_key(2)
    };
    let once_readable = PrivateKey {
        always_sensitive: Some(false),
        ..generated_key(2)
    };
    for private in [once_extractable, once_readable] {
        let (id, members) = members(&key, private);
        let found = flaws(id, members);
        assert!(
            matches!(found.as_slice(), [Flaw::Protection(why)] if why.starts_with("was generated on the token")),
            "{found:?}"
        );
    }
}

#[test]
fn the_certificate_must_hold_the_key_and_carry_the_pairs_id() {
    let (key, other) = (rsa(), rsa());
    // The certificate of another key, under the key's own CKA_ID.
    let (_, mut members) = members(&key, imported_key(2));
    let (id, foreign) = self::members(&other, imported_key(2));
    members.certificates = foreign.certificates;
    members.public_keys.clear();
    assert_eq!(flaws(id, members), [Flaw::OtherKey("the private key")]);

    let (id, members) = self::members(&key, generated_key(2));
    let thumbprint = crate::token::upper_hex(&id);
    let mut wrong_id = id.clone();
    wrong_id[0] ^= 1;
    assert_eq!(
        flaws(wrong_id, members),
        [Flaw::ForeignCertificate(thumbprint)]
    );
}

#[test]
fn a_public_key_object_anyone_could_write_proves_nothing() {
    let key = p256();
    let (id, mut members) = members(&key, imported_key(2));
    // An imported EC key shows no point; a public object written without
    // logging in is no evidence, whatever it holds.
    members.public_keys[0].local = Some(false);
    let pair = KeyPair::judged("ttd".into(), id, members);
    assert_eq!(pair.flaws, [Flaw::Unproven]);
    assert_eq!(pair.ignored.len(), 1, "{:?}", pair.ignored);

    // Written while logged in (private), as `keys import` writes it: raw
    // points (Kryoptic) and DER-wrapped ones (SoftHSM) alike.
    let raw = vec![Attribute::EcPoint(public_key_bytes(&key).unwrap())];
    for values in [values_of(&key), raw] {
        let (id, mut members) = self::members(&key, imported_key(2));
        members.public_keys[0].private = Some(true);
        members.public_keys[0].local = Some(false);
        members.public_keys[0].values = values;
        assert_eq!(flaws(id, members), []);
    }

    // A trusted public key object of another key spoils the pair.
    let (id, mut members) = self::members(&key, generated_key(2));
    members.public_keys[0].values = values_of(&p256());
    assert_eq!(
        flaws(id, members),
        [Flaw::OtherKey("its public key object")]
    );
}

#[test]
fn two_objects_of_one_class_stop_the_issuer_and_only_it() {
    let key = rsa();
    let (id, mut members) = members(&key, generated_key(2));
    let copy = members.certificates[0].clone();
    members.certificates.push(copy);
    let ambiguous = KeyPair::judged("ttd".into(), id, members);
    assert!(ambiguous.is_ambiguous());
    assert_eq!(
        ambiguous.flaws,
        [Flaw::Duplicate {
            class: "certificate",
            count: 2
        }]
    );
    let (id, members) = self::members(&rsa(), generated_key(5));
    let good = KeyPair::judged("ttd".into(), id, members);
    let (id, members) = self::members(&rsa(), generated_key(6));
    let other_issuer = KeyPair::judged("digdir".into(), id, members);
    let pairs = [ambiguous, good, other_issuer];
    let now = crate::clock::unix_now();
    assert!(select_active(&pairs, "ttd", None, now).is_none());
    assert!(select_active(&pairs, "digdir", None, now).is_some());
    let why = why_none(&pairs[..2]);
    assert!(
        why.contains("2 certificate objects carry this label and kid"),
        "{why}"
    );
    assert!(why.contains("pkcs11-tool --list-objects"), "{why}");
}

#[test]
fn an_unparsable_certificate_or_a_missing_member_is_named() {
    let key = rsa();
    let (id, mut members) = members(&key, generated_key(2));
    members.certificates[0].parsed = Err("not DER".into());
    assert_eq!(
        flaws(id.clone(), members),
        [Flaw::UnreadableCertificate("not DER".into())]
    );
    let (_, mut members) = self::members(&key, generated_key(2));
    members.private_keys.clear();
    assert_eq!(flaws(id.clone(), members), [Flaw::NoPrivateKey]);
    let (_, mut members) = self::members(&key, generated_key(2));
    members.certificates.clear();
    assert_eq!(
        flaws(Vec::new(), members),
        [Flaw::NoId, Flaw::NoCertificate]
    );
}

fn chosen(pairs: &[KeyPair], pinned: Option<&str>, now: i64) -> Option<String> {
    select_active(pairs, "ttd", pinned, now).map(KeyPair::kid)
}

#[test]
fn the_valid_key_with_the_latest_not_before_is_active() {
    let pairs = [
        pair("ttd", 1, 100, 1000),
        pair("ttd", 2, 500, 2000),
        pair("digdir", 3, 600, 3000),
    ];
    let (old, new) = (pairs[0].kid(), pairs[1].kid());
    assert_eq!(chosen(&pairs, None, 99), None);
    assert_eq!(chosen(&pairs, None, 499), Some(old.clone()));
    assert_eq!(chosen(&pairs, None, 1000), Some(new.clone()));
    assert_eq!(chosen(&pairs, None, 2000), Some(new));
    assert_eq!(
        chosen(&pairs, None, 2001),
        None,
        "every certificate has expired"
    );
}

#[test]
fn a_pinned_key_is_active_only_while_its_certificate_is_valid() {
    let pairs = [pair("ttd", 1, 100, 1000), pair("ttd", 2, 500, 2000)];
    let old = pairs[0].kid();
    let pinned = Some(old.as_str());
    assert_eq!(chosen(&pairs, pinned, 600), Some(old.clone()));
    assert_eq!(
        chosen(&pairs, Some(&old.to_ascii_lowercase()), 1000),
        Some(old.clone())
    );
    assert_eq!(
        chosen(&pairs, pinned, 1001),
        None,
        "expired, though another key is valid"
    );
    assert_eq!(chosen(&pairs, pinned, 99), None, "not yet valid");
}

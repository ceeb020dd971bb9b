//! Every conversion is checked against OpenSSL: signatures it makes are
//! converted here and verified by it, never compared with values this
//! module produced.

use super::*;
use cryptoki::mechanism::MechanismType;
use openssl::ec::{EcGroup, EcKey};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};

const INPUT: &[u8] = b"eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ0dGQifQ";

fn p256() -> EcKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    EcKey::generate(&group).unwrap()
}

fn rsa(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
}

/// OpenSSL's DER signature of [`INPUT`] with SHA-256.
fn openssl_der_signature(key: &PKey<Private>) -> Vec<u8> {
    let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
    signer.sign_oneshot_to_vec(INPUT).unwrap()
}

/// OpenSSL's ECDSA signatures of [`INPUT`]: the first one, and the first
/// whose r or s is shorter than 32 bytes (about one in 128), which r||s
/// pads with zeros.
fn openssl_ecdsa_signatures(key: &EcKey<Private>) -> [EcdsaSig; 2] {
    let digest = openssl::sha::sha256(INPUT);
    let first = EcdsaSig::sign(&digest, key).unwrap();
    let short = (0..20_000)
        .map(|_| EcdsaSig::sign(&digest, key).unwrap())
        .find(|sig| sig.r().num_bytes() < 32 || sig.s().num_bytes() < 32)
        .expect("a short r or s within 20,000 signatures");
    [first, short]
}

/// OpenSSL's verdict on a JWS ES256 signature, read as r||s without this module.
fn openssl_verifies_jose(jose: &[u8], key: &EcKey<Private>) -> bool {
    let (r, s) = jose.split_at(32);
    let sig = EcdsaSig::from_private_components(
        BigNum::from_slice(r).unwrap(),
        BigNum::from_slice(s).unwrap(),
    )
    .unwrap();
    sig.verify(&openssl::sha::sha256(INPUT), key).unwrap()
}

#[test]
fn openssl_es256_der_signatures_become_jose_that_openssl_verifies() {
    let key = p256();
    let pkey = PKey::from_ec_key(key.clone()).unwrap();
    let der = openssl_der_signature(&pkey);
    let jose = Alg::Es256.der_to_jose(der).unwrap();
    assert_eq!(jose.len(), 64);
    assert!(openssl_verifies_jose(&jose, &key));
    for sig in openssl_ecdsa_signatures(&key) {
        let jose = Alg::Es256.der_to_jose(sig.to_der().unwrap()).unwrap();
        assert_eq!(jose.len(), 64);
        assert!(openssl_verifies_jose(&jose, &key));
    }
}

#[test]
fn openssl_es256_signatures_as_jose_become_der_that_openssl_verifies() {
    let key = p256();
    let pkey = PKey::from_ec_key(key.clone()).unwrap();
    for sig in openssl_ecdsa_signatures(&key) {
        let mut jose = sig.r().to_vec_padded(32).unwrap();
        jose.extend(sig.s().to_vec_padded(32).unwrap());
        let der = Alg::Es256.jose_to_der(jose).unwrap();
        let mut verifier = Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
        assert!(verifier.verify_oneshot(&der, INPUT).unwrap());
        assert_eq!(der, sig.to_der().unwrap(), "DER is canonical");
    }
}

#[test]
fn rs256_signatures_are_the_same_in_both_forms() {
    let key = rsa(2048);
    let der = openssl_der_signature(&key);
    let jose = Alg::Rs256.der_to_jose(der.clone()).unwrap();
    assert_eq!(jose, der);
    let back = Alg::Rs256.jose_to_der(jose).unwrap();
    let mut verifier = Verifier::new(Alg::Rs256.digest(), &key).unwrap();
    assert!(verifier.verify_oneshot(&back, INPUT).unwrap());
}

#[test]
fn es256_signatures_of_the_wrong_form_are_refused() {
    assert_eq!(
        Alg::Es256.jose_to_der(vec![1; 63]),
        Err(SignatureError::Length {
            got: 63,
            expected: 64
        })
    );
    assert!(matches!(
        Alg::Es256.der_to_jose(b"not DER".to_vec()),
        Err(SignatureError::Encoding(_))
    ));
    // A well-formed ECDSA-Sig-Value whose r does not fit P-256.
    let too_long = EcdsaSig::from_private_components(
        BigNum::from_slice(&[0x7f; 33]).unwrap(),
        BigNum::from_u32(1).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        Alg::Es256.der_to_jose(too_long.to_der().unwrap()),
        Err(SignatureError::Encoding(_))
    ));
}

#[test]
fn es256_is_signed_as_a_digest_and_rs256_as_the_input() {
    let (mechanism, data) = Alg::Es256.sign_request(INPUT);
    assert_eq!(mechanism.mechanism_type(), MechanismType::ECDSA);
    let digest = openssl::hash::hash(Alg::Es256.digest(), INPUT).unwrap();
    assert_eq!(data.as_ref(), &digest[..]);
    let (mechanism, data) = Alg::Rs256.sign_request(INPUT);
    assert_eq!(mechanism.mechanism_type(), MechanismType::SHA256_RSA_PKCS);
    assert_eq!(data.as_ref(), INPUT);
}

#[test]
fn openssl_keys_have_their_kind() {
    assert_eq!(KeyKind::of(&rsa(2048)), Some(KeyKind::Rsa { bits: 2048 }));
    assert!(!KeyKind::Rsa { bits: 2048 }.is_too_small());
    assert!(KeyKind::of(&rsa(1024)).unwrap().is_too_small());
    let p256 = PKey::from_ec_key(p256()).unwrap();
    assert_eq!(KeyKind::of(&p256), Some(KeyKind::P256));
    let p384 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
    let p384 = PKey::from_ec_key(p384).unwrap();
    assert_eq!(KeyKind::of(&p384), None);
    assert_eq!(curve(&p384), Some(Nid::SECP384R1));
    assert_eq!(KeyKind::of(&PKey::generate_ed25519().unwrap()), None);
    assert!(SUPPORTED_KEYS.contains(&MIN_RSA_BITS.to_string()));
}

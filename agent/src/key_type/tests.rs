//! Every conversion is checked against OpenSSL: signatures it makes are
//! converted here and verified by it, never compared with values this
//! module produced.

use super::*;
use clap::ValueEnum;
use cryptoki::mechanism::MechanismType;
use openssl::asn1::Asn1Object;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::pkey::{PKey, Private};
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

#[test]
fn key_generate_offers_the_listing_names() {
    let names: Vec<String> = KeyKind::value_variants()
        .iter()
        .map(|kind| {
            let value = kind.to_possible_value().unwrap();
            assert_eq!(value.get_name(), kind.name());
            assert_eq!(KeyKind::from_str(&kind.name(), false), Ok(*kind));
            kind.name()
        })
        .collect();
    assert_eq!(names, ["rsa2048", "rsa3072", "rsa4096", "p256"]);
    assert!(KeyKind::Rsa { bits: 1024 }.to_possible_value().is_none());
}

#[test]
fn pair_templates_carry_the_size_or_the_curve_oid() {
    let (mechanism, template) = KeyKind::Rsa { bits: 3072 }.pair_generation();
    assert_eq!(
        mechanism.mechanism_type(),
        MechanismType::RSA_PKCS_KEY_PAIR_GEN
    );
    let f4 = BigNum::from_u32(65_537).unwrap().to_vec();
    assert_eq!(
        template,
        [
            Attribute::ModulusBits(3072u64.into()),
            Attribute::PublicExponent(f4)
        ]
    );
    let (mechanism, template) = KeyKind::P256.pair_generation();
    assert_eq!(mechanism.mechanism_type(), MechanismType::ECC_KEY_PAIR_GEN);
    let oid = Asn1Object::from_str("1.2.840.10045.3.1.7").unwrap();
    assert_eq!(oid.nid(), Nid::X9_62_PRIME256V1);
    let mut der = vec![0x06, oid.as_slice().len() as u8];
    der.extend(oid.as_slice());
    assert_eq!(template, [Attribute::EcParams(der.clone())]);
    assert_eq!(
        KeyKind::P256.object_attributes(),
        [Attribute::KeyType(KeyType::EC), Attribute::EcParams(der)]
    );
}

#[test]
fn public_keys_are_encoded_as_openssl_encodes_them() {
    let rsa = Rsa::generate(2048).unwrap();
    let kind = KeyKind::Rsa { bits: 2048 };
    assert_eq!(kind.public_key_attributes().len(), 2);
    let values = [rsa.n().to_vec(), rsa.e().to_vec()];
    assert_eq!(
        kind.public_key_der(&values).unwrap(),
        rsa.public_key_to_der_pkcs1().unwrap()
    );
    let ec = p256();
    let mut context = BigNumContext::new().unwrap();
    let point = ec
        .public_key()
        .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut context)
        .unwrap();
    let mut wrapped = vec![0x04, 0x41];
    wrapped.extend(&point);
    for raw in [wrapped, point.clone()] {
        assert_eq!(KeyKind::P256.public_key_der(&[raw]).unwrap(), point);
    }
    let message = KeyKind::P256.public_key_der(&[point[..64].to_vec()]);
    assert_eq!(
        message,
        Err("the EC public point (CKA_EC_POINT) has an unexpected form (64 bytes)".into())
    );
}

#[test]
fn public_key_objects_hold_what_openssl_reads_from_the_key() {
    let rsa_key = rsa(2048);
    let kind = KeyKind::Rsa { bits: 2048 };
    let public = kind.public_key_of(&rsa_key).unwrap();
    let rsa = rsa_key.rsa().unwrap();
    assert_eq!(public, rsa.public_key_to_der_pkcs1().unwrap());
    let object = kind.public_key_object(&public).unwrap();
    assert_eq!(
        object,
        [
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(rsa.n().to_vec()),
            Attribute::PublicExponent(rsa.e().to_vec()),
        ]
    );

    let ec = PKey::from_ec_key(p256()).unwrap();
    let point = KeyKind::P256.public_key_of(&ec).unwrap();
    let mut context = BigNumContext::new().unwrap();
    let expected = ec
        .ec_key()
        .unwrap()
        .public_key()
        .to_bytes(
            ec.ec_key().unwrap().group(),
            PointConversionForm::UNCOMPRESSED,
            &mut context,
        )
        .unwrap();
    assert_eq!(point, expected);
    let object = KeyKind::P256.public_key_object(&point).unwrap();
    let Some(Attribute::EcPoint(wrapped)) = object.last() else {
        panic!("no CKA_EC_POINT in {object:?}");
    };
    assert_eq!(&wrapped[..2], [0x04, 65]);
    assert_eq!(
        KeyKind::P256
            .public_key_der(std::slice::from_ref(wrapped))
            .unwrap(),
        point
    );
    assert!(KeyKind::P256.public_key_object(&point[..64]).is_err());
}

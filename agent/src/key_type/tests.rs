use super::*;
use openssl::ec::{EcGroup, EcKey};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;

fn p256() -> EcKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    EcKey::generate(&group).unwrap()
}

fn rsa(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
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

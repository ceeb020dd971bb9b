//! Certificate subjects: as operators write them (`CN=ttd, O=Digdir, C=NO`),
//! and an existing certificate's, kept attribute by attribute with its
//! string type, for a renewed certificate or a request.

use openssl::x509::X509;
use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{DistinguishedName, DnType, DnValue};

use super::EnrolError;

/// Parses `CN=ttd, O=Digdir, C=NO`.
pub fn parse(subject: &str) -> Result<DistinguishedName, EnrolError> {
    let invalid = |why: String| {
        EnrolError::Input(format!(
            "--subject {subject:?}: {why}; write it as \"CN=name, O=organisation, C=NO\" (CN, O, OU, C, L, ST)"
        ))
    };
    let mut name = DistinguishedName::new();
    for part in subject.split(',').map(str::trim) {
        let (field, value) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("{part:?} is not FIELD=value")))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(invalid(format!("{field} is empty")));
        }
        let field = match field.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            other => return Err(invalid(format!("unknown field {other:?}"))),
        };
        name.push(field, value);
    }
    Ok(name)
}

/// The subject of the DER certificate `der`, every attribute in its order
/// with its type and string type.
pub fn of_certificate(der: &[u8]) -> Result<DistinguishedName, EnrolError> {
    let unreadable = |why: &str| EnrolError::Input(format!("the certificate's subject: {why}"));
    let name = X509::from_der(der)
        .and_then(|x509| x509.subject_name().to_der())
        .map_err(|e| unreadable(&e.to_string()))?;
    let mut out = DistinguishedName::new();
    let (_, mut sets, _) = element(&name, 0x30).ok_or_else(|| unreadable("not a Name"))?;
    while !sets.is_empty() {
        let (_, mut set, rest) = element(sets, 0x31).ok_or_else(|| unreadable("not a SET"))?;
        sets = rest;
        while !set.is_empty() {
            let (_, pair, rest) = element(set, 0x30).ok_or_else(|| unreadable("not a SEQUENCE"))?;
            set = rest;
            let (_, oid, value) = element(pair, 0x06).ok_or_else(|| unreadable("no type"))?;
            let (tag, bytes, _) = element(value, 0).ok_or_else(|| unreadable("no value"))?;
            let arcs = oid_arcs(oid).ok_or_else(|| unreadable("a malformed type"))?;
            let value = dn_value(tag, bytes).ok_or_else(|| {
                unreadable(&format!(
                    "a value of string type {tag:#04x} that cannot be kept"
                ))
            })?;
            out.push(DnType::from_oid(&arcs), value);
        }
    }
    Ok(out)
}

/// The first DER element of `input` if its tag is `tag` (0: any): the
/// tag, its contents and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if tag != 0 && found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7f);
            let digits = rest.get(..count)?;
            let len = digits
                .iter()
                .fold(0usize, |len, &byte| len << 8 | usize::from(byte));
            (len, &rest[count..])
        }
        _ => return None,
    };
    let contents = rest.get(..len)?;
    Some((found, contents, &rest[len..]))
}

/// An OBJECT IDENTIFIER's contents as its arcs.
fn oid_arcs(contents: &[u8]) -> Option<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for &byte in contents {
        value = value.checked_mul(128)? | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.extend([first, value - 40 * first]);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    (!arcs.is_empty() && contents.last().is_some_and(|b| b & 0x80 == 0)).then_some(arcs)
}

/// A directory string as rcgen writes it again, with the same string type.
fn dn_value(tag: u8, bytes: &[u8]) -> Option<DnValue> {
    let text = || String::from_utf8(bytes.to_vec()).ok();
    Some(match tag {
        0x0c => DnValue::Utf8String(text()?),
        0x13 => DnValue::PrintableString(PrintableString::try_from(text()?).ok()?),
        0x16 => DnValue::Ia5String(Ia5String::try_from(text()?).ok()?),
        0x14 => DnValue::TeletexString(TeletexString::try_from(text()?).ok()?),
        0x1e => DnValue::BmpString(BmpString::from_utf16be(bytes.to_vec()).ok()?),
        0x1c => DnValue::UniversalString(UniversalString::from_utf32be(bytes.to_vec()).ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_fields_are_parsed() {
        let name = parse("CN=ttd, O=Digdir ,c=NO").unwrap();
        assert!(matches!(name.get(&DnType::CommonName), Some(v) if *v == "ttd".into()));
        assert!(name.get(&DnType::OrganizationName).is_some());
        assert!(name.get(&DnType::CountryName).is_some());
    }

    #[test]
    fn bad_subjects_name_the_problem() {
        for (subject, problem) in [
            ("ttd", "not FIELD=value"),
            ("CN=", "CN is empty"),
            ("CN=ttd, E=x@y", "unknown field \"E\""),
        ] {
            let Err(EnrolError::Input(message)) = parse(subject) else {
                panic!("{subject:?} was accepted");
            };
            assert!(message.contains(problem), "{message}");
        }
    }

    #[test]
    fn a_certificates_subject_is_kept_with_its_types() {
        let pem = include_bytes!("../../../../tests/data/ttd-org.pem");
        let der = X509::from_pem(pem).unwrap().to_der().unwrap();
        let name = of_certificate(&der).unwrap();
        let entries: Vec<_> = name.iter().collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(*entries[0].0, DnType::CommonName);
    }

    #[test]
    fn object_identifiers_decode_to_their_arcs() {
        // 2.5.4.3 (commonName), 1.2.840.113549.1.9.1 (emailAddress)
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        assert_eq!(
            oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            Some(vec![1, 2, 840, 113_549, 1, 9, 1])
        );
        assert_eq!(oid_arcs(&[0x86]), None, "an unfinished arc");
        assert_eq!(oid_arcs(&[]), None);
    }

    #[test]
    fn long_and_truncated_elements() {
        let mut long = vec![0x04, 0x81, 200];
        long.extend([7u8; 200]);
        long.push(0xff);
        let (tag, contents, rest) = element(&long, 0x04).unwrap();
        assert_eq!((tag, contents.len(), rest), (0x04, 200, &[0xff][..]));
        assert_eq!(element(&long[..100], 0x04), None);
        assert_eq!(element(&long, 0x30), None, "another tag");
    }
}

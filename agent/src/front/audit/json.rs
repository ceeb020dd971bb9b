//! One JSON object written field by field into a byte buffer: an audit
//! line costs a copy of its fields, not a serializer's walk over a
//! struct. Strings are escaped as RFC 8259 requires.

use std::io::Write as _;

/// An object being written into `out`; [`Object::end`] closes it.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // Keys are the code's own names: nothing to escape.
        debug_assert!(!needs_escape(key.as_bytes()));
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.key(key);
        match value {
            Some(value) => string(self.out, value),
            None => self.out.extend_from_slice(b"null"),
        }
        self
    }

    /// A string that `write` appends itself, with nothing to escape.
    pub fn raw_str(&mut self, key: &str, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        self.out.push(b'"');
        write(self.out);
        self.out.push(b'"');
        self
    }

    pub fn int(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        self.key(key);
        match value {
            Some(value) => self
                .out
                .extend_from_slice(crate::token::decimal(value, &mut [0; 20]).as_bytes()),
            None => self.out.extend_from_slice(b"null"),
        }
        self
    }

    pub fn bool(&mut self, key: &str, value: Option<bool>) -> &mut Self {
        self.key(key);
        let text: &[u8] = match value {
            Some(true) => b"true",
            Some(false) => b"false",
            None => b"null",
        };
        self.out.extend_from_slice(text);
        self
    }

    pub fn end(&mut self) {
        self.out.push(b'}');
    }
}

/// `text` as a JSON string, quotes included.
fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    // Most fields (kids, names, paths, times) need no escape: one scan, one copy.
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + 1;
        if escaped.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.extend_from_slice(escaped);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// Whether any byte of `bytes` is a control character, `"` or `\\`; eight
/// bytes at a time, with the usual bit tricks for "some byte is zero" and
/// "some byte is below n".
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
        let below_space = v.wrapping_sub(ONES * 0x20) & !v & HIGHS != 0;
        if below_space
            || has_zero(v ^ (ONES * u64::from(b'"')))
            || has_zero(v ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &str) -> String {
        let mut out = Vec::new();
        Object::begin(&mut out).str("k", Some(text)).end();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_string_reads_back_as_itself() {
        for text in [
            "",
            "plain",
            "quote \" and backslash \\",
            "new\nline\r\ttab",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "ünïcødé ✓ 🦀",
            "/usr/bin/my app (deleted)",
        ] {
            let line = written(text);
            let json: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(json["k"], text, "{line}");
        }
    }

    #[test]
    fn fields_of_every_kind_and_null() {
        let mut out = Vec::new();
        Object::begin(&mut out)
            .str("s", Some("x"))
            .str("none", None)
            .int("n", Some(-42))
            .int("big", Some(i64::MAX))
            .int("least", Some(i64::MIN))
            .int("zero", Some(0))
            .int("no", None)
            .bool("t", Some(true))
            .bool("f", Some(false))
            .bool("b", None)
            .end();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"s": "x", "none": null, "n": -42, "big": i64::MAX, "least": i64::MIN, "zero": 0, "no": null, "t": true, "f": false, "b": null})
        );
    }

    #[test]
    fn an_escape_is_found_at_every_place_in_strings_of_every_length() {
        for special in [b'"', b'\\', b'\n', 0, 0x1f] {
            for len in 1..40 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{special:#x} at {at} of {len}");
                }
                assert!(!needs_escape(&vec![b'a'; len]));
                assert!(!needs_escape("é ✓ ~ \u{7f} ".repeat(len).as_bytes()));
            }
        }
    }
}

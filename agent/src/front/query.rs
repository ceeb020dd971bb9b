//! The query of `GET /v1/token`: `issuer` and `app`, percent-decoded and
//! checked before anything else looks at them.

use std::borrow::Cow;

use crate::token::name::check_name;

/// The parameters of a token request; `None` when omitted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TokenQuery<'a> {
    pub issuer: Option<Cow<'a, str>>,
    pub app: Option<Cow<'a, str>>,
}

/// Parses `issuer=ISS&app=APP`; the error says what is wrong, for the
/// problem detail. An empty `app=` asks for a token without the app claim.
pub fn parse(query: Option<&str>) -> Result<TokenQuery<'_>, String> {
    let mut parsed = TokenQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(format!(
                "query parameter {} has no value; write it as name=value",
                quoted(pair)
            ));
        };
        let slot = match key {
            "issuer" => &mut parsed.issuer,
            "app" => &mut parsed.app,
            _ => {
                return Err(format!(
                    "unknown query parameter {}; only `issuer` and `app` are accepted",
                    quoted(key)
                ))
            }
        };
        if slot.is_some() {
            return Err(format!(
                "query parameter `{key}` is given twice; give it once"
            ));
        }
        let value = decode(raw).map_err(|why| format!("`{key}` {why}"))?;
        if !(key == "app" && value.is_empty()) {
            check_name(&value).map_err(|why| format!("`{key}` {why}"))?;
        }
        *slot = Some(value);
    }
    if parsed.issuer.as_deref() == Some("") {
        return Err("`issuer` is empty; name the issuer, e.g. issuer=ttd".into());
    }
    Ok(parsed)
}

/// Percent-decodes a value; borrows when there is nothing to decode.
fn decode(raw: &str) -> Result<Cow<'_, str>, String> {
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or("has a `%` not followed by two hex digits; percent-encode it as %25")?;
        out.push(hex);
        i += 3;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| "is not UTF-8 once percent-decoded".to_string())
}

/// A caller-supplied name, quoted and cut short for an error message.
fn quoted(text: &str) -> String {
    let short: String = text.chars().take(40).collect();
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(query: &str) -> (Option<String>, Option<String>) {
        let parsed = parse(Some(query)).unwrap();
        (
            parsed.issuer.map(Cow::into_owned),
            parsed.app.map(Cow::into_owned),
        )
    }

    fn err(query: &str) -> String {
        parse(Some(query)).unwrap_err()
    }

    #[test]
    fn both_parameters_in_any_order() {
        let expected = (Some("ttd".to_string()), Some("my-app".to_string()));
        assert_eq!(ok("issuer=ttd&app=my-app"), expected);
        assert_eq!(ok("app=my-app&issuer=ttd"), expected);
        assert_eq!(ok("issuer=ttd&app=my-app&"), expected);
    }

    #[test]
    fn omitted_parameters_are_none() {
        assert_eq!(parse(None).unwrap(), TokenQuery::default());
        assert_eq!(ok(""), (None, None));
        assert_eq!(ok("issuer=ttd"), (Some("ttd".into()), None));
    }

    #[test]
    fn altinn_style_names_pass() {
        assert_eq!(
            ok("issuer=dev-studio&app=studio.designer"),
            (Some("dev-studio".into()), Some("studio.designer".into()))
        );
    }

    #[test]
    fn empty_app_means_no_app_claim() {
        assert_eq!(ok("issuer=ttd&app="), (Some("ttd".into()), Some("".into())));
    }

    #[test]
    fn empty_issuer_is_refused() {
        assert!(err("issuer=&app=a").contains("`issuer` is empty"));
    }

    #[test]
    fn percent_encoding_is_decoded() {
        assert_eq!(
            ok("issuer=t%74d&app=studio%2Edesigner"),
            (Some("ttd".into()), Some("studio.designer".into()))
        );
    }

    #[test]
    fn unknown_and_duplicate_parameters_are_named() {
        assert!(err("issuer=ttd&scope=x").contains("unknown query parameter \"scope\""));
        assert!(err("issuer=ttd&issuer=ttd").contains("`issuer` is given twice"));
        assert!(err("issuer").contains("\"issuer\" has no value"));
    }

    #[test]
    fn bad_characters_are_refused() {
        assert!(err("issuer=ttd&app=my%20app").starts_with("`app` "));
        assert!(err("issuer=t/d").starts_with("`issuer` "));
        assert!(err("issuer=ttd&app=a%0Ab").contains("`app`"));
        assert!(err("issuer=ttd&app=a%00b").contains("`app`"));
        assert!(err("issuer=%C3%A6%C3%B8").starts_with("`issuer` "));
    }

    #[test]
    fn broken_percent_encoding_and_non_utf8_are_refused() {
        assert!(err("issuer=tt%4").contains("two hex digits"));
        assert!(err("issuer=tt%zz").contains("two hex digits"));
        assert!(err("issuer=%FF%FE").contains("not UTF-8"));
    }

    #[test]
    fn over_long_values_are_refused() {
        let long = "a".repeat(crate::token::name::MAX_NAME_LEN + 1);
        assert!(err(&format!("issuer={long}")).contains("longer than"));
        let fits = "a".repeat(crate::token::name::MAX_NAME_LEN);
        assert_eq!(ok(&format!("issuer={fits}")).0.unwrap(), fits);
    }
}

//! `keys import | generate | list | export-cert | delete` against a real
//! SoftHSM token, with pkcs11-tool and openssl as independent witnesses;
//! one module per part.

mod generate;
mod import;
mod inventory;

use integration_tests::{ttd_pfx, OutputExt, TestToken};

fn import_ttd(token: &TestToken) -> String {
    let out = token.import("ttd", &ttd_pfx(), None).success();
    out.stdout_text().trim().to_owned()
}

/// The block pkcs11-tool prints for the object of `class` ("Private Key",
/// "Certificate", …) with CKA_ID `kid`.
fn object_block(objects: &str, class: &str, kid: &str) -> Option<String> {
    let id_line = format!("ID:         {}", kid.to_ascii_lowercase());
    objects
        .split(" Object;")
        .zip(objects.split(" Object;").skip(1))
        .find(|(before, block)| before.ends_with(class) && block.contains(&id_line))
        .map(|(_, block)| block.to_owned())
}

fn line_of<'a>(block: &'a str, field: &str) -> &'a str {
    block
        .lines()
        .find_map(|line| line.trim().strip_prefix(field))
        .map(|rest| rest.trim_start_matches(':').trim())
        .unwrap_or_else(|| panic!("no {field} in {block}"))
}

/// Refusals leave the token exactly as empty as it was.
fn assert_token_empty(token: &TestToken) {
    assert!(token.keys_json().is_empty());
    assert_eq!(token.list_objects().trim(), "", "objects left on the token");
}

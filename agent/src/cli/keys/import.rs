//! `keys import`: a PKCS#12 file's key and certificate onto the token.

use std::path::PathBuf;

use super::{
    naming_the_file, parse_issuer, parse_not_before, read_input, read_password, report_enrolled,
};
use crate::cert::Certificate;
use crate::cli::open_logged_in;
use crate::clock::{rfc3339, unix_now};
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::hsm::enrol;
use crate::hsm::Access;

/// `keys import`
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The issuer (`iss`) the key signs for; stored as the objects' CKA_LABEL.
    /// Letters, digits, '-', '.' and '_', as in requests.
    #[arg(long, value_parser = parse_issuer)]
    pub issuer: String,
    /// The PKCS#12 file (.pfx/.p12) with the private key and its certificate.
    #[arg(long, value_name = "FILE")]
    pub pfx: PathBuf,
    /// File holding the PKCS#12 password; without it the empty password
    /// (Altinn's files) is used. A trailing newline is ignored.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Refused: the file's certificate brings its own not-before, which is
    /// when the key takes over, and only its issuer can change it. The
    /// refusal says how to switch at another instant.
    #[arg(long, value_name = "TIME", value_parser = parse_not_before)]
    pub not_before: Option<i64>,
}

pub(super) fn run(config: &Config, args: &ImportArgs) -> Result<(), Failure> {
    let pfx = read_input(&args.pfx, "PKCS#12 file")?;
    let password = read_password(args.password_file.as_deref())?;
    // A file that cannot be used is refused before the token is touched.
    let material =
        enrol::read_pkcs12(&pfx, &password).map_err(|e| naming_the_file(&args.pfx, e))?;
    if let Some(at) = args.not_before {
        return Err(not_before_refused(args, &material.certificate, at));
    }
    let hsm = open_logged_in(config, Access::ReadWrite)?;
    let session = hsm.anchor();
    let cert = enrol::import(&session, &args.issuer, material)
        .map_err(|e| naming_the_file(&args.pfx, e))?;
    report_enrolled(config, &session, "imported", &args.issuer, &cert)
}

/// `--not-before` cannot move the certificate of a PKCS#12 file: the agent
/// did not sign it, so its dates are its issuer's.
fn not_before_refused(args: &ImportArgs, cert: &Certificate, at: i64) -> Failure {
    let takes_over = if cert.not_before <= unix_now() {
        "as soon as it is imported".to_owned()
    } else {
        format!("at {}", rfc3339(cert.not_before))
    };
    Failure::new(
        exit::USAGE,
        format!(
            "--not-before {}: the certificate in {} is valid from {}, so the key takes over {takes_over}, and only the certificate's issuer can change that; nothing was imported. To switch at {} instead, pin the issuer's current kid (`[[issuer]] kid`) before importing and remove the pin at that instant with a reload (systemctl reload access-token-agent), or ask for a certificate valid from then",
            rfc3339(at),
            args.pfx.display(),
            rfc3339(cert.not_before),
            rfc3339(at),
        ),
    )
}

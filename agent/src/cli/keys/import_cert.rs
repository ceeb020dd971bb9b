//! `keys import-cert`: a CA-issued certificate attached to the key on the
//! token it certifies. Only a certificate is ever read in: a private key
//! in a PKCS#12 file given here stays out of the token.

use std::path::PathBuf;

use super::{naming_the_file, read_input, read_password, report_enrolled};
use crate::cert::Certificate;
use crate::cli::open_logged_in;
use crate::clock::unix_now;
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::hsm::enrol::{self, EnrolError};
use crate::hsm::Access;

/// `keys import-cert`
#[derive(Debug, clap::Args)]
pub struct ImportCertArgs {
    /// The certificate, PEM or DER; of a PEM chain, the first one.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "pfx",
        conflicts_with = "pfx"
    )]
    pub cert: Option<PathBuf>,
    /// A PKCS#12 file whose certificate to attach; a private key in it is not imported.
    #[arg(long, value_name = "FILE")]
    pub pfx: Option<PathBuf>,
    /// File holding the PKCS#12 password; without it the empty password is
    /// used. A trailing newline is ignored.
    #[arg(long, value_name = "FILE", requires = "pfx")]
    pub password_file: Option<PathBuf>,
}

pub(super) fn run(config: &Config, args: &ImportCertArgs) -> Result<(), Failure> {
    let (path, cert, with_key) = read(args)?;
    let hsm = open_logged_in(config, Access::ReadWrite)?;
    let session = hsm.anchor();
    let issuer = enrol::attach(&session, &cert, unix_now()).map_err(|error| match error {
        EnrolError::NoKeyFor { .. } if with_key => Failure::new(
            exit::DATA,
            format!(
                "cannot import {}: {error}; the file holds its private key too, and `access-token-agent keys import --pfx` puts key and certificate on the token",
                path.display()
            ),
        ),
        error => naming_the_file(path, error),
    })?;
    if with_key {
        eprintln!(
            "{} also holds a private key; it was not read into the token, whose own copy of the key signs: destroy the file, it is the key outside the HSM",
            path.display()
        );
    }
    report_enrolled(config, &session, "attached a certificate", &issuer, &cert)
}

/// The file's certificate, and whether the file holds a private key too.
fn read(args: &ImportCertArgs) -> Result<(&PathBuf, Certificate, bool), Failure> {
    if let Some(path) = &args.cert {
        let (cert, chain) = Certificate::from_file(&read_input(path, "certificate file")?)
            .map_err(|e| naming_the_file(path, EnrolError::Input(e.to_string())))?;
        if chain > 0 {
            eprintln!("{}: the first certificate is attached; the {chain} after it (the CA's chain) are not stored, Platform checks only the first", path.display());
        }
        return Ok((path, cert, false));
    }
    let path = args.pfx.as_ref().expect("clap requires --cert or --pfx");
    let pfx = read_input(path, "PKCS#12 file")?;
    let password = read_password(args.password_file.as_deref())?;
    let (cert, with_key) = enrol::read_pkcs12_certificate(&pfx, &password)
        .map_err(|error| naming_the_file(path, error))?;
    Ok((path, cert, with_key))
}

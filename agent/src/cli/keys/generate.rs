//! `keys generate`: a key pair made inside the HSM, with a self-signed
//! certificate it signs itself.

use super::{parse_issuer, parse_not_before, report_enrolled};
use crate::cli::open_logged_in;
use crate::clock::unix_now;
use crate::config::Config;
use crate::exit::Failure;
use crate::hsm::enrol::{self, CertificateRequest};
use crate::hsm::Access;
use crate::key_type::KeyKind;

/// `keys generate`
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The issuer (`iss`) the key signs for; stored as the objects' CKA_LABEL.
    /// Letters, digits, '-', '.' and '_', as in requests.
    #[arg(long, value_parser = parse_issuer)]
    pub issuer: String,
    /// The key to generate inside the HSM.
    #[arg(long, value_enum, default_value = "rsa2048")]
    pub key_type: KeyKind,
    /// The certificate's subject, e.g. "CN=ttd, O=Digdir, C=NO" [default: CN=ISSUER, e.g. CN=ttd]
    #[arg(long)]
    pub subject: Option<String>,
    /// Days the self-signed certificate is valid, from now (or from --not-before).
    #[arg(long, default_value_t = enrol::generate::DEFAULT_DAYS)]
    pub days: u32,
    /// Valid from this instant instead of now (RFC 3339, e.g.
    /// 2026-03-01T12:00:00Z, or Unix seconds), so that it takes over then;
    /// --days counts from it.
    #[arg(long, value_name = "TIME", value_parser = parse_not_before)]
    pub not_before: Option<i64>,
}

pub(super) fn run(config: &Config, args: &GenerateArgs) -> Result<(), Failure> {
    let hsm = open_logged_in(config, Access::ReadWrite)?;
    let session = hsm.anchor();
    let request = CertificateRequest {
        subject: args.subject.clone(),
        days: args.days,
        now: unix_now(),
        not_before: args.not_before,
    };
    let cert = enrol::generate(&session, &args.issuer, args.key_type, &request)?;
    report_enrolled(config, &session, "generated", &args.issuer, &cert)
}

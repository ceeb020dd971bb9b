//! `keys renew`: a new self-signed certificate for a key already on the
//! token, so that the key outlives its certificate.

use super::{chosen_pair, parse_issuer, parse_kid, parse_not_before, report_enrolled, Kid};
use crate::cli::open_logged_in;
use crate::clock::unix_now;
use crate::config::Config;
use crate::exit::Failure;
use crate::hsm::enrol::{self, CertificateRequest};
use crate::hsm::key_pairs as keys;
use crate::hsm::Access;

/// `keys renew`
#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    /// The issuer whose key gets a new certificate.
    #[arg(long, value_parser = parse_issuer)]
    pub issuer: String,
    /// The certificate whose key to renew [default: the issuer's active one].
    #[arg(long, value_parser = parse_kid)]
    pub kid: Option<Kid>,
    /// Days the new certificate is valid, from now (or from --not-before).
    #[arg(long, default_value_t = enrol::generate::DEFAULT_DAYS)]
    pub days: u32,
    /// Valid from this instant instead of now (RFC 3339, e.g.
    /// 2026-03-01T12:00:00Z, or Unix seconds), so that it takes over then;
    /// --days counts from it.
    #[arg(long, value_name = "TIME", value_parser = parse_not_before)]
    pub not_before: Option<i64>,
}

pub(super) fn run(config: &Config, args: &RenewArgs) -> Result<(), Failure> {
    let hsm = open_logged_in(config, Access::ReadWrite)?;
    let session = hsm.anchor();
    let pairs = keys::list(&session, Some(&args.issuer))?;
    let pair = chosen_pair(config, &args.issuer, args.kid, &pairs)?;
    let request = CertificateRequest {
        subject: None,
        days: args.days,
        now: unix_now(),
        not_before: args.not_before,
    };
    let cert = enrol::renew(&session, pair, &request)?;
    let what = format!("renewed the key of kid {}", pair.kid());
    report_enrolled(config, &session, &what, &args.issuer, &cert)
}

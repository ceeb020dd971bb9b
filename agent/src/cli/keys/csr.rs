//! `keys csr`: a certificate request for a key already on the token, for a
//! CA to certify.

use super::{chosen_pair, parse_issuer, parse_kid, write_stdout, Kid};
use crate::cli::open_logged_in;
use crate::config::Config;
use crate::exit::Failure;
use crate::hsm::enrol::csr;
use crate::hsm::key_pairs as keys;
use crate::hsm::Access;

/// `keys csr`
#[derive(Debug, clap::Args)]
pub struct CsrArgs {
    /// The issuer whose key the request is for.
    #[arg(long, value_parser = parse_issuer)]
    pub issuer: String,
    /// A certificate of the key to certify [default: the issuer's active one].
    #[arg(long, value_parser = parse_kid)]
    pub kid: Option<Kid>,
    /// The subject to ask for, e.g. "CN=ttd, O=Digdir, C=NO" [default: the certificate's]
    #[arg(long)]
    pub subject: Option<String>,
}

pub(super) fn run(config: &Config, args: &CsrArgs) -> Result<(), Failure> {
    let hsm = open_logged_in(config, Access::ReadOnly)?;
    let session = hsm.anchor();
    let pairs = keys::list(&session, Some(&args.issuer))?;
    let pair = chosen_pair(config, &args.issuer, args.kid, &pairs)?;
    let pem = csr::request(&session, pair, args.subject.as_deref())?;
    eprintln!(
        "a certificate request for the key of kid {} (issuer {:?}); once the CA has issued the certificate: access-token-agent keys import-cert --cert FILE",
        pair.kid(),
        args.issuer
    );
    write_stdout(pem.as_bytes())
}

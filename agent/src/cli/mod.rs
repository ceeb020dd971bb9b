//! The command line: `mint`, `keys …` (and `serve`), and how failures become
//! messages and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::clock::unix_now;
use crate::config::{Config, ConfigError};
use crate::exit::{self, Failure};
use crate::hardening;
use crate::hsm::pin;
use crate::hsm::{self, Access, Hsm, HsmError};

mod keys;
mod logging;

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   failure
  2   bad usage
  65  an input file (PKCS#12, certificate) cannot be used
  69  the PKCS#11 module, token or key is not there
  76  the token's user PIN is locked
  77  the token refused the PIN (one attempt was made)
  78  the configuration is invalid";

#[derive(Debug, Parser)]
#[command(name = "access-token-agent", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file [default: $ACCESS_TOKEN_AGENT_CONFIG, else /etc/access-token-agent/agent.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve tokens on the Unix socket until SIGTERM (systemd: Type=notify).
    Serve,
    /// Sign one token through the HSM and print it.
    Mint(MintArgs),
    /// Enrol, list, publish and delete keys on the token (operators).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, clap::Args)]
pub struct MintArgs {
    /// The issuer (`iss`), e.g. an org code such as `ttd`.
    #[arg(long)]
    pub issuer: String,
    /// The app (`urn:altinn:app`); left out of the token when empty.
    #[arg(long, default_value = "")]
    pub app: String,
    /// Sign as of this instant (Unix seconds) instead of now, to reproduce a token.
    #[arg(
        long,
        value_name = "UNIX_SECONDS",
        value_parser = clap::value_parser!(i64).range(0..=crate::token::MAX_UNIX_SECONDS)
    )]
    pub now: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Import a PKCS#12 file's private key and certificate for an issuer.
    Import(keys::ImportArgs),
    /// Generate a key pair inside the HSM, with a self-signed certificate.
    Generate(keys::GenerateArgs),
    /// List the key pairs on the token and which one each issuer signs with.
    List(keys::ListArgs),
    /// Print an issuer's certificate: PEM, DER, or the Key Vault secret value.
    ExportCert(keys::ExportArgs),
    /// Remove a certificate from the token, and its key with its last certificate.
    Delete(keys::DeleteArgs),
    /// A new self-signed certificate for an issuer's key already on the token.
    Renew(keys::RenewArgs),
    /// A PKCS#10 certificate request for an issuer's key, signed by it (PEM on stdout).
    Csr(keys::CsrArgs),
    /// Attach a CA-issued certificate to the key on the token it certifies.
    ImportCert(keys::ImportCertArgs),
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Failure {
        Failure::new(exit::CONFIG, error.to_string())
    }
}

impl From<pin::PinError> for Failure {
    fn from(error: pin::PinError) -> Failure {
        Failure::new(exit::CONFIG, error.to_string())
    }
}

impl From<HsmError> for Failure {
    fn from(error: HsmError) -> Failure {
        Failure::new(error.exit_code(), error.to_string())
    }
}

/// Entry point of the `access-token-agent` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_on_stderr = logging::init(matches!(cli.command, Command::Serve));
    if let Err(error) = hardening::apply() {
        eprintln!("access-token-agent: cannot disable core dumps: {error}");
        return ExitCode::from(exit::FAILURE);
    }
    match run(cli, json_on_stderr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("access-token-agent: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: Cli, json_on_stderr: bool) -> Result<(), Failure> {
    let path = Config::resolve_path(cli.config.as_deref());
    let config = Config::load(&path)?;
    // Still one thread: nothing has started another yet.
    hsm::environment::apply(&config.hsm.environment);
    match cli.command {
        Command::Serve => crate::daemon::serve(&path, config, json_on_stderr),
        Command::Mint(args) => mint(&config, &args),
        Command::Keys(command) => keys::run(&config, command),
    }
}

/// Opens the configured token and logs in with the configured PIN: one attempt.
pub fn open_logged_in(config: &Config, access: Access) -> Result<Hsm, Failure> {
    let hsm = Hsm::open(&config.hsm.module, &config.hsm.token_label, access)?;
    let pin = pin::load(&config.hsm)?;
    hsm.login(&pin)?;
    Ok(hsm)
}

fn mint(config: &Config, args: &MintArgs) -> Result<(), Failure> {
    let hsm = open_logged_in(config, Access::ReadOnly)?;
    let now = args.now.unwrap_or_else(unix_now);
    let pinned = config.issuer(&args.issuer).and_then(|i| i.kid.as_deref());
    let session = hsm.anchor();
    let key = hsm::key_pairs::active_signing_key(&session, &args.issuer, pinned, now)?;
    let signed = hsm::sign::sign_token(
        &session,
        &key,
        &args.app,
        now,
        &config.token.lifetime(),
        String::new(),
    )?;
    println!("{}", signed.token);
    Ok(())
}

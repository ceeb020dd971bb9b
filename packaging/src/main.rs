//! `gen-docs DIR`: man pages (section 1, one per command and subcommand) and
//! bash, zsh and fish completions for `access-token-agent` and
//! `access-token`, written under DIR from the clap definitions the commands
//! parse, so that the documentation cannot drift from the code.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

fn main() -> io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other("usage: gen-docs OUTPUT_DIR"))?;
    for command in [
        access_token_agent::cli::Cli::command(),
        access_token_client::cli::Cli::command(),
    ] {
        man_pages(&command, &out.join("man"))?;
        completions(&command, &out.join("completions"))?;
    }
    Ok(())
}

/// `NAME.1` for the command and `NAME-SUB.1` for each subcommand, recursively.
fn man_pages(command: &Command, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let command = command.clone().disable_help_subcommand(true);
    clap_mangen::generate_to(command, dir)
}

fn completions(command: &Command, dir: &Path) -> io::Result<()> {
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let dir = dir.join(shell.to_string());
        std::fs::create_dir_all(&dir)?;
        let name = command.get_name().to_owned();
        clap_complete::generate_to(shell, &mut command.clone(), name, &dir)?;
    }
    Ok(())
}

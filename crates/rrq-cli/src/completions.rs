//! `rrq completions SHELL`: print a completion script for the shell.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::exit::{CliError, Exit};

/// `rrq completions` options.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the script to stdout (e.g. `rrq completions bash > /etc/bash_completion.d/rrq`).
pub fn run(args: CompletionsArgs) -> Result<Exit, CliError> {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "rrq", &mut std::io::stdout());
    Ok(Exit::Ok)
}

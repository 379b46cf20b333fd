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
    // Generated into memory first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "rrq", &mut script);
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = std::io::Write::write_all(&mut stdout, &script).and_then(|()| std::io::Write::flush(&mut stdout)) {
        crate::output::stdout_failed(&e);
    }
    Ok(Exit::Ok)
}

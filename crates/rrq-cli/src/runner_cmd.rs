//! `rrq runner python`: starts the Python runner of the `rrq` package
//! (`rrq-runner` on `PATH`) in the foreground, for external runner mode or
//! for trying handlers out by hand.

use std::io::ErrorKind;
use std::process::Stdio;

use anyhow::anyhow;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{CliError, Exit};

/// The executable the Python package installs.
const PYTHON_RUNNER: &str = "rrq-runner";

/// Runner commands.
#[derive(Debug, clap::Subcommand)]
pub enum RunnerCommand {
    /// Run the Python runner (`rrq-runner` from `pip install rrq`) in the foreground
    Python(PythonArgs),
    /// Check that a runner follows the runner protocol (docs/RUNNER_PROTOCOL.md)
    Check(crate::runner_check::CheckArgs),
}

/// `rrq runner python` options.
#[derive(Debug, clap::Args)]
pub struct PythonArgs {
    /// Dotted path of the runner settings object (e.g. `myapp.runner.settings`)
    #[arg(long, value_name = "DOTTED.PATH")]
    settings: String,
    /// Address to listen on, `HOST:PORT`
    #[arg(long, value_name = "HOST:PORT")]
    tcp_socket: String,
}

/// Runs a runner command.
pub(crate) async fn run(cmd: RunnerCommand) -> Result<Exit, CliError> {
    match cmd {
        RunnerCommand::Python(args) => python(args).await,
        RunnerCommand::Check(args) => crate::runner_check::run(args).await,
    }
}

async fn python(args: PythonArgs) -> Result<Exit, CliError> {
    let mut child = match Command::new(PYTHON_RUNNER)
        .args(["--settings", &args.settings, "--tcp-socket", &args.tcp_socket])
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(CliError::new(
                Exit::Failure,
                anyhow!(
                    "{PYTHON_RUNNER} was not found on PATH; install the Python runner with `pip install rrq` \
                     and put the bin directory of that environment on PATH"
                ),
            ));
        }
        Err(e) => {
            return Err(CliError::new(Exit::Failure, anyhow!(e).context(format!("cannot start {PYTHON_RUNNER}"))));
        }
    };
    // A signal meant for us (a service manager's SIGTERM, a SIGINT sent to
    // this process only) is passed on, so the runner shuts down with us
    // instead of being left holding its port.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut forwarded = false;
    let status = loop {
        let sig = tokio::select! {
            status = child.wait() => break status?,
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
        };
        if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()).filter(|p| *p > 1) {
            // SAFETY: kill(2) takes plain integers; `pid` is our live child.
            #[allow(unsafe_code, reason = "forwarding a signal to a child has no safe std API")]
            let _ = unsafe { libc::kill(pid, sig) };
            forwarded = true;
        }
    };
    if status.success() || (forwarded && status.code().is_none()) {
        return Ok(Exit::Ok);
    }
    let shown = status.code().map_or_else(|| status.to_string(), |code| code.to_string());
    Err(CliError::new(Exit::Failure, anyhow!("{PYTHON_RUNNER} exited with status {shown}")))
}

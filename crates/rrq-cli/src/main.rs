//! The `rrq` command.

fn main() -> std::process::ExitCode {
    rrq_cli::main()
}

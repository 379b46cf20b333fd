//! The `rrq` command, built inside the end-to-end test package.

fn main() -> std::process::ExitCode {
    rrq_cli::main()
}

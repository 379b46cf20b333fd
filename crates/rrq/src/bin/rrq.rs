//! The `rrq` command (the same code as rrq-cli's binary).

fn main() -> std::process::ExitCode {
    rrq::cli::main()
}

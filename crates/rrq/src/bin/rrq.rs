//! The `rrq` command (rrq-cli's `rrq-cli` binary is the same program).

fn main() -> std::process::ExitCode {
    rrq::cli::main()
}

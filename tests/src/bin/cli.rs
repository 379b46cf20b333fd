//! The `rrq` command, built inside the end-to-end test package.

fn main() -> std::process::ExitCode {
    // As in the `rrq` binary: in a runner guard process this runs the guard.
    rrq_pool::guard::run_if_requested();
    rrq_cli::main()
}

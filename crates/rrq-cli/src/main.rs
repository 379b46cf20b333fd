//! The `rrq` command.

fn main() -> std::process::ExitCode {
    // First: in a runner guard process this runs the guard and never returns.
    rrq_pool::guard::run_if_requested();
    rrq_cli::main()
}

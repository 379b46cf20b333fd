//! RRQ's benchmark harness, run through `cargo xtask bench` (which builds it
//! and the binaries it starts in release mode). See `xtask/src/bench/mod.rs`.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    match bench::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rrq-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

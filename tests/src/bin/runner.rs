//! The example Rust runner, built inside the end-to-end test package.

fn main() {
    rrq_runner::example::main()
}

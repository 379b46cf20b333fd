//! The example runner: `rrq-example-runner --tcp-socket 127.0.0.1:PORT`.

fn main() {
    rrq_runner::example::main()
}

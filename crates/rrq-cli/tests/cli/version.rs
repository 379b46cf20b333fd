//! `rrq --version` names the version and what it speaks: the runner
//! protocol and the Redis schema.

use crate::{Scratch, rrq_in};

#[test]
fn version_names_the_protocol_and_the_schema() {
    let dir = Scratch::create();
    for flag in ["--version", "-V"] {
        let run = rrq_in(dir.root(), &[flag], &[]).ok();
        let expected = format!(
            "rrq {} (runner protocol {}, Redis schema of rrq 0.11.1)\n",
            env!("CARGO_PKG_VERSION"),
            rrq_protocol::PROTOCOL_VERSION
        );
        assert_eq!(run.stdout, expected, "{flag}");
    }
}

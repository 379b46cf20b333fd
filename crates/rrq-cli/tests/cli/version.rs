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

/// A reader that goes away (`rrq ... | head -1`) ends the output quietly:
/// no panic, no "Broken pipe" message, exit code 0.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = Scratch::create();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rrq-cli"))
        .args(["completions", "bash"])
        .current_dir(dir.root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the command writes its (long) script.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

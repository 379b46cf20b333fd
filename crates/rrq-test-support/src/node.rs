//! The TypeScript runner SDK (`sdks/typescript`), built for tests.
//!
//! [`typescript_runner`] runs `npm ci` (when `node_modules` is missing) and
//! `npm run build` once per test process, under a file lock so concurrent
//! test binaries do not build over each other, and returns the command that
//! starts the example TypeScript runner.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The SDK's directory in the workspace.
pub fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdks/typescript")
}

/// `["node", ".../dist/examples/main.js"]`: the example runner, freshly
/// built. Panics with npm's output when node/npm are missing or the build
/// fails: these tests must not silently skip.
pub fn typescript_runner() -> Vec<String> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let main = BUILT.get_or_init(|| {
        let dir = sdk_dir();
        let lock = File::create(dir.join(".build.lock")).expect("create the SDK's build lock");
        lock.lock().expect("lock the SDK build");
        if !dir.join("node_modules/.package-lock.json").exists() {
            npm(&dir, &["ci", "--no-audit", "--no-fund"]);
        }
        npm(&dir, &["run", "build"]);
        drop(lock);
        let _ = fs::remove_file(dir.join(".build.lock"));
        dir.join("dist/examples/main.js")
    });
    vec!["node".to_owned(), main.display().to_string()]
}

fn npm(dir: &Path, args: &[&str]) {
    let out = Command::new("npm").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run npm ({e}); install Node 20 and npm (e.g. `apt-get install nodejs npm`)")
    });
    assert!(
        out.status.success(),
        "`npm {}` in {} failed:\n{}\n{}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The TypeScript runner SDK (`sdks/typescript`), built for tests.
//!
//! [`typescript_runner`] runs `npm ci` (when `node_modules` is missing) and
//! `npm run build` (when a source is newer than the build), under a file lock
//! so concurrent test processes neither build over each other nor rewrite
//! `dist/` while another one runs it, and returns the command that starts
//! the example TypeScript runner.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

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
        let main = dir.join("dist/examples/main.js");
        let built = fs::metadata(&main).and_then(|m| m.modified()).ok();
        let newest = ["src", "examples", "test", "package.json", "tsconfig.json"]
            .iter()
            .filter_map(|p| newest_mtime(&dir.join(p)))
            .max();
        if built.is_none() || newest > built {
            npm(&dir, &["run", "build"]);
        }
        drop(lock);
        main
    });
    vec!["node".to_owned(), main.display().to_string()]
}

/// The latest modification time of a file, or of any file under a directory.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    fs::read_dir(path).ok()?.filter_map(|e| e.ok()).filter_map(|e| newest_mtime(&e.path())).max()
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

//! The reference Python package (`rrq==0.11.1` from PyPI) in a virtualenv.
//!
//! The venv is created on first use, under the workspace's `target/`
//! directory (or `$RRQ_PY_VENV`), and shared by every test process; a file
//! lock makes concurrent first uses wait for one installation.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The reference version the interoperability tests pin.
pub const REFERENCE_VERSION: &str = "0.11.1";

/// A virtualenv holding the reference package.
#[derive(Clone, Debug)]
pub struct Venv {
    root: PathBuf,
}

impl Venv {
    /// The venv directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its Python interpreter.
    pub fn python(&self) -> PathBuf {
        self.root.join("bin/python")
    }

    /// The reference Python runner (`rrq-runner`).
    pub fn runner(&self) -> PathBuf {
        self.root.join("bin/rrq-runner")
    }

    /// The reference orchestrator binary shipped inside the wheel.
    pub fn reference_orchestrator(&self) -> PathBuf {
        let out = Command::new(self.python())
            .args(["-c", "import rrq, os; print(os.path.join(os.path.dirname(rrq.__file__), 'bin', 'rrq'))"])
            .output()
            .expect("run the venv's python");
        assert!(out.status.success(), "cannot locate the reference binary: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// Runs a Python script with the venv's interpreter; panics with its
    /// output if it fails, returns its stdout otherwise.
    pub fn run_script(&self, script: &str, env: &[(&str, &str)]) -> String {
        let out = Command::new(self.python())
            .arg("-c")
            .arg(script)
            .envs(env.iter().copied())
            .output()
            .expect("run the venv's python");
        assert!(
            out.status.success(),
            "python script failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn default_location() -> PathBuf {
    if let Some(dir) = std::env::var_os("RRQ_PY_VENV") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join(format!("rrq-py-{REFERENCE_VERSION}"))
}

/// The shared venv, created (with `python3 -m venv` and `pip install
/// rrq==0.11.1`) if it does not exist yet. Panics with the installer's output
/// when that fails: interoperability tests must not silently skip.
pub fn venv() -> Venv {
    static VENV: OnceLock<Venv> = OnceLock::new();
    VENV.get_or_init(|| {
        let root = default_location();
        let marker = root.join(".rrq-ready");
        if marker.exists() {
            return Venv { root };
        }
        let parent = root.parent().expect("venv has a parent directory");
        fs::create_dir_all(parent).expect("create the venv's parent directory");
        let lock = File::create(parent.join(format!(".rrq-py-{REFERENCE_VERSION}.lock"))).expect("create lock file");
        lock.lock().expect("lock the venv installation");
        if !marker.exists() {
            install(&root);
            fs::write(&marker, REFERENCE_VERSION).expect("mark the venv ready");
        }
        drop(lock);
        Venv { root }
    })
    .clone()
}

fn install(root: &Path) {
    let _ = fs::remove_dir_all(root);
    let python = std::env::var("RRQ_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    eprintln!("creating a Python venv with rrq=={REFERENCE_VERSION} at {}", root.display());
    let status = Command::new(&python).args(["-m", "venv"]).arg(root).status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!("`{python} -m venv {}` failed ({other:?}); install python3 and python3-venv", root.display()),
    }
    let out = Command::new(root.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", &format!("rrq=={REFERENCE_VERSION}")])
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "pip install rrq=={REFERENCE_VERSION} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The OpenTelemetry Python SDK and its OTLP/HTTP exporter, for tests where
/// the reference client and runner trace.
pub const OTEL_PACKAGES: &[&str] = &["opentelemetry-sdk==1.45.2", "opentelemetry-exporter-otlp-proto-http==1.45.2"];

/// [`venv`] with [`OTEL_PACKAGES`] added (once, under the same lock).
pub fn otel_venv() -> Venv {
    static READY: OnceLock<()> = OnceLock::new();
    let venv = venv();
    READY.get_or_init(|| {
        let marker = venv.root.join(".rrq-otel-ready");
        if marker.exists() {
            return;
        }
        let parent = venv.root.parent().expect("venv has a parent directory");
        let lock = File::create(parent.join(format!(".rrq-py-{REFERENCE_VERSION}.lock"))).expect("create lock file");
        lock.lock().expect("lock the venv installation");
        if !marker.exists() {
            let out = Command::new(venv.root.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(OTEL_PACKAGES)
                .output()
                .expect("run pip");
            assert!(
                out.status.success(),
                "pip install {OTEL_PACKAGES:?} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            fs::write(&marker, OTEL_PACKAGES.join("\n")).expect("mark the OpenTelemetry packages installed");
        }
    });
    venv
}

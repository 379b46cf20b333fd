//! The TLS side of a private test server: a throwaway CA and a server
//! certificate for `127.0.0.1` / `localhost`, made with the `openssl`
//! command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The TLS side of a [`TestRedis::private_tls`](super::TestRedis::private_tls) server.
#[derive(Debug)]
pub(super) struct Tls {
    pub(super) port: u16,
    pub(super) url: String,
    /// The throwaway CA that signed the server certificate (PEM).
    pub(super) ca_file: PathBuf,
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
}

impl Tls {
    /// Makes a CA and a server certificate for `127.0.0.1` / `localhost`
    /// signed by it, in `dir/tls`. Ports are filled in later.
    pub(super) fn generate(dir: &Path) -> Tls {
        let tls_dir = dir.join("tls");
        if let Err(e) = std::fs::create_dir_all(&tls_dir) {
            panic!("cannot create {}: {e}", tls_dir.display());
        }
        let ca_key = tls_dir.join("ca.key");
        let ca_file = tls_dir.join("ca.crt");
        let key_file = tls_dir.join("server.key");
        let csr = tls_dir.join("server.csr");
        let cert_file = tls_dir.join("server.crt");
        let extensions = tls_dir.join("server.ext");
        let ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "2", "-subj", "/CN=rrq throwaway test CA"])
                .args(ec_key)
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca_file),
        );
        openssl(
            Command::new("openssl")
                .args(["req", "-subj", "/CN=localhost"])
                .args(ec_key)
                .arg("-keyout")
                .arg(&key_file)
                .arg("-out")
                .arg(&csr),
        );
        let ext = "basicConstraints=critical,CA:FALSE\n\
                   keyUsage=critical,digitalSignature\n\
                   extendedKeyUsage=serverAuth\n\
                   subjectAltName=IP:127.0.0.1,DNS:localhost\n";
        if let Err(e) = std::fs::write(&extensions, ext) {
            panic!("cannot write {}: {e}", extensions.display());
        }
        openssl(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&ca_file)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&extensions)
                .arg("-out")
                .arg(&cert_file),
        );
        Tls { port: 0, url: String::new(), ca_file, cert_file, key_file }
    }
}

/// Runs one `openssl` command, panicking with its output if it fails.
fn openssl(cmd: &mut Command) {
    let output = match cmd.stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`openssl` was not found: install it (`apt-get install openssl`) to run the TLS tests")
        }
        Err(e) => panic!("cannot run `openssl`: {e}"),
    };
    if !output.status.success() {
        panic!(
            "`openssl` failed ({}): {}\ncommand: {cmd:?}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
}

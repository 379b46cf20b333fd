//! Redis nodes in Docker containers on a private network, for tests that
//! need separate hosts: a node can be cut off the network and put back
//! ([`DockerRedis::disconnect`], [`DockerRedis::reconnect`]) or killed.
//!
//! No image registry has to be reachable: [`local_image`] builds an image
//! from the host's own `redis-server` (or `$RRQ_REDIS_SERVER`) and the shared
//! libraries `ldd` lists for it, with `docker import`, once per machine and
//! server binary (the tag is a hash of the binary). Containers are started
//! with testcontainers on a network made for the test (with a subnet of its
//! own, so a node put back gets its former address; removed on drop); each
//! node's port 6379 is published on a fixed host port, so
//! its host address stays the same across a disconnect and a reconnect.
//!
//! [`DockerCluster`] joins six such nodes into a Redis Cluster (three
//! masters, one replica each) whose masters can be cut off the same way.
//!
//! Tests that need Docker call [`require_docker`] first. Without a daemon it
//! panics with the fix, unless `RRQ_TEST_NO_DOCKER=1` is set, in which case it
//! prints a skip line and the test returns: the opt-out is for machines
//! without Docker, never for CI.
//!
//! The async functions must run on a tokio runtime, and a [`DockerRedis`]
//! must be dropped on one (testcontainers removes the containers then).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::redis::{free_port, installed_program};

pub mod cluster;
pub use cluster::{DockerCluster, DockerClusterNode};

/// The repository of the image [`local_image`] builds.
pub const IMAGE_NAME: &str = "rrq-test/redis";
/// Set to `1` to skip Docker tests on a machine without a daemon.
pub const NO_DOCKER_ENV: &str = "RRQ_TEST_NO_DOCKER";

/// How long a container may take to answer.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How many host ports are tried per node.
const PORT_ATTEMPTS: usize = 5;

/// Whether a Docker daemon answers (`docker info`), with the reason if not.
pub fn daemon_answers() -> Result<(), String> {
    match Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).stdin(Stdio::null()).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("the `docker` command was not found".to_owned()),
        Err(e) => Err(format!("cannot run `docker`: {e}")),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`docker info` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
    }
}

/// For a test that needs Docker: `true` when a daemon answers. Otherwise,
/// with `RRQ_TEST_NO_DOCKER=1`, prints a skip line naming `test` and returns
/// `false` (the test should return at once).
///
/// # Panics
///
/// When no daemon answers and the opt-out is not set, with the fix.
pub fn require_docker(test: &str) -> bool {
    match decide(test, daemon_answers(), std::env::var(NO_DOCKER_ENV).ok().as_deref()) {
        Ok(run) => run,
        Err(why) => panic!("{why}"),
    }
}

/// [`require_docker`]'s choice, apart from the environment.
fn decide(test: &str, daemon: Result<(), String>, opt_out: Option<&str>) -> Result<bool, String> {
    let Err(why) = daemon else { return Ok(true) };
    let why = why.trim_end_matches('.');
    if opt_out.map(str::trim) == Some("1") {
        // Straight to stderr: `cargo test` captures what `eprintln!` prints in
        // a passing test (nextest shows it with `--success-output immediate`).
        let line = format!("SKIPPED {test}: no Docker daemon ({why}) and {NO_DOCKER_ENV}=1\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return Ok(false);
    }
    Err(format!(
        "{test} needs a Docker daemon, but {why}. Install Docker (`apt-get install docker.io`) and start the daemon \
         (`dockerd > /tmp/dockerd.log 2>&1 &`, or `.ci/run` does both), or set {NO_DOCKER_ENV}=1 to skip the Docker \
         tests on this machine"
    ))
}

/// The name of the image holding the host's Redis server
/// (`rrq-test/redis:<hash of the binary>`), built if missing.
///
/// # Panics
///
/// When the server binary, `ldd`, `tar` or `docker import` fails.
pub fn local_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_image().unwrap_or_else(|e| panic!("cannot build the {IMAGE_NAME} test image: {e}")))
        .clone()
}

fn build_image() -> Result<String, String> {
    let program = installed_program();
    let binary = find_program(&program).ok_or_else(|| format!("`{program}` is not on PATH"))?;
    let bytes = std::fs::read(&binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    let image = format!("{IMAGE_NAME}:{:016x}", fnv1a(&bytes));
    if docker(&["image", "inspect", "--format", "{{.Id}}", &image]).is_ok() {
        return Ok(image);
    }
    let stage = std::env::temp_dir().join(format!("rrq-test-image-{}", uuid::Uuid::new_v4().simple()));
    let tarball = stage.with_extension("tar");
    let result = stage_image(&binary, &stage).and_then(|()| {
        run(Command::new("tar").arg("-C").arg(&stage).arg("-cf").arg(&tarball).arg("."))?;
        // Concurrent builds of the same tag are harmless: the last import wins
        // and both hold the same files.
        run(Command::new("docker")
            .args(["import", "-c", r#"ENTRYPOINT ["/usr/bin/redis-server"]"#, "-c", "EXPOSE 6379"])
            .args(["-c", "WORKDIR /data"])
            .arg(&tarball)
            .arg(&image))
    });
    let _ = std::fs::remove_dir_all(&stage);
    let _ = std::fs::remove_file(&tarball);
    result.map(|()| image)
}

/// Lays out the server as `/usr/bin/redis-server` (the name makes a
/// multi-call binary act as the server), the libraries at the paths `ldd`
/// prints, and writable `/tmp` and `/data`.
fn stage_image(binary: &Path, stage: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let copy = |from: &Path, to: &Path| -> Result<(), String> {
        let target = stage.join(to.strip_prefix("/").unwrap_or(to));
        std::fs::create_dir_all(target.parent().expect("a path under the stage"))
            .and_then(|()| std::fs::copy(from, &target))
            .map(drop)
            .map_err(|e| format!("cannot copy {} into the image: {e}", from.display()))
    };
    copy(binary, Path::new("/usr/bin/redis-server"))?;
    let ldd = Command::new("ldd").arg(binary).output().map_err(|e| format!("cannot run `ldd`: {e}"))?;
    if !ldd.status.success() {
        return Err(format!("`ldd {}` failed: {}", binary.display(), String::from_utf8_lossy(&ldd.stderr).trim()));
    }
    let listing = String::from_utf8_lossy(&ldd.stdout);
    if let Some(missing) = listing.lines().find(|l| l.contains("not found")) {
        return Err(format!("`ldd {}` misses a library: {}", binary.display(), missing.trim()));
    }
    for library in libraries(&listing) {
        copy(Path::new(library), Path::new(library))?;
    }
    for dir in ["tmp", "data"] {
        let path = stage.join(dir);
        std::fs::create_dir_all(&path)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777)))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The absolute library paths in `ldd`'s output (`name => /path (0x..)` and
/// the loader's `/path (0x..)`; the vDSO has no file).
fn libraries(ldd: &str) -> Vec<&str> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once("=>").map_or(line, |(_, p)| p.trim());
            path.split_whitespace().next().filter(|p| p.starts_with('/'))
        })
        .collect()
}

/// `program` itself if it names a file, else the first match on `PATH`,
/// symlinks resolved.
fn find_program(program: &str) -> Option<PathBuf> {
    let direct = Path::new(program);
    let found = if program.contains('/') {
        direct.is_file().then(|| direct.to_owned())
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
    };
    found.and_then(|p| p.canonicalize().ok())
}

/// FNV-1a, 64 bits: a stable fingerprint of the server binary.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Runs a command, with its stderr in the error.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs `docker ARGS` and returns its trimmed stdout.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `docker`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("`docker {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Creates a bridge network named `rrq-test-<random>` with a random
/// `10.x.y.0/24` subnet, trying another subnet when one overlaps a network
/// that exists.
fn create_network() -> String {
    let mut failures = Vec::new();
    for _ in 0..8 {
        let random = uuid::Uuid::new_v4();
        let bytes = random.as_bytes();
        let name = format!("rrq-test-{}", &random.simple().to_string()[..12]);
        let subnet = format!("10.{}.{}.0/24", 100 + bytes[0] % 150, bytes[1]);
        match docker(&["network", "create", "--driver", "bridge", "--subnet", &subnet, &name]) {
            Ok(_) => return name,
            Err(e) => failures.push(format!("{subnet}: {e}")),
        }
    }
    panic!("cannot create a docker network for the test:\n{}", failures.join("\n"));
}

/// Redis nodes in containers on one private network; removed on drop.
#[derive(Debug)]
pub struct DockerRedis {
    network: String,
    nodes: Vec<DockerNode>,
}

/// One container of a [`DockerRedis`].
#[derive(Debug)]
pub struct DockerNode {
    container: ContainerAsync<GenericImage>,
    host_port: u16,
    ip: String,
}

impl DockerNode {
    /// The host port its 6379 is published on (`127.0.0.1:{host_port}`).
    pub fn host_port(&self) -> u16 {
        self.host_port
    }

    /// Its address on the private network, where other nodes reach it on
    /// port 6379 (the host can reach it there too).
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// The container id.
    pub fn id(&self) -> &str {
        self.container.id()
    }
}

impl DockerRedis {
    /// Starts `count` nodes (`redis-server --protected-mode no`, without
    /// persistence) on a new private network.
    ///
    /// # Panics
    ///
    /// When the image cannot be built or a node does not start; call
    /// [`require_docker`] first for a clear message without a daemon.
    pub async fn start(count: usize) -> DockerRedis {
        DockerRedis::start_with_args(count, &[]).await
    }

    /// As [`DockerRedis::start`], with extra `redis-server` arguments for
    /// every node (e.g. `--cluster-enabled yes`).
    pub async fn start_with_args(count: usize, args: &[&str]) -> DockerRedis {
        let image = local_image();
        let (name, tag) = image.split_once(':').expect("an image name with a tag");
        let network = create_network();
        // From here on, a panic drops `redis`, which removes the network.
        let mut redis = DockerRedis { network: network.clone(), nodes: Vec::with_capacity(count) };
        let mut cmd = vec!["--protected-mode", "no", "--save", "", "--appendonly", "no"];
        cmd.extend_from_slice(args);
        for i in 0..count {
            let mut failures = Vec::new();
            let started = loop {
                if failures.len() == PORT_ATTEMPTS {
                    panic!("docker redis node {i} did not start:\n{}", failures.join("\n"));
                }
                let host_port = free_port();
                let request = GenericImage::new(name, tag)
                    .with_exposed_port(6379.tcp())
                    .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
                    .with_network(&network)
                    .with_mapped_port(host_port, 6379.tcp())
                    .with_startup_timeout(STARTUP_DEADLINE)
                    .with_cmd(cmd.iter().copied());
                match request.start().await {
                    Ok(container) => break (container, host_port),
                    // The host port may have been taken since it was probed.
                    Err(e) => failures.push(format!("host port {host_port}: {e}")),
                }
            };
            let (container, host_port) = started;
            let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
            let ip = docker(&["inspect", "--format", &format, container.id()])
                .unwrap_or_else(|e| panic!("cannot read node {i}'s address: {e}"));
            redis.nodes.push(DockerNode { container, host_port, ip });
        }
        redis
    }

    /// The private network's name.
    pub fn network(&self) -> &str {
        &self.network
    }

    pub fn nodes(&self) -> &[DockerNode] {
        &self.nodes
    }

    /// Cuts node `i` off the private network (`docker network disconnect`):
    /// neither the host (through its published port or its address) nor the
    /// other nodes reach it until [`DockerRedis::reconnect`].
    pub fn disconnect(&self, i: usize) {
        if let Err(e) = docker(&["network", "disconnect", &self.network, self.nodes[i].id()]) {
            panic!("cannot disconnect node {i}: {e}");
        }
    }

    /// Puts node `i` back on the private network with its former address;
    /// its published host port answers again.
    pub fn reconnect(&self, i: usize) {
        let ip = &self.nodes[i].ip;
        if let Err(e) = docker(&["network", "connect", "--ip", ip, &self.network, self.nodes[i].id()]) {
            panic!("cannot reconnect node {i}: {e}");
        }
    }

    /// Kills node `i` with SIGKILL (`docker kill`); its container stays until
    /// drop.
    pub fn kill(&self, i: usize) {
        if let Err(e) = docker(&["kill", self.nodes[i].id()]) {
            panic!("cannot kill node {i}: {e}");
        }
    }
}

impl Drop for DockerRedis {
    fn drop(&mut self) {
        // Containers first (testcontainers removes each as it is dropped): a
        // network with endpoints cannot be removed.
        self.nodes.clear();
        let _ = docker(&["network", "rm", &self.network]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_daemon_a_docker_test_fails_with_the_fix_unless_opted_out() {
        let gone = || Err("the `docker` command was not found".to_owned());
        let why = decide("t", gone(), None).unwrap_err();
        assert!(why.contains("apt-get install docker.io") && why.contains("dockerd"), "{why}");
        assert!(why.contains("RRQ_TEST_NO_DOCKER=1"), "{why}");
        assert!(decide("t", gone(), Some("0")).is_err(), "only 1 opts out");
        assert_eq!(decide("t", gone(), Some("1")), Ok(false));
        assert_eq!(decide("t", Ok(()), Some("1")), Ok(true), "with a daemon, Docker tests always run");
        assert_eq!(decide("t", Ok(()), None), Ok(true));
    }

    #[test]
    fn ldd_output_gives_the_library_files() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)\n\
                   \tlibgone.so => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(libraries(ldd), ["/lib/x86_64-linux-gnu/libm.so.6", "/lib64/ld-linux-x86-64.so.2"]);
    }

    #[test]
    fn the_fingerprint_tells_binaries_apart() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(b"redis 7.0"), fnv1a(b"redis 7.2"));
    }
}

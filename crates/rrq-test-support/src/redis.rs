//! A Redis server for one test.
//!
//! [`TestRedis::start`] hands out the server named by `RRQ_TEST_REDIS_URL`
//! when that variable is set (CI may share one server, or point at Valkey),
//! and otherwise starts a private `redis-server` (or `$RRQ_REDIS_SERVER`) on a
//! free loopback port. [`TestRedis::private`] always starts its own server,
//! for tests that stop and restart Redis or that need the whole keyspace.
//!
//! A private server runs without persistence (`--save ''`, `--appendonly no`)
//! in a scratch directory, unless [`TestRedis::private_with_aof`] asked for an
//! append-only file there; [`TestRedis::private_with_args`] adds arguments of
//! the caller's (such as enabling `DEBUG`). [`TestRedis::private_tls`] also
//! listens for TLS, with a throwaway CA and server certificate made by the
//! `openssl` command. Readiness is detected by polling `INFO server`
//! until the answering process is the child we started (so a foreign server
//! that grabbed the port in the meantime is never mistaken for ours), with a
//! deadline. The server is killed and its directory removed on drop.
//!
//! Only `std` is used: no Redis client and no async runtime, so this crate
//! can be used by any test without pulling either in.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod tls;
use tls::Tls;

/// How long a freshly spawned server may take to answer.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a stopping server may take to exit before it is killed.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How many ports are tried before giving up on a start.
const PORT_ATTEMPTS: usize = 5;

/// A Redis server for one test: shared (from `RRQ_TEST_REDIS_URL`) or private
/// (a child process owned by this value).
#[derive(Debug)]
pub struct TestRedis {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Shared { url: String, port: u16 },
    Private(Server),
}

/// A `redis-server` child process and its scratch directory.
#[derive(Debug)]
struct Server {
    program: String,
    port: u16,
    url: String,
    dir: PathBuf,
    aof: bool,
    /// Extra `redis-server` arguments.
    args: Vec<String>,
    /// Boxed, so servers without TLS (most of them) stay small.
    tls: Option<Box<Tls>>,
    /// A configuration file in the scratch directory, passed first (a
    /// sentinel needs one it can rewrite).
    config: Option<PathBuf>,
    /// The cluster bus port of a cluster node.
    bus_port: Option<u16>,
    child: Option<Child>,
}

/// How to start a private server.
#[derive(Debug, Default)]
struct Options<'a> {
    aof: bool,
    args: &'a [&'a str],
    tls: bool,
    /// The text of a configuration file.
    config: Option<&'a str>,
    /// Run as a cluster node with a bus port of its own.
    cluster_bus: bool,
}

impl TestRedis {
    /// The server named by `RRQ_TEST_REDIS_URL`, or a private one when the
    /// variable is unset or empty.
    ///
    /// A shared server is used by many tests at once: isolate by key (unique
    /// queue names and job ids), never flush it.
    ///
    /// # Panics
    ///
    /// When no server can be started (see [`TestRedis::private`]).
    pub fn start() -> TestRedis {
        match std::env::var("RRQ_TEST_REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => {
                let url = url.trim().to_owned();
                let port = port_of(&url);
                TestRedis { kind: Kind::Shared { url, port } }
            }
            _ => TestRedis::private(),
        }
    }

    /// A private server without persistence, whatever the environment says.
    ///
    /// # Panics
    ///
    /// When `redis-server` (or `$RRQ_REDIS_SERVER`) cannot be run, or does not
    /// answer within a few seconds on any of several free ports.
    pub fn private() -> TestRedis {
        TestRedis { kind: Kind::Private(Server::spawn(Options::default())) }
    }

    /// A private server started from a configuration file with `config` as
    /// its text (written to the scratch directory, where the server may
    /// rewrite it) and extra arguments, e.g. a sentinel (`--sentinel`).
    pub(crate) fn private_with_config(config: &str, args: &[&str]) -> TestRedis {
        TestRedis { kind: Kind::Private(Server::spawn(Options { args, config: Some(config), ..Options::default() })) }
    }

    /// A private server with `cluster-enabled yes` and extra arguments. Its
    /// cluster bus port is a free port picked with its port (the default,
    /// port + 10000, is out of range for a fifth of the ephemeral ports), and
    /// kept across restarts.
    pub(crate) fn private_cluster_node(args: &[&str]) -> TestRedis {
        TestRedis { kind: Kind::Private(Server::spawn(Options { args, cluster_bus: true, ..Options::default() })) }
    }

    /// A private server without persistence that also accepts TLS on a second
    /// loopback port ([`TestRedis::tls_url`]), with a certificate for
    /// `127.0.0.1` and `localhost` signed by a CA made for this server alone
    /// ([`TestRedis::ca_file`]), so no client trusts it unless told to.
    /// Clients need no certificate of their own (`--tls-auth-clients no`).
    ///
    /// The plain port ([`TestRedis::url`]) stays open: it is how readiness is
    /// detected and how the server is stopped, and a test may use it to look
    /// at the data behind the store's back.
    ///
    /// # Panics
    ///
    /// As [`TestRedis::private`]; also when the `openssl` command is missing or
    /// fails, or when the server was built without TLS support.
    pub fn private_tls() -> TestRedis {
        TestRedis { kind: Kind::Private(Server::spawn(Options { tls: true, ..Options::default() })) }
    }

    /// A private server that keeps an append-only file (`--appendonly yes`,
    /// fsync on every write) in its scratch directory, so data survives
    /// [`TestRedis::stop`] / [`TestRedis::start_again`].
    ///
    /// # Panics
    ///
    /// As [`TestRedis::private`].
    pub fn private_with_aof() -> TestRedis {
        TestRedis { kind: Kind::Private(Server::spawn(Options { aof: true, ..Options::default() })) }
    }

    /// A private server without persistence, started with extra
    /// `redis-server` arguments, e.g. `["--enable-debug-command", "local"]`
    /// for tests that stall the server with `DEBUG SLEEP`. The arguments are
    /// passed again by [`TestRedis::start_again`].
    ///
    /// # Panics
    ///
    /// As [`TestRedis::private`], and when the server refuses an argument.
    pub fn private_with_args(args: &[&str]) -> TestRedis {
        TestRedis { kind: Kind::Private(Server::spawn(Options { args, ..Options::default() })) }
    }

    /// The server's URL (`redis://127.0.0.1:{port}` for a private server).
    pub fn url(&self) -> &str {
        match &self.kind {
            Kind::Shared { url, .. } => url,
            Kind::Private(s) => &s.url,
        }
    }

    /// The server's TCP port (for a shared server, the URL's port or 6379).
    pub fn port(&self) -> u16 {
        match &self.kind {
            Kind::Shared { port, .. } => *port,
            Kind::Private(s) => s.port,
        }
    }

    /// The TLS URL of a [`TestRedis::private_tls`] server
    /// (`rediss://127.0.0.1:{tls_port}`).
    ///
    /// # Panics
    ///
    /// When the server was not started with [`TestRedis::private_tls`].
    pub fn tls_url(&self) -> &str {
        &self.tls("tls_url").url
    }

    /// The TLS port of a [`TestRedis::private_tls`] server.
    ///
    /// # Panics
    ///
    /// As [`TestRedis::tls_url`].
    pub fn tls_port(&self) -> u16 {
        self.tls("tls_port").port
    }

    /// The PEM file of the throwaway CA that signed the certificate of a
    /// [`TestRedis::private_tls`] server: the one root a client must trust.
    ///
    /// # Panics
    ///
    /// As [`TestRedis::tls_url`].
    pub fn ca_file(&self) -> &Path {
        &self.tls("ca_file").ca_file
    }

    fn tls(&self, what: &str) -> &Tls {
        match &self.kind {
            Kind::Private(Server { tls: Some(tls), .. }) => tls,
            _ => panic!("TestRedis::{what} needs a server started with TestRedis::private_tls()"),
        }
    }

    /// Whether this value owns its server (and may stop it).
    pub fn is_private(&self) -> bool {
        matches!(self.kind, Kind::Private(_))
    }

    /// Stops a private server gracefully (`SHUTDOWN`, which flushes the
    /// append-only file if there is one) and waits for it to exit. Does
    /// nothing if it is already stopped.
    ///
    /// # Panics
    ///
    /// On a shared server, which is not ours to stop.
    pub fn stop(&mut self) {
        self.server("stop").stop(true);
    }

    /// Kills a private server with SIGKILL, as a crash would. Does nothing if
    /// it is already stopped.
    ///
    /// # Panics
    ///
    /// On a shared server.
    pub fn kill(&mut self) {
        self.server("kill").stop(false);
    }

    /// Freezes a private server with SIGSTOP: its connections stay open and
    /// nothing answers, as with a host cut off the network. Returns once the
    /// process is stopped (a signal is delivered asynchronously: a command
    /// sent right after `kill` returns could otherwise still be served).
    /// [`TestRedis::thaw`] lets it go on.
    ///
    /// # Panics
    ///
    /// On a shared or stopped server, or when it has not stopped within 5 s.
    pub fn freeze(&self) {
        let pid = self.signal("freeze", "STOP");
        crate::wait::until("freezing the test redis", Duration::from_secs(5), || match process_state(pid) {
            Some('T') => Ok(()),
            other => Err(format!("process {pid} in state {other:?}")),
        });
    }

    /// Lets a frozen private server go on (SIGCONT), and returns once it
    /// runs again.
    ///
    /// # Panics
    ///
    /// On a shared or stopped server, or when it is still stopped after 5 s.
    pub fn thaw(&self) {
        let pid = self.signal("thaw", "CONT");
        crate::wait::until("thawing the test redis", Duration::from_secs(5), || match process_state(pid) {
            Some('T') => Err(format!("process {pid} still stopped")),
            _ => Ok(()),
        });
    }

    /// Sends SIGNAME to the private server, and returns its process id.
    fn signal(&self, what: &str, name: &str) -> u32 {
        let pid = match &self.kind {
            Kind::Private(server) => {
                server.child.as_ref().unwrap_or_else(|| panic!("{what}: the test redis is not running")).id()
            }
            Kind::Shared { .. } => panic!("{what}: a shared test redis is not ours to signal"),
        };
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("{what}: cannot run kill: {e}"));
        assert!(status.success(), "{what}: kill -{name} {pid} failed");
        pid
    }

    /// Starts a stopped private server again on the same port and directory
    /// and waits until it answers.
    ///
    /// # Panics
    ///
    /// On a shared server, if the server is still running, or if it does not
    /// come back (for instance because another process took the port).
    pub fn start_again(&mut self) {
        let server = self.server("start_again");
        assert!(server.child.is_none(), "start_again called while the test redis on port {} still runs", server.port);
        if let Err(why) = server.launch() {
            panic!("test redis could not be restarted on port {}: {why}", server.port);
        }
    }

    fn server(&mut self, what: &str) -> &mut Server {
        match &mut self.kind {
            Kind::Private(s) => s,
            Kind::Shared { url, .. } => {
                panic!(
                    "TestRedis::{what} needs a private server, but this one is shared ({url}); use TestRedis::private()"
                )
            }
        }
    }
}

impl Server {
    fn spawn(options: Options<'_>) -> Server {
        let Options { aof, args, tls, config, cluster_bus } = options;
        let program = server_program();
        let dir = std::env::temp_dir().join(format!("rrq-test-redis-{}", uuid::Uuid::new_v4().simple()));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create the test redis directory {}: {e}", dir.display());
        }
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let mut server = Server {
            program,
            port: 0,
            url: String::new(),
            dir,
            aof,
            args,
            tls: None,
            config: None,
            bus_port: None,
            child: None,
        };
        if let Some(text) = config {
            let path = server.dir.join("redis.conf");
            if let Err(e) = std::fs::write(&path, text) {
                panic!("cannot write the test redis configuration {}: {e}", path.display());
            }
            server.config = Some(path);
        }
        if tls {
            // After `server` exists, so a failure still removes the directory.
            server.tls = Some(Box::new(Tls::generate(&server.dir)));
        }
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            if cluster_bus {
                server.bus_port = Some(loop {
                    let port = free_port();
                    if port != server.port {
                        break port;
                    }
                });
            }
            server.url = format!("redis://127.0.0.1:{}", server.port);
            if let Some(tls) = &mut server.tls {
                tls.port = loop {
                    let port = free_port();
                    if port != server.port {
                        break port;
                    }
                };
                tls.url = format!("rediss://127.0.0.1:{}", tls.port);
            }
            match server.launch() {
                Ok(()) => return server,
                // Another process may have taken the port between our probe
                // and the server's bind: try another one.
                Err(why) => failures.push(format!("port {}: {why}", server.port)),
            }
        }
        panic!("test redis did not start after {PORT_ATTEMPTS} attempts:\n{}", failures.join("\n"));
    }

    /// Spawns the child on `self.port` and waits until it answers.
    fn launch(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new(&self.program);
        if let Some(config) = &self.config {
            cmd.arg(config);
        }
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log);
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(tls) = &self.tls {
            cmd.arg("--tls-port")
                .arg(tls.port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.cert_file)
                .arg("--tls-key-file")
                .arg(&tls.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca_file)
                .args(["--tls-auth-clients", "no"]);
        }
        if let Some(bus_port) = self.bus_port {
            cmd.args(["--cluster-enabled", "yes", "--cluster-port", &bus_port.to_string()]);
        }
        cmd.args(&self.args);
        // Errors found before the log file is opened (an unknown option, say
        // `--tls-port` on a server built without TLS) go to stderr.
        let stderr = self.dir.join("redis.stderr");
        let stderr = std::fs::File::create(&stderr).map(Stdio::from).unwrap_or_else(|_| Stdio::null());
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{}` was not found: install Redis (`apt-get install redis-server`), set RRQ_REDIS_SERVER to a \
                 redis-server or valkey-server binary, or set RRQ_TEST_REDIS_URL to a running server",
                self.program
            ),
            Err(e) => panic!("cannot run `{}`: {e}", self.program),
        };
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let stderr = log_tail(&self.dir.join("redis.stderr"));
                return Err(format!(
                    "`{}` exited with {status}; log: {}; stderr: {stderr}",
                    self.program,
                    log_tail(&log)
                ));
            }
            // Ours, and done loading its append-only file: INFO answers
            // during the load, other commands get `-LOADING` until it ends.
            if server_pid(self.port).is_some_and(|p| p == pid) && !loading(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop(false);
                return Err(format!("no answer within {STARTUP_DEADLINE:?}; log: {}", log_tail(&log)));
            }
            std::thread::sleep(POLL_INTERVAL); // sleep-ok: start-up poll, bounded by STARTUP_DEADLINE
        }
    }

    fn stop(&mut self, graceful: bool) {
        let Some(mut child) = self.child.take() else { return };
        if graceful {
            let _ = command(self.port, "SHUTDOWN");
            let deadline = Instant::now() + SHUTDOWN_DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(POLL_INTERVAL); // sleep-ok: shutdown poll, bounded by SHUTDOWN_DEADLINE
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(false);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The program set by [`use_server_program`], if any.
static PROGRAM: OnceLock<String> = OnceLock::new();

/// The server program private servers run: the one [`use_server_program`]
/// set, else `$RRQ_REDIS_SERVER`, else `redis-server`.
pub fn server_program() -> String {
    PROGRAM.get().cloned().unwrap_or_else(installed_program)
}

/// The Redis server installed for tests: `$RRQ_REDIS_SERVER`, or
/// `redis-server` (what a Docker image is built from, whatever program
/// [`use_server_program`] set for private servers).
pub(crate) fn installed_program() -> String {
    std::env::var("RRQ_REDIS_SERVER").ok().filter(|p| !p.trim().is_empty()).unwrap_or_else(|| "redis-server".to_owned())
}

/// Makes every private server started from now on, in this process, run
/// `program` (say, a script that starts the real server under a profiler;
/// it must `exec` it, so the server keeps the process id it was started
/// with). The first call wins: returns whether this one was it.
pub fn use_server_program(program: impl Into<String>) -> bool {
    PROGRAM.set(program.into()).is_ok()
}

/// The state letter of process `pid` (`R`, `S`, `T` for stopped, ...), from
/// `/proc/PID/stat`; `None` when it cannot be read.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMMAND) STATE ...`: the command may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind a loopback port for the test redis: {e}"));
    listener.local_addr().expect("a bound listener has an address").port()
}

/// The `process_id` reported by the server on `port`, if one answers.
fn server_pid(port: u16) -> Option<u32> {
    let info = command(port, "INFO server").ok()??;
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|v| v.trim().parse().ok())
}

/// Whether the server on `port` is still loading its data set (or does not
/// answer).
fn loading(port: u16) -> bool {
    match command(port, "INFO persistence") {
        Ok(Some(info)) => info.lines().any(|l| l.trim() == "loading:1"),
        _ => true,
    }
}

/// Sends one command (its words split on spaces) and returns the reply's
/// text (`None` for a nil reply); an error reply or a broken connection is an
/// `Err`.
fn command(port: u16, line: &str) -> std::io::Result<Option<String>> {
    let args: Vec<&str> = line.split(' ').collect();
    crate::resp::text(port, &args)
}

/// The port of a `redis://host:port/...` URL, or Redis's default port.
fn port_of(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split(['/', '?']).next().unwrap_or(host);
    host.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(6379)
}

/// The last lines of the server log, for failure messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() { "(empty)".to_owned() } else { tail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn url_ports_are_found() {
        assert_eq!(port_of("redis://127.0.0.1:6390"), 6390);
        assert_eq!(port_of("redis://u:p@h:7000/2"), 7000);
        assert_eq!(port_of("rediss://h"), 6379);
        assert_eq!(port_of("valkey://h:1234?x=y"), 1234);
    }

    #[test]
    fn a_private_server_answers_survives_a_restart_with_aof_and_dies_on_drop() {
        let mut redis = TestRedis::private_with_aof();
        let port = redis.port();
        assert!(redis.url().ends_with(&format!(":{port}")));
        assert_eq!(command(port, "SET k v").unwrap().as_deref(), Some("OK"));
        redis.stop();
        assert!(command(port, "PING").is_err(), "a stopped server must not answer");
        redis.start_again();
        assert_eq!(redis.port(), port);
        assert_eq!(
            command(port, "GET k").unwrap().as_deref(),
            Some("v"),
            "the append-only file must bring the key back"
        );
        drop(redis);
        assert!(command(port, "PING").is_err(), "a dropped server must be gone");
    }

    #[test]
    fn extra_arguments_reach_the_server_and_survive_a_restart() {
        let mut redis = TestRedis::private_with_args(&["--enable-debug-command", "local"]);
        let port = redis.port();
        assert_eq!(command(port, "DEBUG SLEEP 0").unwrap().as_deref(), Some("OK"));
        redis.kill();
        redis.start_again();
        assert_eq!(command(port, "DEBUG SLEEP 0").unwrap().as_deref(), Some("OK"));
        let plain = TestRedis::private();
        assert!(command(plain.port(), "DEBUG SLEEP 0").is_err(), "DEBUG is off by default");
    }

    #[test]
    fn a_tls_server_answers_on_both_ports_with_its_own_ca() {
        let mut redis = TestRedis::private_tls();
        assert_ne!(redis.tls_port(), redis.port());
        assert_eq!(redis.tls_url(), format!("rediss://127.0.0.1:{}", redis.tls_port()));
        let ca = std::fs::read_to_string(redis.ca_file()).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        assert_eq!(command(redis.port(), "PING").unwrap().as_deref(), Some("PONG"));
        // Plain text on the TLS port gets no Redis reply.
        assert!(command(redis.tls_port(), "PING").is_err(), "the TLS port must not speak plain RESP");
        redis.kill();
        redis.start_again();
        assert!(TcpStream::connect(("127.0.0.1", redis.tls_port())).is_ok(), "TLS port open after a restart");
    }

    #[test]
    fn a_cluster_node_has_a_bus_port_of_its_own_across_restarts() {
        let bus_port = |port| {
            let nodes = command(port, "CLUSTER NODES").unwrap().unwrap();
            let me = nodes.lines().find(|l| l.contains("myself")).unwrap().to_owned();
            me.split_whitespace().nth(1).unwrap().split(['@', ',']).nth(1).unwrap().parse::<u32>().unwrap()
        };
        let mut node = TestRedis::private_cluster_node(&[]);
        let port = node.port();
        let bus = bus_port(port);
        assert_ne!(bus, u32::from(port) + 10000, "the bus port is picked, not derived");
        node.kill();
        node.start_again();
        assert_eq!(bus_port(port), bus);
    }

    #[test]
    fn without_aof_a_restart_loses_everything() {
        let mut redis = TestRedis::private();
        let port = redis.port();
        assert_eq!(command(port, "SET k v").unwrap().as_deref(), Some("OK"));
        redis.kill();
        redis.start_again();
        assert_eq!(command(port, "GET k").unwrap(), None, "the key must be gone after a restart without persistence");
    }
}

//! Starting, probing and stopping one managed runner process.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::PoolConfig;
use crate::guard::{self, GUARD_ARG};
use crate::identity::{self, Owner};

/// Environment variable naming the listen address, for 0.9.9-era runners.
pub(crate) const TCP_SOCKET_ENV: &str = "RRQ_RUNNER_TCP_SOCKET";

/// Environment variable marking every runner process (and, by inheritance,
/// its descendants) with its orchestrator: `PID:STARTTIME`. The start-up
/// sweep kills marked processes whose orchestrator is gone.
pub(crate) const OWNER_ENV: &str = "RRQ_RUNNER_OWNER";

/// Lines of stderr kept for error messages.
const STDERR_TAIL: usize = 20;

/// Longest stderr line kept (longer ones are cut).
const MAX_LINE: usize = 8 * 1024;

/// Readiness probe delays: 10 ms doubling to 200 ms, as the reference.
const PROBE_FIRST_DELAY: Duration = Duration::from_millis(10);
const PROBE_MAX_DELAY: Duration = Duration::from_millis(200);

/// Why a process could not be made ready.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The program could not be executed at all.
    Exec(io::Error),
    /// The process exited before it accepted connections.
    Exited { status: ExitStatus, stderr: Vec<String> },
    /// The process did not accept connections in time.
    NotReady { addr: SocketAddr, waited: Duration, stderr: Vec<String> },
    /// Something outside the process group accepts connections on the port.
    Foreign { addr: SocketAddr },
}

impl SpawnError {
    /// A message for logs and `PoolError::Unavailable`.
    pub(crate) fn describe(&self, runner: &str, program: &str) -> String {
        let tail = |lines: &[String]| {
            if lines.is_empty() { String::new() } else { format!("; last stderr lines:\n{}", lines.join("\n")) }
        };
        match self {
            SpawnError::Exec(e) => format!("cannot start runner '{runner}' ({program}): {e}"),
            SpawnError::Exited { status, stderr } => {
                format!("runner '{runner}' exited before it was ready ({status}){}", tail(stderr))
            }
            SpawnError::NotReady { addr, waited, stderr } => format!(
                "runner '{runner}' did not accept connections on {addr} within {:.1}s{}",
                waited.as_secs_f64(),
                tail(stderr)
            ),
            SpawnError::Foreign { addr } => {
                format!("{addr} is served by a process outside runner '{runner}' (not its process group)")
            }
        }
    }

    /// Whether trying another port may help: a foreign listener, or an exit
    /// while something else now holds the port (the runner most likely lost
    /// the race for it and died of `address already in use`).
    pub(crate) fn is_port_problem(&self, port: u16) -> bool {
        match self {
            SpawnError::Foreign { .. } => true,
            SpawnError::Exited { .. } => !port_is_free(port),
            SpawnError::Exec(_) | SpawnError::NotReady { .. } => false,
        }
    }
}

/// A spawned, ready runner process.
#[derive(Debug)]
pub(crate) struct RunnerProcess {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    pub(crate) started: Instant,
    pub(crate) stderr: StderrTail,
}

/// The last lines a process wrote to stderr, and whether its stderr is closed.
#[derive(Clone, Debug, Default)]
pub(crate) struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    eof: Arc<tokio::sync::Notify>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl StderrTail {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == STDERR_TAIL {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn finish(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.eof.notify_waiters();
    }

    /// The kept lines, after waiting (briefly) for the stream to end so that
    /// the lines written just before an exit are included.
    pub(crate) async fn collect(&self, wait: Duration) -> Vec<String> {
        let eof = self.eof.notified();
        if !self.done.load(std::sync::atomic::Ordering::Acquire) {
            let _ = tokio::time::timeout(wait, eof).await;
        }
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

/// Spawns child processes from one long-lived thread.
///
/// The parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that
/// forked the child exits, not the process. Forking from tokio's threads would
/// tie the runners' lives to threads the runtime may retire (blocking-pool
/// threads, `block_in_place`); forking from this thread ties them to the pool:
/// it lives until the pool's last supervisor is gone, or the process dies.
#[derive(Debug)]
pub(crate) struct Spawner {
    jobs: std::sync::mpsc::Sender<(Command, oneshot::Sender<io::Result<Child>>)>,
}

impl Spawner {
    pub(crate) fn new(runner: &str) -> io::Result<Self> {
        let handle = tokio::runtime::Handle::current();
        let (jobs, rx) = std::sync::mpsc::channel::<(Command, oneshot::Sender<io::Result<Child>>)>();
        std::thread::Builder::new().name(format!("rrq-spawn-{runner}")).spawn(move || {
            // Child processes register with the runtime's process driver.
            let _runtime = handle.enter();
            while let Ok((mut command, reply)) = rx.recv() {
                let _ = reply.send(command.spawn());
            }
        })?;
        Ok(Self { jobs })
    }

    async fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send((command, reply)).map_err(|_| io::Error::other("spawner thread is gone"))?;
        rx.await.map_err(|_| io::Error::other("spawner thread is gone"))?
    }
}

/// Whether `port` on 127.0.0.1 can be bound right now.
pub(crate) fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Spawns one process for `config` listening on `port` and waits until it is
/// ready and verified to own the port. `on_spawn` learns the process group
/// id as soon as the process exists.
pub(crate) async fn start(
    spawner: &Spawner,
    config: &PoolConfig,
    port: u16,
    on_spawn: impl FnOnce(u32),
) -> Result<RunnerProcess, SpawnError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut child = spawner.spawn(command(config, addr)).await.map_err(SpawnError::Exec)?;
    let started = Instant::now();
    let Some(pid) = child.id() else {
        // Reaped already: it can only have exited.
        let status = child.wait().await.map_err(SpawnError::Exec)?;
        return Err(SpawnError::Exited { status, stderr: Vec::new() });
    };
    on_spawn(pid);
    let stderr = StderrTail::default();
    forward_output(&mut child, config, &stderr);
    debug!(runner = %config.name, pid, %addr, "runner process spawned");
    let deadline = started + config.connect_timeout;
    match wait_ready(&mut child, pid, addr, deadline).await {
        Ok(()) => {
            info!(runner = %config.name, pid, %addr, ms = started.elapsed().as_millis() as u64, "runner process ready");
            Ok(RunnerProcess { child, pid, addr, started, stderr })
        }
        Err(Probe::Exited(status)) => {
            let stderr = stderr.collect(Duration::from_millis(500)).await;
            Err(SpawnError::Exited { status, stderr })
        }
        Err(probe) => {
            let mut doomed = RunnerProcess { child, pid, addr, started, stderr };
            terminate(&mut doomed, Duration::ZERO).await;
            match probe {
                Probe::Foreign => Err(SpawnError::Foreign { addr }),
                _ => {
                    let stderr = doomed.stderr.collect(Duration::from_millis(200)).await;
                    Err(SpawnError::NotReady { addr, waited: config.connect_timeout, stderr })
                }
            }
        }
    }
}

fn command(config: &PoolConfig, addr: SocketAddr) -> Command {
    let socket = addr.to_string();
    let mut command = if guard::enabled() {
        // The guard leads the group and starts the command in it; it is
        // what this pool supervises, signals and waits for.
        let mut command = Command::new(guard::program());
        command.arg0("rrq-runner-guard").arg(GUARD_ARG).arg(std::process::id().to_string()).arg(&config.cmd[0]);
        command
    } else {
        Command::new(&config.cmd[0])
    };
    command.args(&config.cmd[1..]).arg("--tcp-socket").arg(&socket);
    for name in &config.env_remove {
        command.env_remove(name);
    }
    command
        .envs(&config.env)
        .env(TCP_SOCKET_ENV, &socket)
        .env(OWNER_ENV, guard::owner_marker())
        .stdin(Stdio::null())
        .stdout(if config.capture_output { Stdio::piped() } else { Stdio::inherit() })
        // Always piped: start-up errors are quoted from it; afterwards it is
        // forwarded as configured.
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    set_parent_death_signal(&mut command);
    command
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(command: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    let hook = move || -> io::Result<()> {
        // SAFETY: prctl and getppid are async-signal-safe system calls with no
        // pointer arguments; nothing here allocates or takes a lock, as
        // required between fork and exec.
        #[allow(unsafe_code, reason = "system calls between fork and exec")]
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls (see above).
    #[allow(unsafe_code, reason = "pre_exec is unsafe; the hook is async-signal-safe")]
    unsafe {
        command.pre_exec(hook);
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_command: &mut Command) {}

/// Reads the child's stderr (always) and stdout (when captured), keeping the
/// stderr tail and forwarding lines as configured.
fn forward_output(child: &mut Child, config: &PoolConfig, tail: &StderrTail) {
    let runner: Arc<str> = Arc::from(config.name.as_str());
    if let Some(stdout) = child.stdout.take() {
        let runner = Arc::clone(&runner);
        tokio::spawn(async move {
            let mut lines = LineReader::new(stdout);
            while let Some((line, _)) = lines.next().await {
                info!(runner = %runner, stream = "stdout", "{line}");
            }
        });
    }
    if let Some(stderr) = child.stderr.take() {
        let capture = config.capture_output;
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut out = tokio::io::stderr();
            let mut lines = LineReader::new(stderr);
            while let Some((line, raw)) = lines.next().await {
                if capture {
                    warn!(runner = %runner, stream = "stderr", "{line}");
                } else {
                    // Not captured: pass the bytes through, as if inherited.
                    let _ = out.write_all(raw).await;
                }
                tail.push(line);
            }
            let _ = out.flush().await;
            tail.finish();
        });
    }
}

/// Splits a byte stream into lines without requiring UTF-8.
struct LineReader<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(stream: R) -> Self {
        Self { reader: BufReader::new(stream), buf: Vec::new() }
    }

    /// The next line as text, and its raw bytes (newline included).
    async fn next(&mut self) -> Option<(String, &[u8])> {
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some((line_text(&self.buf), &self.buf)),
        }
    }
}

fn line_text(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let raw = &raw[..raw.len().min(MAX_LINE)];
    String::from_utf8_lossy(raw).into_owned()
}

enum Probe {
    Exited(ExitStatus),
    Foreign,
    TimedOut,
}

/// Ready = our child is alive, the port accepts, and the listener belongs to
/// the child's process group (or that cannot be determined).
async fn wait_ready(child: &mut Child, pid: u32, addr: SocketAddr, deadline: Instant) -> Result<(), Probe> {
    let mut delay = PROBE_FIRST_DELAY;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Probe::Exited(status));
        }
        if let Ok(Ok(probe)) = tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            // The reference closes the probe without sending anything;
            // runners must tolerate that.
            drop(probe);
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Probe::Exited(status));
            }
            return match identity::listener_owner(addr.port(), pid) {
                Owner::Group | Owner::Unknown => Ok(()),
                Owner::Foreign => Err(Probe::Foreign),
            };
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Probe::TimedOut);
        }
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => Err(Probe::Exited(status)),
                    Err(_) => Err(Probe::TimedOut),
                };
            }
            () = tokio::time::sleep(delay.min(deadline - now)) => {}
        }
        delay = next_probe_delay(delay);
    }
}

/// The pause before the next readiness probe: double the last one, capped.
fn next_probe_delay(last: Duration) -> Duration {
    last.saturating_mul(2).min(PROBE_MAX_DELAY)
}

/// Sends `signal` to every process of the group led by `pgid`.
pub(crate) fn kill_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    // Never let a bogus id turn into kill(0) (our own group) or kill(-1)
    // (every process we may signal).
    let pgid = libc::pid_t::try_from(pgid).ok().filter(|&p| p > 1).ok_or_else(|| io::Error::other("invalid group"))?;
    // SAFETY: kill(2) takes plain integers; a negative pid addresses the group.
    #[allow(unsafe_code, reason = "signalling a process group has no safe std API")]
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Stops the process group: SIGTERM, up to `grace` for the leader to exit,
/// then SIGKILL to whatever is left of the group; reaps the leader.
pub(crate) async fn terminate(process: &mut RunnerProcess, grace: Duration) -> Option<ExitStatus> {
    let pgid = process.pid;
    if !grace.is_zero() {
        let _ = kill_group(pgid, libc::SIGTERM);
        if tokio::time::timeout(grace, process.child.wait()).await.is_err() {
            debug!(pid = pgid, "runner ignored SIGTERM; killing its process group");
        }
    }
    // A leader that ignored SIGTERM, or members that outlived it.
    let _ = kill_group(pgid, libc::SIGKILL);
    process.child.wait().await.ok()
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    /// docs/RUNNER_PROTOCOL.md, "Readiness": 10 ms doubling to 200 ms
    /// between connection tries.
    #[test]
    fn readiness_probes_back_off_from_10_ms_doubling_to_200_ms() {
        let delays: Vec<u64> = std::iter::successors(Some(PROBE_FIRST_DELAY), |&d| Some(next_probe_delay(d)))
            .take(8)
            .map(|d| u64::try_from(d.as_millis()).unwrap())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 200, 200, 200]);
    }
}

//! The runner guard: a tiny process between the pool and each runner, so
//! that no runner descendant outlives the orchestrator (Linux).
//!
//! The kernel's parent-death signal reaches only the pool's direct child.
//! When `cmd` is a launcher that forks (`uv run`, `poetry run`, a shell
//! script that does not `exec`), that child is the launcher and the runner a
//! grandchild that survives a SIGKILLed orchestrator. With the guard, the
//! pool's direct child is the embedding binary itself in guard mode: it leads
//! the runner's process group, starts the real command in that group, and
//! when its parent dies it kills the whole group.
//!
//! The embedding binary opts in by calling [`run_if_requested`] first thing
//! in `main` (the `rrq` binary does). A library user that does not is served
//! as before: the command is the pool's direct child.
//!
//! The guard:
//! * blocks the signals it handles and waits for them synchronously
//!   (`sigwaitinfo`), so there are no handlers and no races with them;
//! * sets its parent-death signal and then checks `getppid()` against the
//!   pool's pid passed on the command line (the parent may have died before);
//! * starts the command in its own process group (inherited), with
//!   everything else inherited too (environment, working directory, stdio),
//!   and a parent-death signal of its own;
//! * forwards SIGTERM, SIGINT, SIGHUP and SIGQUIT to the command unless they
//!   came from the pool (which signals the whole group, the command included);
//! * on its parent's death SIGKILLs the whole group, itself included;
//! * exits like the command: with its exit code, or killed by its signal.

use std::ffi::{OsStr, OsString};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// First argument that starts a process in guard mode:
/// `EXE __rrq-runner-guard POOL_PID PROGRAM [ARGS…]`.
pub(crate) const GUARD_ARG: &str = "__rrq-runner-guard";

/// The signal the guard asks for when its parent dies.
#[cfg(target_os = "linux")]
const PARENT_DIED: libc::c_int = libc::SIGUSR2;

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Runs the runner guard when this process was started as one, and never
/// returns then; otherwise returns at once and lets the pools of this
/// process start their runners behind guards.
///
/// Call it at the very start of `main`, before any thread is started: the
/// guard relies on being single-threaded.
pub fn run_if_requested() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(GUARD_ARG)) {
        INSTALLED.store(true, Ordering::Release);
        return;
    }
    let code = run(args.collect());
    std::process::exit(code);
}

/// Whether pools should start their runners behind a guard: the hook was
/// installed, and the platform supports it.
pub(crate) fn enabled() -> bool {
    cfg!(target_os = "linux") && INSTALLED.load(Ordering::Acquire)
}

/// The program that runs a guard: this very executable. `/proc/self/exe`,
/// resolved in the freshly forked child, still names this binary's image even
/// if its file was replaced or deleted since.
pub(crate) fn program() -> &'static OsStr {
    OsStr::new("/proc/self/exe")
}

/// The value of [`crate::process::OWNER_ENV`] for this process:
/// `PID:STARTTIME` (the start time as in `/proc/PID/stat`, which tells a
/// live owner from a recycled pid).
pub(crate) fn owner_marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let pid = std::process::id();
        let start = crate::identity::start_time(pid).map_or_else(|| "?".to_owned(), |t| t.to_string());
        format!("{pid}:{start}")
    })
}

#[cfg(not(target_os = "linux"))]
fn run(_args: Vec<OsString>) -> i32 {
    eprintln!("rrq runner guard: not supported on this platform");
    70
}

#[cfg(target_os = "linux")]
fn run(args: Vec<OsString>) -> i32 {
    use std::os::unix::process::CommandExt;

    let mut args = args.into_iter();
    let parent = args.next().and_then(|p| p.to_str()?.parse::<libc::pid_t>().ok());
    let (Some(parent), Some(program)) = (parent, args.next()) else {
        eprintln!("rrq runner guard: usage: {GUARD_ARG} POOL_PID PROGRAM [ARGS...]");
        return 64;
    };
    let handled = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGCHLD, PARENT_DIED];
    let set = signal_set(&handled);
    // SAFETY: plain system calls on a sigset_t we own; the process is still
    // single-threaded (see `run_if_requested`).
    #[allow(unsafe_code, reason = "signal mask and parent-death signal have no safe std API")]
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DIED as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != parent {
            // The pool died before the parent-death signal was armed.
            return 70;
        }
    }
    let mut command = std::process::Command::new(&program);
    command.args(args);
    let guard = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the hook only makes async-signal-safe system calls without
    // pointer arguments, as required between fork and exec.
    #[allow(unsafe_code, reason = "pre_exec is unsafe; the hook is async-signal-safe")]
    unsafe {
        command.pre_exec(move || {
            // Defence in depth: should the guard die, so does the command.
            #[allow(unsafe_code, reason = "system calls between fork and exec")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1
                || libc::getppid() != guard
            {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    // std resets the signal mask in the child: the command starts with none
    // of the guard's signals blocked.
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("rrq runner guard: cannot start {}: {e}", program.to_string_lossy());
            return 127;
        }
    };
    let child_pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
    loop {
        // SAFETY: siginfo_t is plain data; sigwaitinfo fills it.
        #[allow(unsafe_code, reason = "sigwaitinfo has no safe std API")]
        let (signal, sender) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let signal = libc::sigwaitinfo(&set, &mut info);
            (signal, if signal > 0 { info.si_pid() } else { 0 })
        };
        match signal {
            -1 => continue, // EINTR
            libc::SIGCHLD => {
                if let Ok(Some(status)) = child.try_wait() {
                    return exit_like(status);
                }
            }
            s if s == PARENT_DIED => {
                // SAFETY: kill(2) takes plain integers; -guard is our own group.
                #[allow(unsafe_code, reason = "killing our own process group")]
                unsafe {
                    libc::kill(-guard, libc::SIGKILL);
                }
                return 137;
            }
            s => {
                if sender != parent {
                    // SAFETY: kill(2) takes plain integers.
                    #[allow(unsafe_code, reason = "forwarding a signal")]
                    unsafe {
                        libc::kill(child_pid, s);
                    }
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    #[allow(unsafe_code, reason = "building a sigset_t")]
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Ends the guard the way its command ended: its exit code, or its signal.
#[cfg(target_os = "linux")]
fn exit_like(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return code;
    }
    let Some(signal) = status.signal() else { return 70 };
    // SAFETY: restoring the default action of a signal and raising it; the
    // process ends here.
    #[allow(unsafe_code, reason = "dying of the command's signal")]
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let set = signal_set(&[signal]);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    128 + signal
}

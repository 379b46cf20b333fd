//! Who is listening on a port (Linux): the readiness probe's identity check.
//!
//! A successful TCP connect only proves that *something* listens on the port.
//! The reference orchestrator stopped there, so a foreign process that grabbed
//! the port between the free-port check and the runner's bind answered the
//! jobs (SEMANTICS §18, D15). Here the listening sockets for the port are read
//! from `/proc/net/tcp{,6}` and their inodes looked up among the open file
//! descriptors of the runner's process group.
//!
//! When `/proc` is unavailable or unreadable the answer is
//! [`Owner::Unknown`]; the caller then relies on the liveness checks it makes
//! before and after connecting.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The verdict on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A listener reachable on 127.0.0.1 belongs to the process group.
    Group,
    /// Listeners reachable on 127.0.0.1 exist, none in the process group.
    Foreign,
    /// Nothing conclusive could be read.
    Unknown,
}

/// Decides who owns the listener on `127.0.0.1:port`, given the runner's
/// process group id (the child's pid: it leads its own group).
pub(crate) fn listener_owner(port: u16, pgid: u32) -> Owner {
    if !cfg!(target_os = "linux") {
        return Owner::Unknown;
    }
    let mut inodes = HashSet::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(file) {
            inodes.extend(listening_inodes(&text, v6, port));
        }
    }
    if inodes.is_empty() {
        return Owner::Unknown;
    }
    // The leader usually holds the socket itself: look there first.
    if holds_any(pgid, &inodes) {
        return Owner::Group;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return Owner::Unknown };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == pgid {
            continue;
        }
        let in_group = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| process_group(&stat))
            .is_some_and(|g| g == pgid);
        if in_group && holds_any(pid, &inodes) {
            return Owner::Group;
        }
    }
    Owner::Foreign
}

fn holds_any(pid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| socket_inode(target.to_str()?))
            .is_some_and(|i| inodes.contains(&i))
    })
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The process group (5th field) of a `/proc/PID/stat` line. The command
/// name may contain spaces and parentheses, so fields are counted from the
/// last `)`.
fn process_group(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The start time (clock ticks after boot, 22nd field) of a
/// `/proc/PID/stat` line.
fn stat_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// When process `pid` started (see [`stat_start_time`]); `None` when it is
/// gone, a zombie, or `/proc` is unreadable.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    if rest.trim_start().starts_with(['Z', 'X']) {
        return None;
    }
    stat_start_time(&stat)
}

/// The owner marker (`PID:STARTTIME`) in a `/proc/PID/environ` block.
fn owner_in_environ(environ: &[u8], name: &str) -> Option<(u32, u64)> {
    let prefix = format!("{name}=");
    let entry = environ.split(|b| *b == 0).find_map(|e| e.strip_prefix(prefix.as_bytes()))?;
    let (pid, start) = std::str::from_utf8(entry).ok()?.split_once(':')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Kills runner processes left behind by an orchestrator that is gone: every
/// process whose environment carries the owner marker `name=PID:STARTTIME`
/// of a process that no longer runs (or whose pid now belongs to a process
/// started at another time), with its process group when it leads one.
/// Processes without the marker, or whose environment cannot be read (other
/// users'), are never touched. Returns the pids killed.
pub(crate) fn sweep_leftovers(name: &str) -> Vec<u32> {
    let mut killed = Vec::new();
    if !cfg!(target_os = "linux") {
        return killed;
    }
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return killed };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let Some((owner, started)) = owner_in_environ(&environ, name) else { continue };
        if start_time(owner) == Some(started) {
            continue; // its orchestrator is alive (this one, or another)
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])) {
            continue; // dead already, waiting to be reaped
        }
        let leads_group = process_group(&stat) == Some(pid);
        if leads_group {
            let _ = crate::process::kill_group(pid, libc::SIGKILL);
        }
        if let Ok(p) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) takes plain integers; `p` is a positive pid.
            #[allow(unsafe_code, reason = "killing a leftover runner process")]
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        killed.push(pid);
    }
    killed
}

/// Inodes of the sockets listening on `port` that a connection to
/// 127.0.0.1 can reach, from the text of `/proc/net/tcp` (or `tcp6`).
fn listening_inodes(table: &str, v6: bool, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != LISTEN {
            continue;
        }
        let Some((addr, port_hex)) = fields[1].split_once(':') else { continue };
        if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
            continue;
        }
        let Some(ip) = (if v6 { parse_v6(addr).map(IpAddr::V6) } else { parse_v4(addr).map(IpAddr::V4) }) else {
            continue;
        };
        if reaches_ipv4_loopback(ip)
            && let Ok(inode) = fields[9].parse::<u64>()
            && inode != 0
        {
            found.push(inode);
        }
    }
    found
}

fn reaches_ipv4_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => v6.is_unspecified() || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST),
    }
}

/// The kernel prints each 32-bit word of the address as a native-endian
/// integer in hex.
fn parse_v4(hex: &str) -> Option<Ipv4Addr> {
    if hex.len() != 8 {
        return None;
    }
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(word.to_ne_bytes()))
}

fn parse_v6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0_u8; 16];
    for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 00000000:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:2328 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1
   3: 0200007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 666 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listeners_reachable_on_ipv4_loopback_count() {
        if cfg!(target_endian = "big") {
            return; // the fixtures are little-endian renderings
        }
        // 127.0.0.1:9000 listening; 0.0.0.0:9001; an established socket and
        // 127.0.0.2 are ignored.
        assert_eq!(listening_inodes(TCP, false, 9000), vec![111]);
        assert_eq!(listening_inodes(TCP, false, 9001), vec![222]);
        // [::]:9000 and [::ffff:127.0.0.1]:9000 count; [::1]:9000 does not.
        assert_eq!(listening_inodes(TCP6, true, 9000), vec![555, 777]);
        assert!(listening_inodes(TCP, false, 1).is_empty());
        assert!(listening_inodes("garbage\nmore garbage", false, 9000).is_empty());
    }

    #[test]
    fn start_times_and_owner_markers_parse() {
        let stat = "7 (a (b) c) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(stat_start_time(stat), Some(12345));
        assert_eq!(stat_start_time("garbage"), None);
        let own = start_time(std::process::id());
        assert!(own.is_some());
        let environ = b"A=1\0RRQ_RUNNER_OWNER=42:777\0B=2\0";
        assert_eq!(owner_in_environ(environ, "RRQ_RUNNER_OWNER"), Some((42, 777)));
        assert_eq!(owner_in_environ(b"RRQ_RUNNER_OWNER=42:?\0", "RRQ_RUNNER_OWNER"), None);
        assert_eq!(owner_in_environ(b"X_RRQ_RUNNER_OWNER=1:2\0", "RRQ_RUNNER_OWNER"), None);
    }

    #[test]
    fn stat_and_fd_links_parse() {
        assert_eq!(process_group("42 (sh) S 1 42 42 0 -1"), Some(42));
        assert_eq!(process_group("43 (my (odd) name) R 42 42 7 0"), Some(42));
        assert_eq!(process_group("nonsense"), None);
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn our_own_listener_belongs_to_our_group_and_a_free_port_is_unknown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The test process is not necessarily a group leader: look up its group.
        let stat = std::fs::read_to_string("/proc/self/stat");
        let Some(pgid) = stat.ok().and_then(|s| process_group(&s)) else { return };
        assert_eq!(listener_owner(port, pgid), Owner::Group);
        // No process is in a group with an impossible id.
        assert_eq!(listener_owner(port, u32::MAX), Owner::Foreign);
        drop(listener);
        assert_eq!(listener_owner(port, pgid), Owner::Unknown);
    }
}

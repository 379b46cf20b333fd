//! Where the runner listens: `--tcp-socket host:port`, loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::ServeError;

/// The command-line option carrying the listen address.
///
/// ```
/// assert_eq!(rrq_runner::TCP_SOCKET_FLAG, "--tcp-socket");
/// ```
pub const TCP_SOCKET_FLAG: &str = "--tcp-socket";

/// The environment variable read when the option is absent (0.9.9 contract).
///
/// ```
/// assert_eq!(rrq_runner::TCP_SOCKET_ENV, "RRQ_RUNNER_TCP_SOCKET");
/// ```
pub const TCP_SOCKET_ENV: &str = "RRQ_RUNNER_TCP_SOCKET";

/// Picks the listen address from the arguments (`--tcp-socket V` or
/// `--tcp-socket=V`, the last one wins), else from `env_value`, and checks it.
///
/// `args` excludes the program name.
///
/// ```
/// use rrq_runner::socket_from_args;
/// let addr = socket_from_args(["--tcp-socket", "127.0.0.1:9100"], Some("127.0.0.1:1")).unwrap();
/// assert_eq!(addr.port(), 9100, "the option wins over the environment");
/// assert_eq!(socket_from_args(Vec::<String>::new(), Some("[::1]:7")).unwrap().port(), 7);
/// ```
pub fn socket_from_args<I, S>(args: I, env_value: Option<&str>) -> Result<SocketAddr, ServeError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut found: Option<String> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.as_ref();
        if arg == TCP_SOCKET_FLAG {
            let value = args.next().ok_or_else(|| ServeError::InvalidAddress {
                value: String::new(),
                reason: format!("{TCP_SOCKET_FLAG} needs a value"),
            })?;
            found = Some(value.as_ref().to_owned());
        } else if let Some(value) = arg.strip_prefix(TCP_SOCKET_FLAG).and_then(|v| v.strip_prefix('=')) {
            found = Some(value.to_owned());
        }
    }
    match found.as_deref().or(env_value.filter(|v| !v.trim().is_empty())) {
        Some(value) => parse_socket(value),
        None => Err(ServeError::MissingAddress),
    }
}

/// Parses `host:port` (IPv6 in brackets), mapping `localhost` to `127.0.0.1`,
/// and refuses anything that is not a loopback address.
///
/// ```
/// use rrq_runner::parse_socket;
/// assert_eq!(parse_socket("localhost:9000").unwrap().to_string(), "127.0.0.1:9000");
/// assert!(parse_socket("10.0.0.1:9000").is_err(), "not loopback");
/// ```
pub fn parse_socket(value: &str) -> Result<SocketAddr, ServeError> {
    let invalid = |reason: &str| ServeError::InvalidAddress { value: value.to_owned(), reason: reason.to_owned() };
    let trimmed = value.trim();
    let (host, port) = trimmed.rsplit_once(':').ok_or_else(|| invalid("expected host:port"))?;
    let port: u16 = port.parse().map_err(|_| invalid("the port is not a number between 0 and 65535"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| invalid("the host is not an IP address or localhost"))?
    };
    if !ip.is_loopback() {
        return Err(ServeError::NotLoopback(SocketAddr::new(ip, port)));
    }
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_wins_over_environment() {
        let addr = socket_from_args(["--settings", "x", "--tcp-socket", "127.0.0.1:9000"], Some("127.0.0.1:1"));
        assert_eq!(addr.unwrap(), "127.0.0.1:9000".parse().unwrap());
        let addr = socket_from_args(["--tcp-socket=[::1]:9001"], None);
        assert_eq!(addr.unwrap(), "[::1]:9001".parse().unwrap());
        let addr = socket_from_args(Vec::<String>::new(), Some("localhost:9002"));
        assert_eq!(addr.unwrap(), "127.0.0.1:9002".parse().unwrap());
    }

    #[test]
    fn missing_or_bad_addresses_are_refused() {
        assert!(matches!(socket_from_args(["x"], None), Err(ServeError::MissingAddress)));
        assert!(matches!(socket_from_args(["--tcp-socket"], None), Err(ServeError::InvalidAddress { .. })));
        assert!(matches!(parse_socket("0.0.0.0:9000"), Err(ServeError::NotLoopback(_))));
        assert!(matches!(parse_socket("10.1.2.3:9000"), Err(ServeError::NotLoopback(_))));
        assert!(matches!(parse_socket("example.com:9000"), Err(ServeError::InvalidAddress { .. })));
        assert!(matches!(parse_socket("127.0.0.1:99999"), Err(ServeError::InvalidAddress { .. })));
        assert!(matches!(parse_socket("127.0.0.1"), Err(ServeError::InvalidAddress { .. })));
    }
}

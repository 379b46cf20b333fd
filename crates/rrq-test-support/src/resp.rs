//! A minimal, blocking RESP2 client for tests: one connection per call.
//!
//! Fixtures use it to wait for servers, read `CLUSTER`/`SENTINEL` state and
//! look at data behind a client's back, without a Redis client library or an
//! async runtime. Arguments are sent as a RESP array, so they may hold spaces
//! or be empty (as `MIGRATE`'s key argument is).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::Duration;

/// How long connecting to a loopback port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a reply may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...` (the text without the dash).
    Error(String),
    /// `:42`
    Int(i64),
    /// A bulk string; `None` for the nil bulk (`$-1`). Lossy UTF-8.
    Bulk(Option<String>),
    /// An array; `None` for the nil array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Status(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The items of an array reply (empty for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

/// Sends one command to `127.0.0.1:port` and reads its reply. An error reply
/// is returned as [`Reply::Error`], not as an `Err`: `Err` means the server
/// could not be reached or answered something that is not RESP2.
pub fn call(port: u16, args: &[&str]) -> std::io::Result<Reply> {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut stream = TcpStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request)?;
    read_reply(&mut BufReader::new(stream))
}

/// Like [`call`], but an error reply becomes an `Err` too, and the reply must
/// be a status or a bulk string: its text (`None` for nil).
pub fn text(port: u16, args: &[&str]) -> std::io::Result<Option<String>> {
    match call(port, args)? {
        Reply::Status(s) | Reply::Bulk(Some(s)) => Ok(Some(s)),
        Reply::Bulk(None) => Ok(None),
        Reply::Int(n) => Ok(Some(n.to_string())),
        Reply::Error(e) => Err(invalid(&e)),
        Reply::Array(_) => Err(invalid("an array reply where a string was expected")),
    }
}

/// The `key:value` lines of an `INFO`-like reply (`INFO replication`,
/// `CLUSTER INFO`): the value of `field`, if the server answers and has it.
pub fn info_field(port: u16, args: &[&str], field: &str) -> Option<String> {
    let info = text(port, args).ok()??;
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_owned()))
}

fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before a reply"));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).ok_or_else(|| invalid("empty reply line"))?;
    let number = || rest.parse::<i64>().map_err(|_| invalid(&format!("bad length or integer in {line:?}")));
    match kind {
        "+" => Ok(Reply::Status(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Int(number()?)),
        "$" => match usize::try_from(number()?) {
            Err(_) => Ok(Reply::Bulk(None)),
            Ok(len) => {
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body)?;
                body.truncate(len);
                Ok(Reply::Bulk(Some(String::from_utf8_lossy(&body).into_owned())))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Ok(Reply::Array(None)),
            Ok(len) => (0..len).map(|_| read_reply(reader)).collect::<Result<_, _>>().map(|v| Reply::Array(Some(v))),
        },
        _ => Err(invalid(&format!("unexpected reply {line:?}"))),
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &str) -> Reply {
        read_reply(&mut BufReader::new(bytes.as_bytes())).unwrap()
    }

    #[test]
    fn every_reply_kind_is_parsed() {
        assert_eq!(parse("+OK\r\n"), Reply::Status("OK".into()));
        assert_eq!(parse("-ERR no\r\n"), Reply::Error("ERR no".into()));
        assert_eq!(parse(":-3\r\n"), Reply::Int(-3));
        assert_eq!(parse("$-1\r\n"), Reply::Bulk(None));
        assert_eq!(parse("$4\r\na\r\nb\r\n"), Reply::Bulk(Some("a\r\nb".into())));
        assert_eq!(parse("*-1\r\n"), Reply::Array(None));
        let nested = parse("*2\r\n$1\r\nx\r\n*1\r\n:7\r\n");
        assert_eq!(nested.items().len(), 2);
        assert_eq!(nested.items()[0].text(), Some("x"));
        assert_eq!(nested.items()[1].items(), &[Reply::Int(7)]);
    }

    #[test]
    fn truncated_or_foreign_replies_are_errors() {
        assert!(read_reply(&mut BufReader::new("".as_bytes())).is_err());
        assert!(read_reply(&mut BufReader::new("HTTP/1.1 400\r\n".as_bytes())).is_err());
        assert!(read_reply(&mut BufReader::new("$5\r\nab".as_bytes())).is_err());
        assert!(read_reply(&mut BufReader::new("*x\r\n".as_bytes())).is_err());
    }
}

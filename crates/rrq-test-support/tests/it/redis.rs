use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rrq_test_support::TestRedis;
use rrq_test_support::resp::{self, Reply};

/// Whether the server on `port` answers a PING within `within`.
fn answers(port: u16, within: Duration) -> bool {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("a frozen server still accepts connections");
    conn.set_read_timeout(Some(within)).unwrap();
    conn.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 16];
    matches!(conn.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// `freeze` returns only once the server is stopped, so the very next
/// command goes unanswered; `thaw` returns once it runs again, and the
/// command left waiting is answered then.
#[test]
fn a_frozen_server_answers_nothing_until_it_is_thawed() {
    let redis = TestRedis::private();
    for _ in 0..5 {
        redis.freeze();
        assert!(!answers(redis.port(), Duration::from_millis(300)), "a frozen server answered");
        redis.thaw();
        assert_eq!(resp::call(redis.port(), &["PING"]).unwrap(), Reply::Status("PONG".into()));
    }
}

//! Listen addresses: how they are written in a config, which ones a config takes, and when
//! two of them clash.

use std::net::SocketAddr;

/// Whether two listen addresses take the same port: the same port on the same address, or on
/// any address when either is the unspecified one. Port 0 (any free port) takes none.
pub fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Parses `host:port`, `:port` (all interfaces) or `localhost:port`.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let with_host = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else if let Some(rest) = s.strip_prefix("localhost:") {
        format!("127.0.0.1:{rest}")
    } else {
        s.to_string()
    };
    with_host
        .parse()
        .map_err(|_| format!("invalid listen address {s:?} (expected host:port)"))
}

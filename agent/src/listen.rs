//! Listen addresses as Cilium and Hubble take them: `IP:PORT`,
//! `[IPv6]:PORT`, or `:PORT` for every address (`--metrics-listen :9965`,
//! `--grpc-listen :4244`).

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid address {0:?} (want IP:PORT, [IPv6]:PORT or :PORT)")]
pub struct BadAddress(pub String);

/// `:PORT` binds every address, IPv6 and IPv4 alike.
pub fn parse_listen(addr: &str) -> Result<SocketAddr, BadAddress> {
    let full = match addr.strip_prefix(':') {
        Some(port) => format!("[::]:{port}"),
        None => addr.to_owned(),
    };
    full.parse().map_err(|_| BadAddress(addr.to_owned()))
}

/// Binds `addr`. `[::]` (what `:PORT` means) falls back to `0.0.0.0` on a
/// node without IPv6 (`ipv6.disable=1`), as Go's listeners do for Cilium.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port())).await
        }
        result => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_means_every_address() {
        assert_eq!(parse_listen(":9965").unwrap(), "[::]:9965".parse().unwrap());
    }

    #[test]
    fn addresses_of_either_family_are_taken_as_written() {
        assert_eq!(parse_listen("127.0.0.1:4244").unwrap().port(), 4244);
        assert!(parse_listen("[::1]:1").unwrap().ip().is_loopback());
    }

    #[test]
    fn names_and_missing_ports_are_refused() {
        for bad in ["4244", "localhost:4244", "1.2.3.4", "", ":", ":http"] {
            assert_eq!(parse_listen(bad), Err(BadAddress(bad.to_owned())), "{bad}");
        }
    }
}

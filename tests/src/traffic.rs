//! Traffic between a test's pods, from sockets opened inside their
//! namespaces. Sizes are exact so the tests know what to expect.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use crate::netns::Netns;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection from `client` to `server_addr` (a listener in `server`):
/// the client sends `up` bytes and half-closes, the server answers with
/// `down` bytes and closes. Returns the client's port.
pub fn tcp_transfer(client: &Netns, server: &Netns, server_addr: SocketAddr, up: usize, down: usize) -> u16 {
    let listener = server.enter(move || TcpListener::bind(server_addr).expect("bind"));
    let server_thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut received = Vec::new();
        s.read_to_end(&mut received).expect("server read");
        assert_eq!(received.len(), up);
        s.write_all(&vec![0x5a; down]).expect("server write");
        s.shutdown(Shutdown::Write).unwrap();
        // Wait for the client's close so the FIN exchange completes.
        let _ = s.read(&mut [0; 1]);
    });
    let mut stream = client.enter(move || TcpStream::connect_timeout(&server_addr, TIMEOUT).expect("connect"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let port = stream.local_addr().unwrap().port();
    stream.write_all(&vec![0xa5; up]).expect("client write");
    stream.shutdown(Shutdown::Write).unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).expect("client read");
    assert_eq!(received.len(), down);
    drop(stream);
    server_thread.join().expect("server");
    port
}

/// `count` datagrams of `size` bytes from `client`, each echoed by the
/// server. Returns the client's port.
pub fn udp_echo(client: &Netns, server: &Netns, server_addr: SocketAddr, count: usize, size: usize) -> u16 {
    let server_socket = server.enter(move || UdpSocket::bind(server_addr).expect("bind"));
    server_socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let bind_any: SocketAddr = if server_addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .unwrap();
    let client_socket = client.enter(move || UdpSocket::bind(bind_any).expect("bind"));
    client_socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let payload = vec![0x42; size];
    let mut buf = vec![0; size + 1];
    for _ in 0..count {
        client_socket.send_to(&payload, server_addr).expect("send");
        let (n, from) = server_socket.recv_from(&mut buf).expect("server recv");
        assert_eq!(n, size);
        server_socket.send_to(&buf[..n], from).expect("echo");
        let n = client_socket.recv(&mut buf).expect("client recv");
        assert_eq!(n, size);
    }
    client_socket.local_addr().unwrap().port()
}

/// `ping -c count` from a namespace; panics unless every reply came back.
pub fn ping(from: &Netns, to: &str, count: u32) {
    let out = from
        .command("ping")
        .args(["-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "2", to])
        .output()
        .expect("ping");
    assert!(
        out.status.success(),
        "ping {to}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Sends `count` UDP datagrams from `from` to `to`, where nobody listens:
/// the kernel drops them (NO_SOCKET) in the receiving namespace.
pub fn udp_to_closed_port(from: &Netns, to: SocketAddr, count: usize) {
    from.enter(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..count {
            s.send_to(b"nobody", to).unwrap();
        }
    });
}

//! Traffic for the scenarios, sent from inside a pod's namespace.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use hubcap_tests::netns::Netns;

/// UDP payload that makes a 60-byte frame (64 on the wire with the FCS).
pub const SMALL_PAYLOAD: usize = 18;
const BATCH: usize = 64;

/// Sends datagrams with `sendmmsg`, batches of 64, each to the next
/// destination in `targets` (cycling), from one socket per entry of
/// `source_ports` in turn (0: a port the kernel picks), until `duration`
/// passes or `max_packets` are sent. Returns packets sent and the time it
/// took.
pub fn blast(
    from: &Netns,
    targets: Vec<SocketAddrV4>,
    source_ports: &[u16],
    payload: usize,
    duration: Duration,
    max_packets: u64,
) -> (u64, Duration) {
    let source_ports = source_ports.to_vec();
    from.enter(move || {
        pin_to_cpu(0);
        let socks: Vec<UdpSocket> = source_ports
            .iter()
            .map(|&port| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind"))
            .collect();
        let data = vec![0x5au8; payload];
        let mut addrs: Vec<libc::sockaddr_in> = targets
            .iter()
            .map(|t| libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: t.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*t.ip()).to_be(),
                },
                sin_zero: [0; 8],
            })
            .collect();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut _,
            iov_len: data.len(),
        };
        // SAFETY: zeroed mmsghdr is a valid empty header.
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut next_target = 0usize;
        let mut next_socket = 0usize;
        while sent < max_packets && start.elapsed() < duration {
            // A batch never crosses the end of `targets`, so every (source
            // socket, target) pair is sent exactly once per lap.
            let n = BATCH.min((max_packets - sent) as usize).min(addrs.len() - next_target);
            for (i, m) in msgs.iter_mut().take(n).enumerate() {
                m.msg_hdr.msg_name = (&mut addrs[next_target + i] as *mut libc::sockaddr_in).cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            let fd = socks[next_socket].as_raw_fd();
            // SAFETY: msgs[..n] point at live addresses and the payload.
            let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
            if r > 0 {
                sent += r as u64;
                next_target += r as usize;
                if next_target == addrs.len() {
                    next_target = 0;
                    next_socket = (next_socket + 1) % socks.len();
                }
            }
        }
        (sent, start.elapsed())
    })
}

/// Keeps the sending thread (and the softirq work it triggers, which runs
/// on the same CPU) on one CPU, leaving the other to the capture process,
/// so runs are comparable.
fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// `count` ports on `ip` from `first` up, past DNS's: packets to port 53 would
/// be handed to hubcap's DNS path as (malformed) DNS, which is not what the
/// flow scenarios measure.
pub fn ports(ip: Ipv4Addr, first: u16, count: u16) -> Vec<SocketAddrV4> {
    (first..=u16::MAX)
        .filter(|&port| port != agent_common::DNS_PORT)
        .take(usize::from(count))
        .map(|port| SocketAddrV4::new(ip, port))
        .collect()
}

/// UDP sockets bound on `targets` in `ns` that never read: the datagrams
/// are delivered (and dropped at the full socket) without ICMP errors.
pub fn sinks(ns: &Netns, targets: &[SocketAddrV4]) -> Vec<UdpSocket> {
    let targets = targets.to_vec();
    ns.enter(move || targets.iter().map(|t| UdpSocket::bind(t).expect("bind sink")).collect())
}

/// Raises the open-file limit as far as allowed (to the hard limit; higher
/// only with CAP_SYS_RESOURCE): a scenario holds thousands of sockets.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let wanted = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Receivers that read everything sent to them, so that no datagram is
/// dropped (a full socket buffer is a drop, which hubcap would report).
pub struct Drain {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Drain {
    /// Starts reading `sockets` on a thread pinned to CPU 1 (the sender
    /// keeps CPU 0).
    pub fn start(sockets: Vec<UdpSocket>) -> Drain {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            pin_to_cpu(1);
            for s in &sockets {
                s.set_nonblocking(true).expect("nonblocking");
            }
            let mut buf = [0u8; 2048];
            let mut received = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let mut idle = true;
                for s in &sockets {
                    while s.recv(&mut buf).is_ok() {
                        received += 1;
                        idle = false;
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            received
        });
        Drain {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops reading; returns how many datagrams were read.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

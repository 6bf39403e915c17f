//! Raw frames a parser must survive: non-IP, truncated and malformed IP
//! headers, sent from a pod through a real veth. hubcap keeps running,
//! counts each kind, and still accounts the good traffic exactly.

use std::net::SocketAddr;

use hubcap_tests::{output, require_root, topology::Node, traffic::udp_echo};

/// Sends raw Ethernet frames out of `eth0` in the pod's namespace.
fn send_raw(node: &Node, frames: Vec<Vec<u8>>) {
    node.pods[0].ns.enter(move || {
        // SAFETY: plain socket calls on a local fd; buffers outlive them.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket");
            let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            for frame in &frames {
                let n = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n, frame.len() as isize, "sendto");
            }
            libc::close(fd);
        }
    });
}

fn frame(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x98];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn counter(stderr: &[String], name: &str) -> u64 {
    let line = stderr.iter().find(|l| l.contains(" stopped ")).expect("stop summary");
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .expect(name);
    value.parse().expect("number")
}

#[test]
fn malformed_frames_are_counted_and_harmless() {
    require_root();
    // One pod: the bad frames cross exactly one captured hook (with two,
    // the bridge would flood them to the other pod's veth as well).
    let node = Node::new(1);
    let agent = node.capture(&[]);
    node.up();

    let mut ipv4_bad_version = vec![0x65, 0, 0, 40];
    ipv4_bad_version.resize(40, 0);
    let mut ipv4_bad_ihl = vec![0x43, 0, 0, 40];
    ipv4_bad_ihl.resize(40, 0);
    let frames = vec![
        frame(0x88cc, &[0; 46]),          // LLDP: not IP
        frame(0x0800, &[0x45, 0, 0]),     // IPv4 header cut after 3 bytes
        frame(0x86dd, &[0x60; 10]),       // IPv6 header cut
        frame(0x0800, &ipv4_bad_version), // version 6 in an IPv4 frame
        frame(0x0800, &ipv4_bad_ihl),     // IHL 3
        // A VLAN tag with a cut IPv4 header behind it. The receive path moves
        // the tag out of the packet before tc runs, so tc sees 4 bytes less.
        frame(0x8100, &[0, 1, 0x08, 0x00, 0x45, 0]),
    ];
    send_raw(&node, frames);
    let p = &node.pods[..];
    udp_echo(
        &p[0].ns,
        &node.ns,
        SocketAddr::new(node.bridge_v4().into(), 4000),
        10,
        200,
    );

    let counters = node.settled_counters(&p[0].host_if);
    let finished = agent.stop();
    assert!(finished.status.success());
    for name in ["non_ip_packets", "truncated_packets", "malformed_packets"] {
        eprintln!("{name} = {}", counter(&finished.stderr, name));
    }
    assert_eq!(counter(&finished.stderr, "non_ip_packets"), 1);
    assert_eq!(counter(&finished.stderr, "truncated_packets"), 3);
    assert_eq!(counter(&finished.stderr, "malformed_packets"), 2);
    // Good traffic is still exact: flows plus the six bad frames as tc saw
    // them (14 + 46, 14 + 3, 14 + 10, 14 + 40, 14 + 40, 14 + 2 bytes, the
    // last without its 4-byte tag) are what eth0 sent.
    let sums = output::sums(&output::parse(&finished.stdout).records);
    let (packets, bytes) = sums[&(p[0].host_if.clone(), "FROM_ENDPOINT".to_owned())];
    assert_eq!(
        (packets + 6, bytes + 60 + 17 + 24 + 54 + 54 + 16 + 4),
        (counters.rx_packets, counters.rx_bytes)
    );
}

//! A node in a namespace with a bridge and pods, like a Kubernetes node:
//! each pod is a namespace whose `eth0` is a veth whose host side
//! (`hcv<id><n>`) is a port of the node's bridge.
//!
//! The topology is built quiet, so that every packet on a host-side veth is
//! one the test can explain: static neighbour entries (no ARP, which is not
//! IP and so in no flow), no router solicitations, no IPv6 on the node side.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{netns::Netns, unique_id};

pub struct Pod {
    pub ns: Netns,
    /// The host-side veth, in the node namespace.
    pub host_if: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub mac: String,
}

/// Interface counters as the kernel keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

pub struct Node {
    pub id: String,
    /// The K of 10.77.K.0/24.
    pub subnet: u8,
    pub bridge: String,
    pub pods: Vec<Pod>,
    // Dropped last: deleting the node namespace removes the bridge and veths.
    pub ns: Netns,
}

/// Each node gets its own subnet (10.77.K.0/24, fd77:K::/64), so that
/// tests running at once never mistake each other's traffic: the drop
/// tracepoint, for one, sees every namespace on the machine.
fn next_subnet() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) % 250
}

impl Node {
    /// A node with `pods` pods; host-side veths stay down until [`Node::up`].
    pub fn new(pods: usize) -> Node {
        let id = unique_id();
        let ns = Netns::new(format!("hubcap-{id}-node"));
        // Bridge ports carry pod IPv6 at L2; the node itself needs none.
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        let bridge = format!("hcbr{id}");
        ns.ip(&["link", "add", &bridge, "type", "bridge"]);
        let subnet = next_subnet();
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", Ipv4Addr::new(10, 77, subnet, 1)),
            "dev",
            &bridge,
        ]);
        ns.ip(&["link", "set", &bridge, "up"]);
        let mut node = Node {
            id,
            subnet,
            bridge,
            pods: Vec::new(),
            ns,
        };
        for n in 1..=pods {
            node.add_pod(n);
        }
        node.set_static_neighbours();
        node
    }

    /// The node's address on its bridge (the pods' gateway).
    pub fn bridge_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 1)
    }

    /// The `--interface` pattern that matches this node's pod veths only.
    pub fn pattern(&self) -> String {
        format!("hcv{}*", self.id)
    }

    /// Adds pod `n` to a running node, neighbours included.
    pub fn add_pod_now(&mut self, n: usize) {
        self.add_pod(n);
        self.set_static_neighbours();
    }

    fn add_pod(&mut self, n: usize) {
        let ns = Netns::new(format!("hubcap-{}-p{n}", self.id));
        for key in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{key}.router_solicitations"), "0");
            ns.sysctl(&format!("net.ipv6.conf.{key}.accept_ra"), "0");
            // Unsolicited MLD reports are repeated up to a second apart by
            // default; make them quick so they are over before a test ends.
            ns.sysctl(&format!("net.ipv6.conf.{key}.mldv2_unsolicited_report_interval"), "10");
            ns.sysctl(&format!("net.ipv6.conf.{key}.mldv1_unsolicited_report_interval"), "10");
        }
        let host_if = format!("hcv{}{n}", self.id);
        self.ns.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.ns.ip(&["link", "set", &host_if, "master", &self.bridge]);
        let ipv4 = Ipv4Addr::new(10, 77, self.subnet, 10 + n as u8);
        let ipv6: Ipv6Addr = format!("fd77:{}::{}", self.subnet, 10 + n).parse().unwrap();
        ns.ip(&["addr", "add", &format!("{ipv4}/24"), "dev", "eth0"]);
        ns.ip(&["addr", "add", &format!("{ipv6}/64"), "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        let mac = link_mac(&ns, "eth0");
        self.pods.push(Pod {
            ns,
            host_if,
            ipv4,
            ipv6,
            mac,
        });
    }

    fn set_static_neighbours(&self) {
        let bridge_mac = link_mac(&self.ns, &self.bridge);
        for pod in &self.pods {
            for peer in self.pods.iter().filter(|p| p.ipv4 != pod.ipv4) {
                for addr in [peer.ipv4.to_string(), peer.ipv6.to_string()] {
                    pod.ns.ip(&[
                        "neigh",
                        "replace",
                        &addr,
                        "lladdr",
                        &peer.mac,
                        "dev",
                        "eth0",
                        "nud",
                        "permanent",
                    ]);
                }
            }
            pod.ns.ip(&[
                "neigh",
                "replace",
                &self.bridge_v4().to_string(),
                "lladdr",
                &bridge_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
            self.ns.ip(&[
                "neigh",
                "replace",
                &pod.ipv4.to_string(),
                "lladdr",
                &pod.mac,
                "dev",
                &self.bridge,
                "nud",
                "permanent",
            ]);
        }
    }

    /// Starts hubcap on this node's pod veths (plus `extra` arguments) and
    /// waits until it is attached to every one of them.
    pub fn capture(&self, extra: &[&str]) -> crate::agent::Agent {
        let pattern = self.pattern();
        let mut args = vec!["--interface", pattern.as_str()];
        args.extend_from_slice(extra);
        let agent = crate::agent::Agent::start(&self.ns, &args);
        agent.wait_for_logs("attached", self.pods.len(), std::time::Duration::from_secs(5));
        agent
    }

    /// Arguments for tests that read metrics once every flow has ended:
    /// metrics on 127.0.0.1:9965, flows reported and ended after 1 s.
    pub const METRICS_AND_QUICK_ENDS: [&'static str; 6] = [
        "--metrics-listen",
        "127.0.0.1:9965",
        "--report-interval",
        "1",
        "--idle-timeout",
        "1",
    ];

    /// Waits until every flow has ended (`hubcap_flow_table_directions 0`;
    /// the agent must serve metrics on 127.0.0.1:9965).
    pub fn wait_for_flows_to_end(&self) {
        // The gauge is refreshed twice a second: let it see the flows of
        // traffic just sent (they stay at least the 1 s idle timeout).
        std::thread::sleep(std::time::Duration::from_millis(600));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = crate::agent::scrape_metrics(&self.ns, "127.0.0.1:9965");
            if text.lines().any(|l| l == "hubcap_flow_table_directions 0") {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "flows never ended");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Brings the host-side veths up: from here on packets flow.
    pub fn up(&self) {
        for pod in &self.pods {
            self.ns.ip(&["link", "set", &pod.host_if, "up"]);
        }
        // Wait for the carrier so traffic does not race the link.
        for pod in &self.pods {
            for _ in 0..100 {
                let out = pod.ns.ip(&["-j", "link", "show", "eth0"]);
                if String::from_utf8_lossy(&out.stdout).contains("LOWER_UP") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    pub fn counters(&self, ifname: &str) -> Counters {
        let out = self.ns.ip(&["-s", "-j", "link", "show", "dev", ifname]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        let s = &v[0]["stats64"];
        let n = |x: &serde_json::Value| x.as_u64().expect("counter");
        Counters {
            rx_packets: n(&s["rx"]["packets"]),
            rx_bytes: n(&s["rx"]["bytes"]),
            tx_packets: n(&s["tx"]["packets"]),
            tx_bytes: n(&s["tx"]["bytes"]),
        }
    }

    /// Every pod veth's settled counters, by name.
    pub fn settled_pod_counters(&self) -> Vec<(String, Counters)> {
        self.pods
            .iter()
            .map(|p| (p.host_if.clone(), self.settled_counters(&p.host_if)))
            .collect()
    }

    /// Counters once they have held still for a second (nothing in flight).
    pub fn settled_counters(&self, ifname: &str) -> Counters {
        let mut last = self.counters(ifname);
        let mut still = 0;
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = self.counters(ifname);
            still = if now == last { still + 1 } else { 0 };
            if still == 5 {
                return now;
            }
            last = now;
        }
        panic!("counters of {ifname} never settled");
    }
}

fn link_mac(ns: &Netns, ifname: &str) -> String {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    v[0]["address"].as_str().expect("address").to_owned()
}

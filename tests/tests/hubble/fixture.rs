//! One captured run that Hubble's own tools read: three pods on a bridge,
//! real TCP, UDP (v4 and v6), ping and UDP into a closed port (real drops),
//! while tcpdump captures on the pods' veths and API clients come and go
//! over loopback TCP. hubcap writes a file, serves the Observer and Peer
//! APIs on its socket and on 127.0.0.1:4244, and a real Hubble Relay finds
//! it through the Peer service.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use hubcap_tests::{
    agent::{Agent, scrape_metrics},
    output::{self, Output, Record},
    topology::{Counters, Node},
    traffic::{ping, tcp_transfer, udp_echo, udp_to_closed_port},
    upstream::{Background, hubble, relay, tool},
};

pub const AGENT_TCP: &str = "127.0.0.1:4244";
pub const RELAY: &str = "127.0.0.1:4245";

/// Fields drop in order: the processes before the namespaces they run in.
pub struct Fixture {
    _relay: Background,
    _agent: Agent,
    pub node: Node,
    pub socket: PathBuf,
    out_dir: PathBuf,
    pub out_file: PathBuf,
    /// `/metrics` before any traffic.
    pub metrics_at_start: String,
    pub counters: Vec<Counters>,
    pub file: Output,
    pub veths: Vec<String>,
    pub ours_v4: String,
    pub ours_v6: String,
    pub node_name: String,
}

/// `hubble observe` clients that read a little and go, over loopback TCP:
/// each leaves the agent writing to a closed connection.
fn clients_come_and_go(node: &Node) {
    for _ in 0..3 {
        hubble(&node.ns, &["observe", "--server", AGENT_TCP, "--last", "20"]);
        let mut follower = node
            .ns
            .command(tool("hubble").to_str().unwrap())
            .args(["observe", "--server", AGENT_TCP, "-f"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        follower.kill().unwrap();
        follower.wait().unwrap();
    }
}

impl Fixture {
    pub fn capture() -> Fixture {
        let node = Node::new(3);
        let out_dir = std::env::temp_dir().join(format!("hubcap-hubble-{}", node.id));
        std::fs::create_dir_all(&out_dir).unwrap();
        let out_file = out_dir.join("flows.json");
        let mut args = Node::METRICS_AND_QUICK_ENDS.to_vec();
        args.extend(["--output", out_file.to_str().unwrap(), "--grpc-listen", AGENT_TCP]);
        let agent = node.capture(&args);
        let metrics_at_start = scrape_metrics(&node.ns, "127.0.0.1:9965");
        let socket = agent.grpc_socket.clone().expect("socket");
        let relay = relay(&node.ns, &format!("unix://{}", socket.display()), RELAY);

        node.up();
        // tcpdump on every veth with a tiny buffer: whatever copies it has
        // no room for are freed as drops of the capture, not of the packets.
        let tcpdumps: Vec<Background> = node
            .pods
            .iter()
            .map(|p| {
                Background::start(
                    node.ns
                        .command("tcpdump")
                        .args(["-i", &p.host_if, "-B", "32", "-w", "/dev/null"]),
                )
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let (p1, p2, p3) = (&node.pods[0], &node.pods[1], &node.pods[2]);
        tcp_transfer(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5001), 2_000_000, 10_000);
        clients_come_and_go(&node);
        udp_echo(&p1.ns, &p3.ns, SocketAddr::new(p3.ipv4.into(), 5002), 10, 100);
        udp_echo(&p2.ns, &p3.ns, SocketAddr::new(p3.ipv6.into(), 5003), 5, 200);
        ping(&p1.ns, &p3.ipv4.to_string(), 2);
        // Real drops: into a closed port in p2 (NO_SOCKET, in p2's namespace).
        udp_to_closed_port(&p1.ns, SocketAddr::new(p2.ipv4.into(), 5999), 3);
        clients_come_and_go(&node);
        drop(tcpdumps);
        let counters: Vec<_> = node.pods.iter().map(|p| node.settled_counters(&p.host_if)).collect();
        node.wait_for_flows_to_end();
        let file = output::parse(&std::fs::read_to_string(&out_file).unwrap());
        let subnet = node.subnet;
        let node_name = file.records[0].json["node_name"].as_str().unwrap().to_owned();
        Fixture {
            veths: node.pods.iter().map(|p| p.host_if.clone()).collect(),
            ours_v4: format!("10.77.{subnet}.0/24"),
            ours_v6: format!("fd77:{subnet}::/64"),
            node,
            _agent: agent,
            socket,
            _relay: relay,
            out_dir,
            out_file,
            metrics_at_start,
            counters,
            file,
            node_name,
        }
    }

    pub fn socket_server(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The file's records on this test's veths.
    pub fn on_veths(&self) -> Vec<&Record> {
        self.file
            .records
            .iter()
            .filter(|r| self.veths.contains(&r.interface))
            .collect()
    }

    /// `hubble ARGS` in the node's namespace.
    pub fn hubble(&self, args: &[&str]) -> String {
        hubble(&self.node.ns, args)
    }

    /// `hubcap observe --input-file FILE ARGS`: the server's own selection
    /// code over the file, as the reference.
    pub fn hubcap_on_file(&self, args: &[&str]) -> String {
        let out = Command::new(hubcap_tests::agent::hubcap_bin())
            .args(["observe", "--input-file", self.out_file.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.out_dir);
    }
}

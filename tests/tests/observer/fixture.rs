//! One captured run that every case reads: three pods on a bridge, real
//! TCP, UDP (v4 and v6), ping and UDP into a closed port, with hubcap
//! writing a file and serving the Observer API, and a follower subscribed
//! before the traffic.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use hubcap::proto::{
    flow::{FlowFilter, NetworkInterface, Verdict},
    observer::{GetFlowsRequest, ServerStatusRequest, observer_client::ObserverClient},
};
use hubcap_tests::{
    agent::Agent,
    grpc,
    output::{self, Output, Record},
    topology::{Counters, Node},
    traffic::{ping, tcp_transfer, udp_echo, udp_to_closed_port},
};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

pub struct Fixture {
    pub node: Node,
    /// Taken by the last case, which stops it.
    pub agent: Mutex<Option<Agent>>,
    pub socket: PathBuf,
    pub rt: Runtime,
    pub client: ObserverClient<Channel>,
    out_dir: PathBuf,
    pub out_file: PathBuf,
    /// Each pod's veth counters once the traffic had settled.
    pub counters: Vec<Counters>,
    /// The whole ring and the whole file, right after the traffic.
    pub ring: Output,
    pub file: Output,
    /// This test's records in the ring (see [`Fixture::ours`]).
    pub records: Vec<Record>,
    /// What the follower got, and the uuids the ring held when it subscribed.
    pub followed: Output,
    pub before_follow: Vec<String>,
    pub veths: Vec<String>,
    pub ours_v4: String,
    pub ours_v6: String,
    pub node_name: String,
}

pub use hubcap_tests::output::{time_ns, uuids};

pub fn request(whitelist: Vec<FlowFilter>, blacklist: Vec<FlowFilter>) -> GetFlowsRequest {
    GetFlowsRequest {
        whitelist,
        blacklist,
        ..Default::default()
    }
}

/// Follows from before the traffic, on its own thread, runtime and
/// connection, until the agent has been quiet for 8 s. Returns the uuids
/// the ring held when the follow began, and a handle to what it got.
fn start_follower(socket: PathBuf) -> (Vec<String>, std::thread::JoinHandle<Output>) {
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        let rt = grpc::runtime();
        let got = rt.block_on(async {
            let mut client = grpc::connect(&socket).await;
            // What the ring held when the follow began (the machine's other
            // drops may land at any time): read before subscribing, kept
            // only if nothing arrived meanwhile.
            let (before, mut stream) = loop {
                let seen = |c: &mut ObserverClient<_>| {
                    let mut c = c.clone();
                    async move {
                        c.server_status(ServerStatusRequest {})
                            .await
                            .unwrap()
                            .into_inner()
                            .seen_flows
                    }
                };
                let seen_before = seen(&mut client).await;
                let before = grpc::get_flows(&mut client, GetFlowsRequest::default()).await;
                let request = GetFlowsRequest {
                    follow: true,
                    ..Default::default()
                };
                let stream = client.get_flows(request).await.expect("GetFlows follow").into_inner();
                if seen(&mut client).await == seen_before {
                    break (before, stream);
                }
            };
            subscribed_tx.send(grpc::parse(&before).records).unwrap();
            let mut got = Vec::new();
            while let Ok(message) = tokio::time::timeout(Duration::from_secs(8), stream.message()).await {
                match message.expect("follow stream") {
                    Some(r) => got.push(r),
                    None => break,
                }
            }
            got
        });
        grpc::parse(&got)
    });
    let before = subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("follower subscribed");
    (uuids(&before), follower)
}

impl Fixture {
    pub fn capture() -> Fixture {
        let node = Node::new(3);
        let out_dir = std::env::temp_dir().join(format!("hubcap-observer-{}", node.id));
        std::fs::create_dir_all(&out_dir).unwrap();
        let out_file = out_dir.join("flows.json");
        let mut args = Node::METRICS_AND_QUICK_ENDS.to_vec();
        args.extend(["--output", out_file.to_str().unwrap()]);
        let agent = node.capture(&args);
        let socket = agent.grpc_socket.clone().expect("socket");
        let rt = grpc::runtime();
        let client = rt.block_on(grpc::connect(&socket));
        let (before_follow, follower) = start_follower(socket.clone());

        node.up();
        let (p1, p2, p3) = (&node.pods[0], &node.pods[1], &node.pods[2]);
        tcp_transfer(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5001), 50_000, 10_000);
        udp_echo(&p1.ns, &p3.ns, SocketAddr::new(p3.ipv4.into(), 5002), 10, 100);
        udp_echo(&p2.ns, &p3.ns, SocketAddr::new(p3.ipv6.into(), 5003), 5, 200);
        ping(&p1.ns, &p3.ipv4.to_string(), 2);
        // Real drops: into a closed port in p2 (NO_SOCKET, in p2's namespace).
        udp_to_closed_port(&p1.ns, SocketAddr::new(p2.ipv4.into(), 5999), 3);
        let counters: Vec<_> = node.pods.iter().map(|p| node.settled_counters(&p.host_if)).collect();
        node.wait_for_flows_to_end();

        let mut client_for_ring = client.clone();
        let ring = grpc::parse(&rt.block_on(grpc::get_flows(&mut client_for_ring, GetFlowsRequest::default())));
        let file = output::parse(&std::fs::read_to_string(&out_file).unwrap());
        let followed = follower.join().expect("follower");
        let subnet = node.subnet;
        let mut fixture = Fixture {
            veths: node.pods.iter().map(|p| p.host_if.clone()).collect(),
            ours_v4: format!("10.77.{subnet}.0/24"),
            ours_v6: format!("fd77:{subnet}::/64"),
            node,
            agent: Mutex::new(Some(agent)),
            socket,
            rt,
            client,
            out_dir,
            out_file,
            counters,
            ring,
            file,
            records: Vec::new(),
            followed,
            before_follow,
            node_name: String::new(),
        };
        fixture.records = fixture
            .ring
            .records
            .iter()
            .filter(|r| fixture.ours(r))
            .cloned()
            .collect();
        assert!(fixture.records.len() > 20, "{} flows", fixture.records.len());
        fixture.node_name = fixture.records[0].json["node_name"].as_str().unwrap().to_owned();
        fixture
    }

    /// This test's flows: the drop tracepoint sees the whole machine, so
    /// they are those on its veths, and drops from its subnets.
    pub fn ours(&self, r: &Record) -> bool {
        let subnet = self.node.subnet;
        let ip: IpAddr = r.src.parse().expect("source IP");
        let from_subnet = match ip {
            IpAddr::V4(v4) => v4.octets()[..3] == [10, 77, subnet],
            IpAddr::V6(v6) => v6.segments()[..4] == [0xfd77, u16::from(subnet), 0, 0],
        };
        self.veths.contains(&r.interface) || (r.verdict == "DROPPED" && from_subnet)
    }

    /// A server-side whitelist for [`Fixture::ours`].
    pub fn ours_only(&self) -> Vec<FlowFilter> {
        vec![
            FlowFilter {
                interface: self
                    .veths
                    .iter()
                    .map(|name| NetworkInterface {
                        index: 0,
                        name: name.clone(),
                    })
                    .collect(),
                ..Default::default()
            },
            FlowFilter {
                source_ip: vec![self.ours_v4.clone(), self.ours_v6.clone()],
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            },
        ]
    }

    /// The uuids of this test's flows that a GetFlows call returns.
    pub fn query(&self, request: GetFlowsRequest) -> Vec<String> {
        let mut client = self.client.clone();
        let got = grpc::parse(&self.rt.block_on(grpc::get_flows(&mut client, request))).records;
        uuids(got.iter().filter(|r| self.ours(r)))
    }

    pub fn server(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.out_dir);
    }
}

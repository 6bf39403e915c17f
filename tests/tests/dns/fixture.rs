//! One captured run: dnsmasq in pod 2 (a `test.` zone with A, AAAA, CNAME
//! and a TXT too big for 512 bytes; other names refused), `dig` in pod 1
//! asking one question per case, hubcap on both pods' veths.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use hubcap::proto::{flow::FlowFilter, observer::GetFlowsRequest};
use hubcap_tests::{
    dns::{self, Dig, dig},
    grpc,
    output::{self, Output},
    topology::Node,
    upstream::{Background, hubble},
};
use serde_json::Value;

pub struct DnsRun {
    /// Kept until the run is dropped: its namespaces go with it.
    _node: Node,
    pub digs: Vec<Dig>,
    /// The JSON log's records.
    pub file: Output,
    /// `hubble observe` outputs, by the flags given.
    pub observed: Vec<(Vec<String>, String)>,
    /// GetFlows with Hubble's `dns_query` filter (`alias`), straight over
    /// the API: the hubble CLI of this version has no flag for it.
    pub dns_query_alias: Output,
    pub stderr: Vec<String>,
    /// The metrics, scraped before the agent stopped.
    pub metrics: String,
    /// The flow log configured with `protocol: [dns]`.
    pub dns_log: Output,
    /// What getaddrinfo returned (its addresses, sorted), and what `host`
    /// printed.
    pub gai: String,
    pub host: String,
    /// The node's bridge address: never in an answer.
    pub bridge: IpAddr,
    pub server_v4: IpAddr,
    pub server_v6: IpAddr,
    _dnsmasq: Background,
    _unbound: Background,
    dir: PathBuf,
}

/// The questions, in the order asked: (name, type, extra dig flags, server).
pub const WEB_A: (&str, &str) = ("web.test.", "A");
pub const WEB_AAAA: (&str, &str) = ("web.test.", "AAAA");
pub const ALIAS: (&str, &str) = ("alias.test.", "A");
pub const MISSING: (&str, &str) = ("missing.test.", "A");
pub const OUTSIDE: (&str, &str) = ("example.com.", "A");
pub const BIG_TXT: (&str, &str) = ("big.test.", "TXT");
pub const OVER_TCP: (&str, &str) = ("tcp.test.", "A");
pub const OVER_V6: (&str, &str) = ("v6.test.", "A");
pub const UNANSWERED: (&str, &str) = ("quiet.test.", "A");
/// Forwarded by dnsmasq to unbound, whose upstream is dead: SERVFAIL.
pub const FAILING: (&str, &str) = ("x.fail.example.", "A");
/// The big TXT again, with EDNS's 1232-byte buffer: one whole UDP answer
/// over 512 bytes.
pub const EDNS_TXT: (&str, &str) = ("edns.test.", "TXT");
/// The server pod's own addresses, for flows that carry the name: IPv4
/// with a 60 s TTL, IPv6 with a 2 s one.
pub const PEER: (&str, &str) = ("peer.test.", "A");
pub const SHORT: (&str, &str) = ("short.test.", "AAAA");
/// Asked by the system's own resolvers: glibc's getaddrinfo (A and AAAA at
/// once, from one socket) and `host` (A, AAAA and MX).
pub const GAI: &str = "gai.test.";
pub const HOST: &str = "host.test.";

/// The hubble observe flag sets the cases judge.
pub const OBSERVE: &[&[&str]] = &[
    // Everything, first and again last: records written in between (a
    // flow's report) are in the second only.
    &[],
    &["--protocol", "dns"],
    &["--type", "l7"],
    &["--protocol", "dns", "-o", "compact"],
    &["--to-fqdn", "peer.test"],
    &["--from-fqdn", "peer.test"],
    &["--fqdn", "*.test"],
    &["-o", "jsonpb"],
];

/// Where unbound listens in the server pod (its loopback: dnsmasq's
/// upstream, never on a veth).
const UNBOUND_PORT: u16 = 5300;

/// Where the run serves its metrics (in the node's namespace).
const METRICS: &str = "127.0.0.1:9965";

impl DnsRun {
    pub fn capture() -> DnsRun {
        let node = Node::new(2);
        let dir = std::env::temp_dir().join(format!("hubcap-dns-{}", node.id));
        std::fs::create_dir_all(&dir).unwrap();
        let (client, server) = (&node.pods[0], &node.pods[1]);
        let (v4, v6) = (IpAddr::from(server.ipv4), IpAddr::from(server.ipv6));
        let hosts = format!(
            "192.0.2.10 web.test\n2001:db8::10 web.test\n192.0.2.11 tcp.test\n192.0.2.12 v6.test\n{v4} peer.test\n192.0.2.13 gai.test\n2001:db8::13 gai.test\n192.0.2.14 host.test\n"
        );
        let txt: Vec<String> = (0..4)
            .map(|i| format!("\"{}\"", char::from(b'a' + i).to_string().repeat(200)))
            .collect();
        let unbound = dns::unbound_with_dead_upstream(&server.ns, UNBOUND_PORT, &dir);
        let dnsmasq = dns::dnsmasq(
            &server.ns,
            &[v4, v6],
            &dir,
            &hosts,
            &[
                "--cname=alias.test,web.test".to_owned(),
                format!("--txt-record=big.test,{}", txt.join(",")),
                format!("--txt-record=edns.test,{}", txt.join(",")),
                format!("--server=/fail.example/127.0.0.1#{UNBOUND_PORT}"),
                format!("--host-record=short.test,{v6},2"),
            ],
        );
        let log = dir.join("flows.json");
        let dns_log = dir.join("dns.json");
        let config = dir.join("flow-logs.yaml");
        std::fs::write(
            &config,
            format!(
                "flowLogs:\n  - name: dns\n    filePath: {}\n    includeFilters:\n      - protocol: [dns]\n  - name: tuples\n    filePath: {}\n    format: vnet\n",
                dns_log.display(),
                dir.join("tuples.json").display()
            ),
        )
        .unwrap();
        let agent = node.capture(&[
            "--output",
            log.to_str().unwrap(),
            "--flow-logs-config",
            config.to_str().unwrap(),
            "--metrics-listen",
            METRICS,
        ]);
        node.up();
        // dnsmasq binds once its addresses are usable.
        std::thread::sleep(Duration::from_millis(500));
        let bridge = IpAddr::from(node.bridge_v4());
        let asks: [((&str, &str), &[&str], IpAddr); 11] = [
            (WEB_A, &[], v4),
            (WEB_AAAA, &[], v4),
            (ALIAS, &[], v4),
            (MISSING, &[], v4),
            (OUTSIDE, &[], v4),
            // Without EDNS the answer is cut at 512 bytes and dig asks
            // again over TCP.
            (BIG_TXT, &["+noedns"], v4),
            (OVER_TCP, &["+tcp"], v4),
            (FAILING, &[], v4),
            (EDNS_TXT, &["+edns=0", "+bufsize=1232", "+ignore"], v4),
            (OVER_V6, &[], v6),
            // Nothing listens on the node's address: no answer.
            (UNANSWERED, &[], bridge),
        ];
        let digs = asks
            .iter()
            .map(|&((name, qtype), flags, at)| dig(&client.ns, name, qtype, flags, at))
            .collect();
        // The system's resolvers, through the pod's resolv.conf.
        let resolver = dns::Resolver::new(&client.ns, v4);
        let gai = client
            .ns
            .command("python3")
            .args([
                "-c",
                "import socket; print(sorted({a[4][0] for a in socket.getaddrinfo('gai.test', 80)}))",
            ])
            .output()
            .expect("python3");
        let gai = String::from_utf8_lossy(&gai.stdout).trim().to_owned();
        let host = client.ns.command("host").arg("host.test").output().expect("host");
        let host = String::from_utf8_lossy(&host.stdout).into_owned();
        drop(resolver);
        // Flows to answered addresses (the IPv6 one within and after its
        // 2 s TTL), and to one never answered.
        let mut digs: Vec<Dig> = digs;
        // Names are per asking address: the IPv6 flow's name is asked
        // over IPv6.
        for ((name, qtype), at) in [(PEER, v4), (SHORT, v6)] {
            digs.push(dig(&client.ns, name, qtype, &[], at));
        }
        ping(&client.ns, &v4.to_string());
        ping(&client.ns, &bridge.to_string());
        ping(&client.ns, &v6.to_string());
        std::thread::sleep(Duration::from_millis(2500));
        ping(&client.ns, &v6.to_string());
        std::thread::sleep(Duration::from_millis(400));
        let metrics = hubcap_tests::agent::scrape_metrics(&node.ns, METRICS);
        let socket = format!("unix://{}", agent.grpc_socket.as_ref().unwrap().display());
        let observed = OBSERVE
            .iter()
            .map(|flags| {
                let mut args = vec!["observe", "--server", socket.as_str(), "--all"];
                args.extend_from_slice(flags);
                if !flags.contains(&"-o") {
                    args.extend(["-o", "jsonpb"]);
                }
                (flags.iter().map(|s| s.to_string()).collect(), hubble(&node.ns, &args))
            })
            .collect();
        let dns_query_alias = {
            let socket = agent.grpc_socket.clone().unwrap();
            let request = GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    dns_query: vec!["alias".into()],
                    ..Default::default()
                }],
                number: 1000,
                ..Default::default()
            };
            let responses = grpc::runtime().block_on(async {
                let mut client = grpc::connect(&socket).await;
                grpc::get_flows(&mut client, request).await
            });
            grpc::parse(&responses)
        };
        let finished = agent.stop();
        assert!(finished.status.success(), "{:?}", finished.stderr);
        let file = output::parse(&std::fs::read_to_string(&log).unwrap());
        let dns_log = output::parse(&std::fs::read_to_string(&dns_log).unwrap());
        DnsRun {
            _node: node,
            digs,
            file,
            observed,
            dns_query_alias,
            stderr: finished.stderr,
            metrics,
            dns_log,
            bridge,
            gai,
            host,
            server_v4: v4,
            server_v6: v6,
            _dnsmasq: dnsmasq,
            _unbound: unbound,
            dir,
        }
    }

    pub fn dig(&self, (name, qtype): (&str, &str)) -> &Dig {
        self.digs
            .iter()
            .find(|d| d.name == name && d.qtype == qtype)
            .expect("asked")
    }

    /// The L7 records of the log for one question, in order.
    pub fn records(&self, (name, qtype): (&str, &str)) -> Vec<&Value> {
        self.file
            .l7
            .iter()
            .filter(|f| {
                let dns = &f["l7"]["dns"];
                dns["query"] == name && dns["qtypes"].as_array().is_some_and(|t| t.len() == 1 && t[0] == qtype)
            })
            .collect()
    }

    pub fn observed(&self, flags: &[&str]) -> &str {
        &self
            .observed
            .iter()
            .find(|(f, _)| f.iter().map(String::as_str).eq(flags.iter().copied()))
            .expect("observed with these flags")
            .1
    }
}

impl Drop for DnsRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One echo from `ns` to `to` (a flow of its own: each ping has its own
/// echo id).
fn ping(ns: &hubcap_tests::netns::Netns, to: &str) {
    ns.command("ping")
        .args(["-c", "1", "-W", "1", to])
        .output()
        .expect("ping");
}

//! Hubble's Observer API over the agent's real unix socket, called with the
//! generated gRPC clients as Hubble's tools call it: GetFlows (last, first,
//! follow, since/until, every filter kind, whitelist minus blacklist, field
//! mask), ServerStatus, GetNodes, GetNamespaces, agent/debug events, the
//! health check, and `hubcap observe` against the agent and its file.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use hubcap::proto::{
    flow::{
        DropReason, EventTypeFilter, FlowFilter, IpVersion, NetworkInterface, TcpFlags, TrafficDirection, Verdict,
        layer4::Protocol,
    },
    observer::{
        GetAgentEventsRequest, GetDebugEventsRequest, GetFlowsRequest, GetNamespacesRequest, GetNodesRequest,
        ServerStatusRequest, get_flows_request::Experimental, get_flows_response::ResponseTypes,
        observer_client::ObserverClient,
    },
};
use hubcap_tests::{
    agent::{hubcap_bin, scrape_metrics},
    grpc,
    output::{self, Record},
    require_root,
    topology::Node,
    traffic::{ping, tcp_transfer, udp_echo},
};
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

fn uuids<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<String> {
    records
        .into_iter()
        .map(|r| r.json["uuid"].as_str().expect("uuid").to_owned())
        .collect()
}

fn time_ns(r: &Record) -> i128 {
    let t: Timestamp = r.json["time"].as_str().expect("time").parse().expect("RFC 3339");
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

/// Waits until every flow has ended (hubcap_flow_table_directions is 0).
fn wait_for_flows_to_end(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape_metrics(&node.ns, "127.0.0.1:9965");
        if text.lines().any(|l| l == "hubcap_flow_table_directions 0") {
            return;
        }
        assert!(Instant::now() < deadline, "flows never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn request(whitelist: Vec<FlowFilter>, blacklist: Vec<FlowFilter>) -> GetFlowsRequest {
    GetFlowsRequest {
        whitelist,
        blacklist,
        ..Default::default()
    }
}

#[test]
fn observer_api_serves_what_was_captured() {
    require_root();
    let node = Node::new(3);
    let out_dir = std::env::temp_dir().join(format!("hubcap-observer-{}", node.id));
    std::fs::create_dir_all(&out_dir).unwrap();
    let out_file = out_dir.join("flows.json");
    let out_arg = out_file.to_str().unwrap().to_owned();
    let mut args = Node::METRICS_AND_QUICK_ENDS.to_vec();
    args.extend(["--output", &out_arg]);
    let agent = node.capture(&args);
    let socket = agent.grpc_socket.clone().expect("socket");
    let rt = grpc::runtime();
    let mut client = rt.block_on(grpc::connect(&socket));

    // Follow from before the traffic: it must see every flow exactly once.
    // Its own thread, runtime and connection, so it reads while the test
    // goes on.
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let follow_socket = socket.clone();
    let follower = std::thread::spawn(move || {
        let rt = grpc::runtime();
        rt.block_on(async {
            let mut client = grpc::connect(&follow_socket).await;
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
            // Until the agent has been quiet for 8 s (the test is done by then).
            while let Ok(message) = tokio::time::timeout(Duration::from_secs(8), stream.message()).await {
                match message.expect("follow stream") {
                    Some(r) => got.push(r),
                    None => break,
                }
            }
            got
        })
    });
    let before_follow = uuids(
        &subscribed
            .recv_timeout(Duration::from_secs(10))
            .expect("follower subscribed"),
    );

    node.up();
    let (p1, p2, p3) = (&node.pods[0], &node.pods[1], &node.pods[2]);
    tcp_transfer(&p1.ns, &p2.ns, SocketAddr::new(p2.ipv4.into(), 5001), 50_000, 10_000);
    udp_echo(&p1.ns, &p3.ns, SocketAddr::new(p3.ipv4.into(), 5002), 10, 100);
    udp_echo(&p2.ns, &p3.ns, SocketAddr::new(p3.ipv6.into(), 5003), 5, 200);
    ping(&p1.ns, &p3.ipv4.to_string(), 2);
    // Into a closed port: NO_SOCKET drops in p2.
    let closed = SocketAddr::new(p2.ipv4.into(), 5999);
    p1.ns.enter(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            s.send_to(b"nobody", closed).unwrap();
        }
    });
    let counters: Vec<_> = node.pods.iter().map(|p| node.settled_counters(&p.host_if)).collect();
    wait_for_flows_to_end(&node);

    // Everything the ring holds is what the file has, in the same order.
    // The drop tracepoint sees the whole machine: this test's flows are
    // those on its veths, and drops from its subnets.
    let subnet = node.subnet;
    let ours_v4 = format!("10.77.{subnet}.0/24");
    let ours_v6 = format!("fd77:{subnet}::/64");
    let veths: Vec<String> = node.pods.iter().map(|p| p.host_if.clone()).collect();
    let ours = |r: &Record| {
        let ip: IpAddr = r.src.parse().expect("source IP");
        let from_subnet = match ip {
            IpAddr::V4(v4) => v4.octets()[..3] == [10, 77, subnet],
            IpAddr::V6(v6) => v6.segments()[..4] == [0xfd77, u16::from(subnet), 0, 0],
        };
        veths.contains(&r.interface) || (r.verdict == "DROPPED" && from_subnet)
    };
    let ours_only = || {
        vec![
            FlowFilter {
                interface: veths
                    .iter()
                    .map(|name| NetworkInterface {
                        index: 0,
                        name: name.clone(),
                    })
                    .collect(),
                ..Default::default()
            },
            FlowFilter {
                source_ip: vec![ours_v4.clone(), ours_v6.clone()],
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            },
        ]
    };
    let all = rt.block_on(grpc::get_flows(&mut client, request(vec![], vec![])));
    let all = grpc::parse(&all);
    let file = output::parse(&std::fs::read_to_string(&out_file).unwrap());
    assert!(all.lost_events.is_empty() && file.lost_events.is_empty());
    assert_eq!(uuids(&all.records), uuids(&file.records));
    let records: Vec<Record> = all.records.into_iter().filter(|r| ours(r)).collect();
    assert!(records.len() > 20, "{} flows", records.len());
    // Measured against the kernel: the API's records add up to the veths' counters.
    let veth_counters: Vec<(&str, _)> = node.pods.iter().map(|p| p.host_if.as_str()).zip(counters).collect();
    output::assert_records_match_counters(&records, &veth_counters);
    let drops: Vec<&Record> = records
        .iter()
        .filter(|r| r.verdict == "DROPPED" && r.dst_port == 5999)
        .collect();
    assert_eq!(
        drops.iter().map(|r| r.packets).sum::<u64>(),
        3,
        "NO_SOCKET drops: {drops:#?}"
    );

    // The follower saw the same flows, live.
    let followed = follower.join().expect("follower");
    let followed = grpc::parse(&followed);
    assert!(followed.lost_events.is_empty());
    let after_follow: Vec<&Record> = records
        .iter()
        .filter(|r| !before_follow.contains(&uuids([*r])[0]))
        .collect();
    assert_eq!(uuids(followed.records.iter().filter(|r| ours(r))), uuids(after_follow));

    // last N and first N (of this test's flows: the whitelist leaves out
    // the rest of the machine).
    let query = |req: GetFlowsRequest| {
        let mut c = client.clone();
        let got = grpc::parse(&rt.block_on(grpc::get_flows(&mut c, req))).records;
        uuids(got.iter().filter(|r| ours(r)))
    };
    let ids = uuids(&records);
    let n = 7;
    assert_eq!(
        query(GetFlowsRequest {
            number: n,
            whitelist: ours_only(),
            ..Default::default()
        }),
        ids[ids.len() - 7..]
    );
    assert_eq!(
        query(GetFlowsRequest {
            number: n,
            first: true,
            whitelist: ours_only(),
            ..Default::default()
        }),
        ids[..7]
    );

    // since/until: a window in the middle, by each flow's own time.
    let mut times: Vec<i128> = records.iter().map(time_ns).collect();
    times.sort();
    let (since, until) = (times[times.len() / 4], times[times.len() * 3 / 4]);
    let ts = |ns: i128| Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    };
    let window: Vec<&Record> = records
        .iter()
        .filter(|r| (since..=until).contains(&time_ns(r)))
        .collect();
    assert!(!window.is_empty() && window.len() < records.len());
    assert_eq!(
        query(GetFlowsRequest {
            since: Some(ts(since)),
            until: Some(ts(until)),
            ..Default::default()
        }),
        uuids(window.iter().copied())
    );

    // Each filter kind, against the same predicate worked out here.
    let s = |v: &str| vec![v.to_owned()];
    let tcp_port = records
        .iter()
        .find(|r| r.protocol == "TCP" && r.dst_port == 5001)
        .unwrap()
        .src_port;
    let node_name = records[0].json["node_name"].as_str().unwrap().to_owned();
    type Case<'a> = (
        &'a str,
        Vec<FlowFilter>,
        Vec<FlowFilter>,
        Box<dyn Fn(&Record) -> bool + 'a>,
    );
    let cases: Vec<Case> = vec![
        (
            "source_ip exact",
            vec![FlowFilter {
                source_ip: s(&p1.ipv4.to_string()),
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.src == p1.ipv4.to_string()),
        ),
        (
            "destination_ip CIDR",
            vec![FlowFilter {
                destination_ip: s(&format!("10.77.{subnet}.12/31")),
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.dst == p2.ipv4.to_string() || r.dst == p3.ipv4.to_string()),
        ),
        (
            "source_ip IPv6 CIDR",
            vec![FlowFilter {
                source_ip: s(&format!("fd77:{subnet}::/64")),
                ..Default::default()
            }],
            vec![],
            Box::new(
                move |r| matches!(r.src.parse(), Ok(IpAddr::V6(v6)) if v6.segments()[..4] == [0xfd77, u16::from(subnet), 0, 0]),
            ),
        ),
        (
            "protocol udp",
            vec![FlowFilter {
                protocol: s("udp"),
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.protocol == "UDP"),
        ),
        (
            "protocol icmpv4",
            vec![FlowFilter {
                protocol: s("icmpv4"),
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.protocol == "ICMPv4"),
        ),
        (
            "destination_port",
            vec![FlowFilter {
                destination_port: s("5002"),
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.protocol == "UDP" && r.dst_port == 5002),
        ),
        (
            "source_port",
            vec![FlowFilter {
                source_port: s(&tcp_port.to_string()),
                ..Default::default()
            }],
            vec![],
            Box::new(move |r| r.protocol == "TCP" && r.src_port == tcp_port),
        ),
        (
            "verdict DROPPED",
            vec![FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.verdict == "DROPPED"),
        ),
        (
            "event_type drop",
            vec![FlowFilter {
                event_type: vec![EventTypeFilter {
                    r#type: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.verdict == "DROPPED"),
        ),
        (
            "traffic_direction INGRESS",
            vec![FlowFilter {
                traffic_direction: vec![TrafficDirection::Ingress as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.direction == "INGRESS"),
        ),
        (
            "tcp_flags SYN",
            vec![FlowFilter {
                tcp_flags: vec![TcpFlags {
                    syn: true,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.flags.iter().any(|f| f == "SYN")),
        ),
        (
            "ip_version IPv6",
            vec![FlowFilter {
                ip_version: vec![IpVersion::IPv6 as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.src.contains(':')),
        ),
        (
            "interface",
            vec![FlowFilter {
                interface: vec![NetworkInterface {
                    index: 0,
                    name: p3.host_if.clone(),
                }],
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.interface == p3.host_if),
        ),
        (
            "node_name glob",
            vec![FlowFilter {
                node_name: s(&format!("{}*", &node_name[..node_name.len() - 1])),
                ..Default::default()
            }],
            vec![],
            Box::new(|_| true),
        ),
        (
            "drop_reason_desc",
            vec![FlowFilter {
                drop_reason_desc: vec![0],
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.verdict == "DROPPED" && r.json["drop_reason_desc"].is_null()),
        ),
        // The cases above that match everything, or every drop, would pass
        // with the filter ignored; these would not.
        (
            "node_name glob of another node: none",
            vec![FlowFilter {
                node_name: s(&format!("{node_name}-other*")),
                ..Default::default()
            }],
            vec![],
            Box::new(|_| false),
        ),
        (
            "drop_reason_desc POLICY_DENIED: none",
            vec![FlowFilter {
                drop_reason_desc: vec![DropReason::PolicyDenied as i32],
                ..Default::default()
            }],
            vec![],
            Box::new(|_| false),
        ),
        (
            "reply",
            vec![FlowFilter {
                reply: vec![true],
                ..Default::default()
            }],
            vec![],
            Box::new(|r| r.is_reply == Some(true)),
        ),
        (
            "namespace prefix (no pod metadata yet: none)",
            vec![FlowFilter {
                source_pod: s("default/"),
                ..Default::default()
            }],
            vec![],
            Box::new(|_| false),
        ),
        (
            "whitelist minus blacklist",
            vec![FlowFilter {
                protocol: s("udp"),
                ..Default::default()
            }],
            vec![FlowFilter {
                ip_version: vec![IpVersion::IPv6 as i32],
                ..Default::default()
            }],
            Box::new(|r| r.protocol == "UDP" && !r.src.contains(':')),
        ),
        (
            "whitelist filters are OR'd, fields in one filter AND'd",
            vec![
                FlowFilter {
                    protocol: s("icmpv4"),
                    ..Default::default()
                },
                FlowFilter {
                    protocol: s("tcp"),
                    destination_port: s("5001"),
                    ..Default::default()
                },
            ],
            vec![],
            Box::new(|r| r.protocol == "ICMPv4" || (r.protocol == "TCP" && r.dst_port == 5001)),
        ),
        (
            "blacklist only",
            vec![],
            vec![FlowFilter {
                traffic_direction: vec![TrafficDirection::Egress as i32],
                ..Default::default()
            }],
            Box::new(|r| r.direction != "EGRESS"),
        ),
    ];
    for (name, whitelist, blacklist, keep) in cases {
        let expected = uuids(records.iter().filter(|r| keep(r)));
        let got = query(request(whitelist, blacklist));
        assert_eq!(got, expected, "{name}");
        if !name.contains("none") && !name.contains("glob") {
            assert!(
                !got.is_empty() && got.len() < records.len(),
                "{name}: {} of {}",
                got.len(),
                records.len()
            );
        }
    }

    // Field mask: only the listed fields come back.
    let masked = rt.block_on(grpc::get_flows(
        &mut client,
        GetFlowsRequest {
            number: 50,
            whitelist: vec![FlowFilter {
                protocol: s("tcp"),
                ..Default::default()
            }],
            experimental: Some(Experimental {
                field_mask: Some(FieldMask {
                    paths: vec!["IP.source".into(), "l4.TCP.destination_port".into(), "verdict".into()],
                }),
            }),
            ..Default::default()
        },
    ));
    assert!(!masked.is_empty());
    for r in &masked {
        let Some(ResponseTypes::Flow(f)) = &r.response_types else {
            panic!("flow")
        };
        let ip = f.ip.as_ref().expect("IP.source");
        assert!(!ip.source.is_empty() && ip.destination.is_empty() && ip.ip_version == 0);
        let Some(Protocol::Tcp(tcp)) = f.l4.as_ref().and_then(|l| l.protocol.as_ref()) else {
            panic!("TCP")
        };
        assert_eq!((tcp.source_port, tcp.flags.is_none()), (0, true));
        assert_ne!(tcp.destination_port, 0);
        assert_ne!(f.verdict, 0, "verdict kept");
        assert!(f.time.is_none() && f.uuid.is_empty() && f.interface.is_none() && f.extensions.is_none());
    }

    // Bad requests are InvalidArgument with a reason, as Hubble answers.
    for (what, req) in [
        (
            "first with follow",
            GetFlowsRequest {
                first: true,
                follow: true,
                ..Default::default()
            },
        ),
        (
            "bad CIDR",
            request(
                vec![FlowFilter {
                    source_ip: s("10.0.0.0/99"),
                    ..Default::default()
                }],
                vec![],
            ),
        ),
        (
            "unsupported field",
            request(
                vec![FlowFilter {
                    source_label: s("app=x"),
                    ..Default::default()
                }],
                vec![],
            ),
        ),
        (
            "bad mask path",
            GetFlowsRequest {
                experimental: Some(Experimental {
                    field_mask: Some(FieldMask {
                        paths: vec!["IP.nope".into()],
                    }),
                }),
                ..Default::default()
            },
        ),
    ] {
        let status = rt
            .block_on(client.get_flows(req))
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }

    // ServerStatus, GetNodes, GetNamespaces, agent and debug events.
    let status = rt
        .block_on(client.server_status(ServerStatusRequest {}))
        .unwrap()
        .into_inner();
    // The ring never filled: it holds every flow seen (this test's, and
    // any drop elsewhere on the machine).
    assert_eq!((status.num_flows, status.max_flows), (status.seen_flows, 4095));
    assert!(status.seen_flows >= records.len() as u64);
    assert!(
        status.uptime_ns > 1_000_000_000 && status.version.ends_with("+hubcap"),
        "{status:?}"
    );
    assert!(status.flows_rate > 0.0, "{status:?}");
    let nodes = rt
        .block_on(client.get_nodes(GetNodesRequest {}))
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!((nodes[0].name.as_str(), nodes[0].state), (node_name.as_str(), 1));
    assert!(nodes[0].num_flows >= records.len() as u64 && nodes[0].max_flows == 4095);
    assert_eq!(nodes[0].address, format!("unix://{}", socket.display()));
    let namespaces = rt
        .block_on(client.get_namespaces(GetNamespacesRequest {}))
        .unwrap()
        .into_inner();
    assert!(namespaces.namespaces.is_empty(), "no pod metadata yet");
    rt.block_on(async {
        let mut agent_events = client
            .get_agent_events(GetAgentEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(agent_events.message().await.unwrap().is_none());
        let mut debug_events = client
            .get_debug_events(GetDebugEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(debug_events.message().await.unwrap().is_none());
    });

    // The health check `hubble status` makes.
    rt.block_on(async {
        let mut health = tonic_health::pb::health_client::HealthClient::new(grpc::channel(&socket).await);
        for service in ["", "observer.Observer"] {
            let reply = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.status, 1, "{service:?} SERVING");
        }
    });

    // `hubcap observe` against the agent and against its file: the same flows.
    let observe = |source: &[&str], extra: &[&str]| {
        let out = std::process::Command::new(hubcap_bin())
            .arg("observe")
            .args(source)
            .args(extra)
            .output()
            .expect("hubcap observe");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let server = format!("unix://{}", socket.display());
    let live = ["--server", server.as_str()];
    let from_file = ["--input-file", out_arg.as_str()];
    // Each case keeps to this test's veths or subnets, so nothing else on
    // the machine can slip in between the two calls.
    let p3_v4 = p3.ipv4.to_string();
    let mut on_veths = Vec::new();
    for v in &veths {
        on_veths.extend(["--interface", v.as_str()]);
    }
    let from_subnets = ["--from-ip", &ours_v4, "--from-ip", &ours_v6];
    // A window by the records' own RFC 3339 times.
    let mut by_time: Vec<&Record> = records.iter().collect();
    by_time.sort_by_key(|r| time_ns(r));
    let text_time = |r: &Record| r.json["time"].as_str().unwrap().to_owned();
    let (since_text, until_text) = (
        text_time(by_time[by_time.len() / 4]),
        text_time(by_time[by_time.len() * 3 / 4]),
    );
    for (extra, scope) in [
        (&["--all", "-o", "json"][..], &on_veths[..]),
        (&["--last", "5", "--protocol", "udp", "-o", "json"], &on_veths),
        (&["--first", "3", "--to-ip", &p3_v4], &from_subnets),
        (
            &["--all", "--to-port", "5001", "--tcp-flags", "SYN", "-o", "table"],
            &on_veths,
        ),
        (&["--all", "--verdict", "DROPPED"], &from_subnets),
        (
            &["--all", "--traffic-direction", "ingress", "--interface", &p1.host_if],
            &from_subnets,
        ),
        (&["--last", "4", "--ip", &p3_v4, "-o", "compact"], &on_veths),
        (
            &["--since", &since_text, "--until", &until_text, "-o", "json"],
            &on_veths,
        ),
        (&["--since", "10m", "--protocol", "tcp"], &on_veths),
    ] {
        let mut extra = extra.to_vec();
        extra.extend(scope);
        let a = observe(&live, &extra);
        assert!(!a.is_empty(), "{extra:?}");
        assert_eq!(a, observe(&from_file, &extra), "{extra:?}");
    }
    // Reading the exporter's file (as a path, and on stdin) and writing
    // `-o json` gives its lines back, byte for byte.
    let file_text = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(observe(&from_file, &["--all", "-o", "json"]), file_text);
    let piped = std::process::Command::new(hubcap_bin())
        .args(["observe", "--input-file", "-", "--all", "-o", "json"])
        .stdin(std::fs::File::open(&out_file).unwrap())
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), file_text);

    // `hubcap observe -f` prints new flows as they come.
    let mut following = std::process::Command::new(hubcap_bin())
        .args([
            "observe",
            "--server",
            &server,
            "-f",
            "-o",
            "json",
            "--protocol",
            "icmpv4",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let follow_out = following.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        // The two echo requests and two replies, on both veths: 4 B records.
        std::io::BufReader::new(follow_out)
            .lines()
            .take(4)
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(300));
    ping(&p2.ns, &p1.ipv4.to_string(), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "observe -f printed no new flows");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = reader.join().unwrap();
    following.kill().unwrap();
    following.wait().unwrap();
    let followed = output::parse(&(lines.join("\n") + "\n"));
    assert_eq!(followed.records.len(), 4);
    assert!(
        followed.records.iter().all(|r| r.protocol == "ICMPv4"
            && r.state == "B"
            && [p1.ipv4.to_string(), p2.ipv4.to_string()].contains(&r.src)),
        "{lines:?}"
    );
    let compact = observe(&live, &["--first", "1", "--protocol", "tcp", "--to-port", "5001"]);
    assert!(
        compact.contains(" -> ") && compact.contains("FORWARDED (TCP Flags: SYN) 1 packets"),
        "{compact}"
    );

    // A second agent on the same socket is refused, and the first goes on.
    let second = node
        .ns
        .command(hubcap_bin().to_str().unwrap())
        .args(["run", "-i", "lo", "--grpc-socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another process is serving on this socket"), "{said}");
    rt.block_on(client.server_status(ServerStatusRequest {}))
        .expect("the first agent still serves");

    // A client still following does not hold up the exit: its stream ends.
    let mut open_follow = rt.block_on(async {
        let request = GetFlowsRequest {
            follow: true,
            ..Default::default()
        };
        client.get_flows(request).await.unwrap().into_inner()
    });
    let stopping = Instant::now();
    let finished = agent.stop();
    assert!(finished.status.success());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    // It may still get the records written at exit, then it ends.
    let end = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match open_follow.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
    });
    assert!(matches!(end, Ok(Ok(None)) | Ok(Err(_))), "follow stream ended: {end:?}");
    assert!(!socket.exists(), "socket removed at exit");
    std::fs::remove_dir_all(&out_dir).unwrap();
}

//! Nothing is lost silently: when the kernel flow map is full, the packets
//! that found no room are reported as `lost_events`, and flows plus losses
//! add up to the interface counters exactly. Output goes to a file here, to
//! cover the file sink end to end.

use std::net::UdpSocket;

use hubcap::proto::observer::get_flows_response::ResponseTypes;
use hubcap_tests::{grpc, output, require_root, topology::Node};

#[test]
fn a_full_flow_map_is_reported_and_accounted() {
    require_root();
    let node = Node::new(2);
    let log = std::env::temp_dir().join(format!("hubcap-losses-{}/events.log", node.id));
    let log_arg = log.to_str().unwrap().to_owned();
    // The smallest map hubcap accepts: 1024 flow directions.
    // Drop capture off: drop records share the map, and their losses could
    // not be told from forwarded ones in the output (Hubble's LostEvent has
    // no field for it); they are counted apart in hubcap_kernel_packets_total.
    let agent = node.capture(&[
        "--flow-map-size",
        "1024",
        "--output",
        &log_arg,
        "--drop-reasons",
        "none",
    ]);
    node.up();

    // 1500 one-packet UDP flows from pod 1 to pod 2. Each is a flow
    // direction on both veths: 3000 entries wanted, 1024 available.
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let target = p2.ipv4;
    // Bound receivers: no datagram is dropped as NO_SOCKET (drop records
    // share the flow map and would be lost too, apart from these counts).
    let _sinks: Vec<UdpSocket> = p2.ns.enter(move || {
        (20_000..21_500u16)
            .map(|port| UdpSocket::bind((target, port)).expect("bind"))
            .collect()
    });
    p1.ns.enter(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for port in 20_000..21_500u16 {
            socket.send_to(b"x", (target, port)).expect("send");
        }
    });

    let a = node.settled_counters(&p1.host_if);
    let b = node.settled_counters(&p2.host_if);
    // The same losses reach Observer API clients, among the flows.
    let socket = agent.grpc_socket.clone().expect("socket");
    let api = grpc::runtime().block_on(async {
        let mut client = grpc::connect(&socket).await;
        grpc::get_flows(&mut client, Default::default()).await
    });
    let api_lost: u64 = api
        .iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::LostEvents(l)) => Some(l.num_events_lost),
            _ => None,
        })
        .sum();
    let finished = agent.stop();
    assert!(finished.status.success());
    assert!(finished.stdout.is_empty(), "flows go to the file, not stdout");
    let out = output::parse(&std::fs::read_to_string(&log).expect("output file"));
    let lost: u64 = out
        .lost_events
        .iter()
        .map(|l| {
            l["num_events_lost"]
                .as_str()
                .expect("uint64 as string")
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(lost > 0, "the map must have overflowed");
    assert!(
        out.lost_events.iter().all(|l| l.get("source").is_none()),
        "map-full losses have no Hubble source"
    );
    let counted: u64 = output::forwarded(&out.records).map(|r| r.packets).sum();
    let on_wire = a.rx_packets + a.tx_packets + b.rx_packets + b.tx_packets;
    assert_eq!(
        counted + lost,
        on_wire,
        "flows ({counted}) + lost ({lost}) = interface counters"
    );
    assert_eq!(api_lost, lost, "lost_events over the Observer API");
    let warned = finished.stderr.iter().any(|l| l.contains("kernel could not keep up"));
    assert!(warned, "a loss is also logged");
    std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
}

/// The ring buffer overflows while hubcap is not reading it (stopped with
/// SIGSTOP through a burst of new flows): the events that found no room
/// are counted, and their flows' counts, kept in the kernel map, still
/// reach the records: flows add up to the interface counters exactly.
#[test]
fn a_full_ring_buffer_is_counted_and_loses_no_counts() {
    require_root();
    let node = Node::new(2);
    let mut args = vec!["--ring-buffer-mb", "1"];
    args.extend(Node::METRICS_AND_QUICK_ENDS);
    let agent = node.capture(&args);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let target = p2.ipv4;
    let _sinks: Vec<UdpSocket> = p2.ns.enter(move || {
        (30_000..40_000u16)
            .map(|port| UdpSocket::bind((target, port)).expect("bind"))
            .collect()
    });
    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    // 10,000 new flows, two directions each (one per veth): a NEW event
    // each, about 20,000 events of 144 bytes for a 1 MB ring.
    p1.ns.enter(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for port in 30_000..40_000u16 {
            socket.send_to(b"x", (target, port)).expect("send");
        }
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    node.wait_for_flows_to_end();
    let counters = node.settled_pod_counters();
    let lost = hubcap_tests::agent::metric(&node.ns, "127.0.0.1:9965", "hubcap_ringbuf_records_lost_total");
    let finished = agent.stop();
    assert!(finished.status.success());
    assert!(lost > 0, "the ring buffer must have overflowed");
    let records = output::parse(&finished.stdout).records;
    let veths: Vec<_> = counters.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    output::assert_records_match_counters(&records, &veths);
    println!(
        "{lost} events found the ring full; {} records hold every packet",
        records.len()
    );
}

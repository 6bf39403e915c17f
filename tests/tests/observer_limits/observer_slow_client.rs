//! A GetFlows follower that does not read while thousands of flows go by:
//! it is told exactly how many it missed (`lost_events` from
//! HUBBLE_RING_BUFFER), and capture loses nothing.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hubcap::proto::{
    flow::LostEventSource,
    observer::{GetFlowsRequest, ServerStatusRequest, get_flows_response::ResponseTypes},
};
use hubcap_tests::{grpc, output, require_root, topology::Node};

/// Datagrams from new sockets, each (nearly always) a new flow: one `B`
/// record on each of two veths (the empty `E` is no record), far more than
/// a follower's backlog (4,096).
const FLOWS: usize = 6000;

fn metric(node: &Node, name: &str) -> u64 {
    hubcap_tests::agent::metric(&node.ns, "127.0.0.1:9965", name)
}

#[test]
fn slow_follower_is_told_what_it_missed_and_capture_loses_nothing() {
    require_root();
    let node = Node::new(2);
    let out_file = std::env::temp_dir().join(format!("hubcap-slow-{}.json", node.id));
    let out_arg = out_file.to_str().unwrap().to_owned();
    let mut args = Node::METRICS_AND_QUICK_ENDS.to_vec();
    args.extend(["--output", &out_arg]);
    let agent = node.capture(&args);
    let socket = agent.grpc_socket.clone().expect("socket");

    // The follower subscribes, then does not read at all until told to.
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let (read_tx, read) = std::sync::mpsc::channel::<()>();
    let follower = std::thread::spawn(move || {
        let rt = grpc::runtime();
        rt.block_on(async {
            let mut client = grpc::connect(&socket).await;
            // The flows seen before the subscription, read with nothing in
            // between (checked twice) so the feed's share is known exactly.
            let (seen_before, mut stream) = loop {
                let before = client.server_status(ServerStatusRequest {}).await.unwrap().into_inner();
                let request = GetFlowsRequest {
                    follow: true,
                    ..Default::default()
                };
                let stream = client.get_flows(request).await.unwrap().into_inner();
                let after = client.server_status(ServerStatusRequest {}).await.unwrap().into_inner();
                if before.seen_flows == after.seen_flows {
                    break (after.seen_flows, stream);
                }
            };
            subscribed_tx.send(seen_before).unwrap();
            // Blocks this runtime: nothing is read, not even by h2.
            read.recv().unwrap();
            let (mut flows, mut lost, mut lost_reports) = (0u64, 0u64, 0u64);
            while let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(3), stream.message())
                .await
                .map(|m| m.expect("follow stream"))
            {
                match r.response_types {
                    Some(ResponseTypes::Flow(_)) => flows += 1,
                    Some(ResponseTypes::LostEvents(l)) => {
                        assert_eq!(l.source, LostEventSource::HubbleRingBuffer as i32);
                        lost += l.num_events_lost;
                        lost_reports += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let status = client.server_status(ServerStatusRequest {}).await.unwrap().into_inner();
            (flows, lost, lost_reports, status.seen_flows)
        })
    });
    let seen_before = subscribed.recv_timeout(Duration::from_secs(10)).expect("subscribed");

    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    let target = SocketAddr::new(p2.ipv4.into(), 6000);
    let receiver = p2.ns.enter(move || UdpSocket::bind(target).unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&received);
    let drain = std::thread::spawn(move || {
        receiver.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        while receiver.recv(&mut [0; 64]).is_ok() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let progress = Arc::clone(&received);
    p1.ns.enter(move || {
        for sent in 1..=FLOWS {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"flow", target).unwrap();
            // Paced so the receiver's buffer never overflows (which would be
            // drops, and other records).
            if sent % 100 == 0 {
                let deadline = Instant::now() + Duration::from_secs(5);
                while progress.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    });
    drain.join().unwrap();
    assert_eq!(received.load(Ordering::Relaxed), FLOWS, "datagrams received");
    let counters: Vec<_> = node.pods.iter().map(|p| node.settled_counters(&p.host_if)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&node, "hubcap_flow_table_directions") != 0 {
        assert!(Instant::now() < deadline, "flows never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    read_tx.send(()).unwrap();
    let (flows, lost, lost_reports, seen_after) = follower.join().expect("follower");

    // The follower got every flow of its feed, or a count of it.
    assert!(
        lost > 0 && lost_reports > 0,
        "the follower missed nothing: {flows} flows"
    );
    assert_eq!(flows + lost, seen_after - seen_before, "flows {flows} + lost {lost}");
    // Ephemeral ports repeat now and then (a repeat joins its earlier flow),
    // so a little under 2 records per datagram; twice the backlog at least.
    assert!(seen_after - seen_before > 8192, "{} records", seen_after - seen_before);
    assert_eq!(metric(&node, "hubcap_observer_events_missed_total"), lost);

    // Capture lost nothing: every packet is in the file, exactly.
    let finished = agent.stop();
    assert!(finished.status.success());
    let file = output::parse(&std::fs::read_to_string(&out_file).unwrap());
    std::fs::remove_file(&out_file).unwrap();
    assert!(file.lost_events.is_empty(), "{:?}", file.lost_events);
    let veths: Vec<(&str, _)> = node.pods.iter().map(|p| p.host_if.as_str()).zip(counters).collect();
    output::assert_records_match_counters(&file.records, &veths);
    eprintln!("follower: {flows} flows received, {lost} missed in {lost_reports} lost_events; capture exact");
}

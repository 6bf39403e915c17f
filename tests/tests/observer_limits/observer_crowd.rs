//! A crowd on the Observer API: 1,000 GetFlows followers at once (900
//! reading, 100 that never read), garbage on the socket, a connection that
//! stalls after the HTTP/2 preface, requests with bad filters. Capture stays
//! exact, every reading follower gets every flow, hubcap's memory stays
//! bounded, and the streams are gone once the clients are.

use std::{
    io::Write,
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use hubcap::proto::{
    flow::FlowFilter,
    observer::{GetFlowsRequest, get_flows_response::ResponseTypes},
};
use hubcap_tests::{agent::metric, grpc, output, require_root, topology::Node, traffic::udp_echo};
use tokio::sync::watch;

const READERS: usize = 900;
const SILENT: usize = 100;
/// Streams per connection (HTTP/2 allows 200 at once by default).
const STREAMS_PER_CONNECTION: usize = 100;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap()
}

fn streams(node: &Node) -> u64 {
    metric(&node.ns, "127.0.0.1:9965", "hubcap_observer_streams")
}

#[test]
fn a_thousand_followers_and_bad_clients_leave_capture_exact() {
    require_root();
    let node = Node::new(2);
    let log = std::env::temp_dir().join(format!("hubcap-crowd-{}.json", node.id));
    let mut args = vec!["--output", log.to_str().unwrap()];
    args.extend(Node::METRICS_AND_QUICK_ENDS);
    let agent = node.capture(&args);
    let socket = agent.grpc_socket.clone().expect("socket");
    let rss_idle = rss_kib(agent.pid());

    // Garbage instead of HTTP/2, and a client that stalls after the preface.
    let mut garbage = UnixStream::connect(&socket).unwrap();
    garbage.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(1000)).unwrap();
    let mut stalled = UnixStream::connect(&socket).unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (done_tx, done_rx) = watch::channel(false);
    let crowd = rt.spawn({
        let socket = socket.clone();
        async move {
            // Bad filters are refused with a status, not a crash.
            let mut client = grpc::connect(&socket).await;
            let bad = GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    source_ip: vec!["not-an-address".into()],
                    ..Default::default()
                }],
                ..Default::default()
            };
            let Err(refused) = client.get_flows(bad).await else {
                panic!("a bad filter is refused")
            };
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");

            let mut readers = Vec::new();
            let mut silent = Vec::new();
            for c in 0..(READERS + SILENT) / STREAMS_PER_CONNECTION {
                let mut client = grpc::connect(&socket).await;
                for s in 0..STREAMS_PER_CONNECTION {
                    let request = GetFlowsRequest {
                        follow: true,
                        ..Default::default()
                    };
                    let stream = client.get_flows(request).await.expect("follow").into_inner();
                    if c * STREAMS_PER_CONNECTION + s < READERS {
                        readers.push(tokio::spawn(read_all(stream, done_rx.clone())));
                    } else {
                        // Held, never polled.
                        silent.push(stream);
                    }
                }
            }
            let mut done = done_rx.clone();
            let _ = done.wait_for(|d| *d).await;
            let mut counts = Vec::new();
            for reader in readers {
                counts.push(reader.await.unwrap());
            }
            drop(silent);
            counts
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while streams(&node) < (READERS + SILENT) as u64 {
        assert!(Instant::now() < deadline, "{} streams open", streams(&node));
        std::thread::sleep(Duration::from_millis(100));
    }

    let rss_streams_open = rss_kib(agent.pid());
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    // Two equal bursts: the first sets the memory high-water mark of a
    // thousand streams; the second must not raise it (nothing retained per
    // response or per stream).
    let mut rss_after_burst = Vec::new();
    for burst in 0..2u16 {
        for i in 0..50 {
            udp_echo(&p1.ns, &p2.ns, (p2.ipv4, 24000 + burst * 100 + i).into(), 2, 300);
        }
        node.wait_for_flows_to_end();
        std::thread::sleep(Duration::from_secs(1));
        rss_after_burst.push(rss_kib(agent.pid()));
    }
    let counters = node.settled_pod_counters();
    // Every reader has read what there was by now; then they stop.
    std::thread::sleep(Duration::from_secs(2));
    done_tx.send(true).unwrap();
    let counts: Vec<(u64, u64)> = rt.block_on(crowd).unwrap();
    drop(rt);
    drop((garbage, stalled));
    let deadline = Instant::now() + Duration::from_secs(10);
    while streams(&node) != 0 {
        assert!(Instant::now() < deadline, "{} streams left", streams(&node));
        std::thread::sleep(Duration::from_millis(100));
    }

    let rss_crowd_left = rss_kib(agent.pid());
    let finished = agent.stop();
    assert!(finished.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let records = output::parse(&text).records;
    let veths: Vec<_> = counters.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    output::assert_records_match_counters(&records, &veths);
    for (i, &(flows, lost)) in counts.iter().enumerate() {
        assert_eq!(
            flows + lost,
            records.len() as u64,
            "reader {i}: {flows} flows, {lost} lost"
        );
    }
    let lost: u64 = counts.iter().map(|c| c.1).sum();
    let mib = |kib: u64| kib / 1024;
    println!(
        "{} records; {READERS} readers got {} flows each ({lost} reported lost in all); RSS idle {} MiB, \
         {} streams open {} MiB, after burst 1 {} MiB, after burst 2 {} MiB, after the crowd left {} MiB",
        records.len(),
        counts[0].0,
        mib(rss_idle),
        READERS + SILENT,
        mib(rss_streams_open),
        mib(rss_after_burst[0]),
        mib(rss_after_burst[1]),
        mib(rss_crowd_left)
    );
    // A burst fans out ~370,000 responses (about 370 MB of them): keeping
    // even a tenth would add well over 20%. The allocator's own high-water
    // mark moves by up to ~10% between identical bursts (seen: 178 -> 197
    // MiB once in a full test run, +0-5% alone), so 20% is the line.
    assert!(
        rss_after_burst[1] <= rss_after_burst[0] + rss_after_burst[0] / 5,
        "a second burst raised RSS from {} to {} MiB",
        mib(rss_after_burst[0]),
        mib(rss_after_burst[1])
    );
    // Opening a stream costs its task, queue and HTTP/2 state.
    assert!(
        mib(rss_streams_open - rss_idle) < 64,
        "1,000 open streams cost {} MiB",
        mib(rss_streams_open - rss_idle)
    );
}

/// Reads a follow stream until the test says it is done: (flows, events
/// reported lost).
async fn read_all(
    mut stream: tonic::Streaming<hubcap::proto::observer::GetFlowsResponse>,
    mut done: watch::Receiver<bool>,
) -> (u64, u64) {
    let (mut flows, mut lost) = (0, 0);
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => match response.response_types {
                    Some(ResponseTypes::Flow(_)) => flows += 1,
                    Some(ResponseTypes::LostEvents(l)) => lost += l.num_events_lost,
                    _ => {}
                },
                _ => break,
            },
            _ = done.wait_for(|d| *d) => break,
        }
    }
    (flows, lost)
}

//! Azure's flow log formats (`--output-format vnet|nsg`): every tuple
//! parses with the documented field order; per veth the packets and bytes
//! add up to the interface counters exactly (VNet) or to the TCP and UDP
//! records of a Hubble log of the same run (NSG, which has no letter for
//! other protocols); each flow direction's states run B, C..., E; a drop
//! appears as D (VNet) or with decision D (NSG).

use std::collections::BTreeMap;

use hubcap_tests::{
    output, require_root,
    topology::{Counters, Node},
    traffic::{ping, tcp_transfer, udp_echo, udp_to_closed_port},
};
use serde_json::Value;

/// (packets, bytes) the host side received and sent, by interface.
type RxTx = BTreeMap<String, ((u64, u64), (u64, u64))>;

/// One tuple, with the interface its record names.
#[derive(Debug)]
struct Tuple {
    interface: String,
    fields: Vec<String>,
}

impl Tuple {
    fn num(&self, i: usize) -> u64 {
        self.fields[i]
            .parse()
            .unwrap_or_else(|_| panic!("field {i} of {:?}", self.fields))
    }
}

/// Runs hubcap with `--output-format FORMAT` (and a Hubble log of the same
/// run beside it) over traffic that includes a drop; returns the tuples,
/// the Hubble records and the veths' counters.
fn run(format: &str) -> (Vec<Tuple>, Vec<output::Record>, Vec<(String, Counters)>) {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-azure-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("flowlogs.yaml");
    let (hubble_log, tuple_log) = (dir.join("all.log"), dir.join("tuples.log"));
    // Beside the Hubble log, a flow log of the same format as --output:
    // it must hold the same tuples.
    std::fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: all\n    filePath: {}\n  - name: tuples\n    filePath: {}\n    format: {format}\n",
            hubble_log.display(),
            tuple_log.display()
        ),
    )
    .unwrap();
    let agent = node.capture(&[
        "--output-format",
        format,
        "--flow-logs-config",
        config.to_str().unwrap(),
        "--report-interval",
        "1",
    ]);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    // A long enough transfer for C tuples (report interval 1 s).
    tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, 5001).into(), 2_000_000, 100_000);
    udp_echo(&p2.ns, &p1.ns, (p1.ipv4, 5353).into(), 20, 300);
    tcp_transfer(&p2.ns, &p1.ns, (p1.ipv6, 6001).into(), 50_000, 5_000);
    ping(&p1.ns, &p2.ipv4.to_string(), 2);
    udp_to_closed_port(&p1.ns, (p2.ipv4, 9).into(), 3);
    let counters = node.settled_pod_counters();
    let finished = agent.stop();
    assert!(finished.status.success(), "hubcap exit: {:?}", finished.status);
    let hubble = output::parse(&std::fs::read_to_string(&hubble_log).unwrap()).records;
    let from_log = tuples_of(&std::fs::read_to_string(&tuple_log).unwrap(), format);
    let _ = std::fs::remove_dir_all(&dir);
    let tuples = tuples_of(&finished.stdout, format);
    let key = |t: &Tuple| format!("{} {}", t.interface, t.fields.join(","));
    let mut a: Vec<String> = tuples.iter().map(key).collect();
    let mut b: Vec<String> = from_log.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "the flow log of format {format} holds the same tuples as --output"
    );
    (tuples, hubble, counters)
}

/// The tuples of a log of `format`, each with its interface.
fn tuples_of(text: &str, format: &str) -> Vec<Tuple> {
    let mut tuples = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        for record in v["records"].as_array().expect("records") {
            let (interface, lists) = if format == "vnet" {
                assert_eq!(record["flowLogVersion"], 4);
                assert_eq!(record["category"], "FlowLogFlowEvent");
                let target = record["targetResourceID"].as_str().unwrap();
                let flows = &record["flowRecords"]["flows"];
                let lists: Vec<Value> = flows[0]["flowGroups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g["flowTuples"].clone())
                    .collect();
                (target.rsplit('/').next().unwrap().to_owned(), lists)
            } else {
                assert_eq!(record["properties"]["Version"], 2);
                assert_eq!(record["category"], "NetworkSecurityGroupFlowEvent");
                let resource = record["resourceId"].as_str().unwrap();
                let lists = record["properties"]["flows"][0]["flows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["flowTuples"].clone())
                    .collect();
                (resource.rsplit('/').next().unwrap().to_lowercase(), lists)
            };
            for list in lists {
                for t in list.as_array().unwrap() {
                    let fields: Vec<String> = t.as_str().unwrap().split(',').map(str::to_owned).collect();
                    tuples.push(Tuple {
                        interface: interface.clone(),
                        fields,
                    });
                }
            }
        }
    }
    tuples
}

/// Per interface: (rx, tx) as (packets, bytes), from tuples oriented by
/// connection: an outbound connection's sent columns left the pod (the
/// host side received them), its received columns went to the pod.
fn sums(tuples: &[Tuple], direction: usize, counts: usize) -> RxTx {
    let mut sums = RxTx::new();
    for t in tuples {
        let sent = (t.num(counts), t.num(counts + 1));
        let received = (t.num(counts + 2), t.num(counts + 3));
        let (rx, tx) = if t.fields[direction] == "O" {
            (sent, received)
        } else {
            (received, sent)
        };
        let s = sums.entry(t.interface.clone()).or_default();
        s.0.0 += rx.0;
        s.0.1 += rx.1;
        s.1.0 += tx.0;
        s.1.1 += tx.1;
    }
    sums
}

/// Each connection's states, its two directions together: B first (one
/// per direction), E last (one per direction), no B after an E.
fn check_states(tuples: &[&Tuple], state: usize) {
    let mut by_connection: BTreeMap<(String, Vec<String>), String> = BTreeMap::new();
    for t in tuples {
        let key = (t.interface.clone(), t.fields[1..6].to_vec());
        by_connection.entry(key).or_default().push_str(&t.fields[state]);
    }
    assert!(by_connection.values().any(|s| s.contains('C')), "a C tuple somewhere");
    for (key, states) in by_connection {
        let count = |c: char| states.chars().filter(|s| *s == c).count();
        let first_e = states.find('E').unwrap_or(states.len());
        assert!(
            states.starts_with('B')
                && states.ends_with('E')
                && (1..=2).contains(&count('B'))
                && (1..=2).contains(&count('E'))
                && !states[first_e..].contains('B'),
            "{key:?}: {states}"
        );
    }
}

#[test]
fn vnet_tuples_add_up_to_the_interface_counters() {
    let (tuples, _, counters) = run("vnet");
    for t in &tuples {
        assert_eq!(t.fields.len(), 13, "{:?}", t.fields);
        assert!(t.num(0) > 1_700_000_000_000, "time in ms");
        assert!(["I", "O"].contains(&t.fields[6].as_str()) && t.fields[8] == "NX");
    }
    let (denied, allowed): (Vec<&Tuple>, Vec<&Tuple>) = tuples.iter().partition(|t| t.fields[7] == "D");
    assert!(
        denied.iter().any(|t| t.fields[4] == "9" && t.fields[5] == "17"),
        "the drop as D: {denied:?}"
    );
    let allowed: Vec<Tuple> = allowed
        .into_iter()
        .map(|t| Tuple {
            interface: t.interface.clone(),
            fields: t.fields.clone(),
        })
        .collect();
    let sums = sums(&allowed, 6, 9);
    for (ifname, c) in &counters {
        let (rx, tx) = sums.get(ifname).copied().unwrap_or_default();
        assert_eq!(rx, (c.rx_packets, c.rx_bytes), "{ifname} rx");
        assert_eq!(tx, (c.tx_packets, c.tx_bytes), "{ifname} tx");
    }
    check_states(&allowed.iter().collect::<Vec<_>>(), 7);
}

#[test]
fn nsg_tuples_add_up_to_the_tcp_and_udp_records() {
    let (tuples, hubble, counters) = run("nsg");
    // The Hubble log of the run matches the counters; the NSG tuples match
    // its TCP and UDP records (NSG has no letter for other protocols).
    let veths: Vec<(&str, Counters)> = counters.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    output::assert_records_match_counters(&hubble, &veths);
    for t in &tuples {
        assert_eq!(t.fields.len(), 13, "{:?}", t.fields);
        assert!(
            t.num(0) > 1_700_000_000 && t.num(0) < 1_700_000_000_000,
            "time in seconds"
        );
        assert!(["T", "U"].contains(&t.fields[5].as_str()));
        assert!(["I", "O"].contains(&t.fields[6].as_str()));
    }
    let (denied, allowed): (Vec<&Tuple>, Vec<&Tuple>) = tuples.iter().partition(|t| t.fields[7] == "D");
    assert!(denied.iter().any(|t| t.fields[4] == "9"), "the drop with decision D");
    // The Hubble log's TCP and UDP records on each veth, by hook.
    let mut expected = RxTx::new();
    for r in hubble
        .iter()
        .filter(|r| r.verdict == "FORWARDED" && (r.protocol == "TCP" || r.protocol == "UDP"))
    {
        let e = expected.entry(r.interface.clone()).or_default();
        let side = if r.point == "FROM_ENDPOINT" { &mut e.0 } else { &mut e.1 };
        side.0 += r.packets;
        side.1 += r.bytes;
    }
    let allowed: Vec<Tuple> = allowed
        .into_iter()
        .map(|t| Tuple {
            interface: t.interface.clone(),
            fields: t.fields.clone(),
        })
        .collect();
    assert_eq!(sums(&allowed, 6, 9), expected);
    check_states(&allowed.iter().collect::<Vec<_>>(), 8);
}

/// Every PT1H.json under `dir`.
fn blobs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "PT1H.json") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn vnet_to_a_directory_writes_the_storage_account_s_hourly_blobs() {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-blobs-{}", node.id));
    let (blob_dir, lines) = (dir.join("blobs"), dir.join("tuples.log"));
    std::fs::create_dir_all(&blob_dir).unwrap();
    let config = dir.join("flowlogs.yaml");
    std::fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: tuples\n    filePath: {}\n    format: vnet\n",
            lines.display()
        ),
    )
    .unwrap();
    let output = format!("{}/", blob_dir.display());
    let agent = node.capture(&[
        "--output-format",
        "vnet",
        "--output",
        &output,
        "--flow-logs-config",
        config.to_str().unwrap(),
        "--node-name",
        "node-a",
    ]);
    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, 5001).into(), 100_000, 10_000);
    udp_echo(&p2.ns, &p1.ns, (p1.ipv4, 5353).into(), 10, 300);
    assert!(agent.stop().status.success());
    let found = blobs(&blob_dir);
    assert!(!found.is_empty(), "no blob written");
    let mut from_blobs = Vec::new();
    for path in &found {
        let relative = path.strip_prefix(&blob_dir).unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = relative.split('/').collect();
        assert_eq!(&parts[..3], ["resourceId=", "HUBCAP", "NODES"], "{relative}");
        assert_eq!(parts[3], "NODE-A");
        for (part, prefix) in parts[4..10].iter().zip(["y=", "m=", "d=", "h=", "m=00", "macAddress="]) {
            assert!(part.starts_with(prefix), "{relative}");
        }
        // One whole JSON document per blob, however many appends it took.
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 1);
        from_blobs.extend(tuples_of(&text, "vnet"));
    }
    let from_lines = tuples_of(&std::fs::read_to_string(&lines).unwrap(), "vnet");
    let key = |t: &Tuple| t.fields.join(",");
    let mut a: Vec<String> = from_blobs.iter().map(key).collect();
    let mut b: Vec<String> = from_lines.iter().map(key).collect();
    a.sort();
    b.sort();
    assert!(!a.is_empty());
    assert_eq!(a, b, "the blobs hold the tuples of the line log");
    let _ = std::fs::remove_dir_all(&dir);
}

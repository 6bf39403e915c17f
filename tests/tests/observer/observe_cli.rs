//! `hubcap observe` against the live agent and against its file: the same
//! output for the same flags; the file read back byte for byte; `-f`
//! printing new flows as they come.

use std::process::Command;

use hubcap_tests::{
    agent::hubcap_bin,
    output::{self, Record},
    traffic::ping,
};

use crate::fixture::{Fixture, time_ns};

/// Flags of one comparison, and whether it keeps to the test's veths
/// (`true`) or to its subnets: either way nothing else on the machine can
/// slip in between the live call and the file call.
type Flags = fn(&Fixture) -> (Vec<String>, bool);

pub const LIVE_VS_FILE: &[(&str, Flags)] = &[
    ("live_vs_file_all_json", |_| (args(&["--all", "-o", "json"]), true)),
    ("live_vs_file_last_udp", |_| {
        (args(&["--last", "5", "--protocol", "udp", "-o", "json"]), true)
    }),
    ("live_vs_file_first_to_ip", |f| {
        (
            args(&["--first", "3", "--to-ip", &f.node.pods[2].ipv4.to_string()]),
            false,
        )
    }),
    ("live_vs_file_syn_table", |_| {
        (
            args(&["--all", "--to-port", "5001", "--tcp-flags", "SYN", "-o", "table"]),
            true,
        )
    }),
    ("live_vs_file_dropped", |_| {
        (args(&["--all", "--verdict", "DROPPED"]), false)
    }),
    ("live_vs_file_ingress_on_interface", |f| {
        (
            args(&[
                "--all",
                "--traffic-direction",
                "ingress",
                "--interface",
                &f.node.pods[0].host_if,
            ]),
            false,
        )
    }),
    ("live_vs_file_last_ip_compact", |f| {
        (
            args(&["--last", "4", "--ip", &f.node.pods[2].ipv4.to_string(), "-o", "compact"]),
            true,
        )
    }),
    ("live_vs_file_rfc3339_window", |f| {
        // A window by the records' own times.
        let mut by_time: Vec<&Record> = f.records.iter().collect();
        by_time.sort_by_key(|r| time_ns(r));
        let text = |r: &Record| r.json["time"].as_str().unwrap().to_owned();
        let since = text(by_time[by_time.len() / 4]);
        let until = text(by_time[by_time.len() * 3 / 4]);
        (args(&["--since", &since, "--until", &until, "-o", "json"]), true)
    }),
    ("live_vs_file_relative_since", |_| {
        (args(&["--since", "10m", "--protocol", "tcp"]), true)
    }),
];

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

fn observe(source: &[String], extra: &[String]) -> String {
    let out = Command::new(hubcap_bin())
        .arg("observe")
        .args(source)
        .args(extra)
        .output()
        .expect("hubcap observe");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn live(f: &Fixture) -> Vec<String> {
    args(&["--server", &f.server()])
}

fn from_file(f: &Fixture) -> Vec<String> {
    args(&["--input-file", f.out_file.to_str().unwrap()])
}

pub fn live_vs_file(f: &Fixture, flags: Flags) {
    let (mut extra, on_veths) = flags(f);
    if on_veths {
        for v in &f.veths {
            extra.extend(args(&["--interface", v]));
        }
    } else {
        extra.extend(args(&["--from-ip", &f.ours_v4, "--from-ip", &f.ours_v6]));
    }
    let a = observe(&live(f), &extra);
    assert!(!a.is_empty(), "{extra:?}");
    assert_eq!(a, observe(&from_file(f), &extra), "{extra:?}");
}

/// Reading the exporter's file and writing `-o json` gives its lines back,
/// byte for byte.
pub fn file_read_back_byte_for_byte(f: &Fixture) {
    let file_text = std::fs::read_to_string(&f.out_file).unwrap();
    assert_eq!(observe(&from_file(f), &args(&["--all", "-o", "json"])), file_text);
}

pub fn stdin_read_back_byte_for_byte(f: &Fixture) {
    let file_text = std::fs::read_to_string(&f.out_file).unwrap();
    let piped = Command::new(hubcap_bin())
        .args(["observe", "--input-file", "-", "--all", "-o", "json"])
        .stdin(std::fs::File::open(&f.out_file).unwrap())
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), file_text);
}

pub fn compact_line_has_counts(f: &Fixture) {
    let compact = observe(
        &live(f),
        &args(&["--first", "1", "--protocol", "tcp", "--to-port", "5001"]),
    );
    assert!(
        compact.contains(" -> ") && compact.contains("FORWARDED (TCP Flags: SYN) 1 packets"),
        "{compact}"
    );
}

/// `hubcap observe -f` prints new flows as they come. Sends new traffic:
/// runs after the cases that compare with the captured run.
pub fn follow_prints_new_flows(f: &Fixture) {
    let (p1, p2) = (&f.node.pods[0], &f.node.pods[1]);
    let mut following = Command::new(hubcap_bin());
    following.args([
        "observe",
        "--server",
        &f.server(),
        "-f",
        "-o",
        "json",
        "--protocol",
        "icmpv4",
    ]);
    // The two echo requests and two replies, on both veths: 4 B records.
    let lines = hubcap_tests::agent::first_lines(&mut following, 4, || ping(&p2.ns, &p1.ipv4.to_string(), 2));
    let followed = output::parse(&(lines.join("\n") + "\n"));
    assert_eq!(followed.records.len(), 4);
    assert!(
        followed.records.iter().all(|r| r.protocol == "ICMPv4"
            && r.state == "B"
            && [p1.ipv4.to_string(), p2.ipv4.to_string()].contains(&r.src)),
        "{lines:?}"
    );
}

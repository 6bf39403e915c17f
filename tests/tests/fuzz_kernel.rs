//! A short run of the kernel fuzzer (`cargo xtask fuzz` runs 10 million
//! packets): hubcap's loaded tc programs against the host build of the same
//! parser and rules, packet by packet through `BPF_PROG_TEST_RUN`.

use std::process::Command;

use hubcap_tests::{agent::built_bin, require_root};

#[test]
fn the_kernel_programs_agree_with_the_host_parser_on_mutated_packets() {
    require_root();
    let report = std::env::temp_dir().join(format!("hubcap-fuzz-{}.json", hubcap_tests::unique_id()));
    let out = Command::new(built_bin("hubcap-fuzz-kernel"))
        .args(["--packets", "400000", "--failures"])
        .arg(std::env::temp_dir())
        .arg("--report")
        .arg(&report)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run hubcap-fuzz-kernel");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "the kernel fuzzer failed:\n{stdout}\n{stderr}");

    let figures: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).expect("report")).unwrap();
    let _ = std::fs::remove_file(&report);
    let count = |field: &str| {
        figures[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {figures}"))
    };
    assert_eq!(count("packets"), 400_000);
    assert_eq!(count("generated"), 400_000 + count("refused_by_test_run"));
    // Only truncated IPv4/IPv6 frames are refused by the harness: a few percent.
    assert!(count("refused_by_test_run") < 400_000 / 10, "{figures}");
    // The run reached every kind of input and every way a packet can end.
    for kind in [
        "Ipv4",
        "Ipv4Options",
        "Ipv4Fragment",
        "Ipv6",
        "Ipv6ExtensionChain",
        "Ipv6ExtensionLoop",
        "Ipv6Fragment",
        "NonIp",
        "RandomBytes",
    ] {
        assert!(
            figures["inputs"][kind].as_u64().unwrap_or(0) > 1000,
            "{kind}: {figures}"
        );
    }
    for outcome in [
        "Flow",
        "FlowFragment",
        "FlowL4Truncated",
        "NonIp",
        "Truncated",
        "Malformed",
    ] {
        assert!(
            figures["outcomes"][outcome].as_u64().unwrap_or(0) > 100,
            "{outcome}: {figures}"
        );
    }
    assert!(count("batches_with_full_map") > 0, "the map-full path ran: {figures}");
    assert!(count("in_flows") > 0 && count("events") > 0, "{figures}");
    // Port 53 is in the generator's pool: DNS payloads were compared too.
    assert!(count("dns_packets") > 1000, "{figures}");
}

//! The image `cargo xtask image` built (`localhost/hubcap:dev`), run by
//! podman the way the DaemonSet runs it: privileged, in the node's network
//! namespace (here the test node's own), writing its flow log to a host
//! directory. The log must match the veths' kernel counters exactly, and
//! SIGTERM to the container (`podman stop`) must end hubcap cleanly with
//! none of its programs or links left in the kernel.

use std::{collections::BTreeSet, process::Command, time::Duration};

use hubcap_tests::{output, require_root, topology::Node, traffic::tcp_transfer, traffic::udp_echo};
use serde_json::Value;

const IMAGE: &str = "localhost/hubcap:dev";

/// `podman` with runc: crun refuses a hybrid cgroup hierarchy such as
/// this kind of machine's.
fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .expect("podman (cargo xtask setup installs it)")
}

/// A container of the test's, removed even when the test fails.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "2", &self.0]);
    }
}

/// The process limits the container gets: open files as this machine
/// allows, and processes (threads) 4,096 at most, far more than hubcap
/// uses. podman's defaults are higher, and raising a limit needs
/// CAP_SYS_RESOURCE, which a sandbox may not grant.
fn limits() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().nth(1).map(str::to_owned))
            .expect("limit")
    };
    let files = hard("Max open files");
    let processes = hard("Max processes").parse::<u64>().map_or(4096, |n| n.min(4096));
    vec![
        format!("--ulimit=nofile={files}:{files}"),
        format!("--ulimit=nproc={processes}:{processes}"),
    ]
}

/// Ids of the links that hold hubcap's programs, and of those programs.
fn hubcap_in_kernel() -> (BTreeSet<u64>, BTreeSet<u64>) {
    let json = |args: &[&str]| -> Vec<Value> {
        let out = Command::new("bpftool").args(args).output().expect("bpftool");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let programs: BTreeSet<u64> = json(&["prog", "show", "--json"])
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("hubcap_")))
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let links = json(&["link", "show", "--json"])
        .iter()
        .filter(|l| l["prog_id"].as_u64().is_some_and(|id| programs.contains(&id)))
        .filter_map(|l| l["id"].as_u64())
        .collect();
    (links, programs)
}

fn logs(name: &str) -> String {
    let out = podman(&["logs", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_image_captures_exactly_and_stops_cleanly() {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-image-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("hubcap-test-{}", node.id);
    let container = Container(name.clone());
    let (network, volume, pattern) = (
        format!("--network=ns:/run/netns/{}", node.ns.name),
        format!("--volume={}:/out", dir.display()),
        node.pattern(),
    );
    let mut args = vec!["run", "--detach", "--name", &name, "--privileged", &network, &volume];
    let limits = limits();
    args.extend(limits.iter().map(String::as_str));
    args.extend([
        IMAGE,
        "run",
        "--interface",
        &pattern,
        "--output",
        "/out/events.log",
        "--grpc-socket",
        "none",
        "--node-name",
        "image-node",
    ]);
    let started = podman(&args);
    assert!(
        started.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while logs(&container.0).matches("attached").count() < node.pods.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "not attached: {}",
            logs(&container.0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (links, programs) = hubcap_in_kernel();
    assert!(
        !programs.is_empty() && !links.is_empty(),
        "hubcap's programs are attached through links"
    );

    node.up();
    let (p1, p2) = (&node.pods[0], &node.pods[1]);
    tcp_transfer(&p1.ns, &p2.ns, (p2.ipv4, 5001).into(), 200_000, 20_000);
    udp_echo(&p2.ns, &p1.ns, (p1.ipv4, 5353).into(), 20, 300);
    let counters: Vec<_> = node
        .pods
        .iter()
        .map(|p| (p.host_if.as_str(), node.settled_counters(&p.host_if)))
        .collect();

    // SIGTERM, as the kubelet sends it.
    let stopped = podman(&["stop", "--time", "20", &name]);
    assert!(
        stopped.status.success(),
        "podman stop: {}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let exit = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(String::from_utf8_lossy(&exit.stdout).trim(), "0", "{}", logs(&name));
    assert!(
        logs(&name).contains("stopped"),
        "hubcap said it stopped: {}",
        logs(&name)
    );

    let text = std::fs::read_to_string(dir.join("events.log")).expect("the flow log on the host");
    let records = output::parse(&text).records;
    assert!(records.iter().all(|r| r.json["node_name"] == "image-node"));
    output::assert_records_match_counters(&records, &counters);

    let (links_after, programs_after) = hubcap_in_kernel();
    assert!(links.is_disjoint(&links_after), "links left: {links_after:?}");
    assert!(
        programs.is_disjoint(&programs_after),
        "programs left: {programs_after:?}"
    );
    drop(container);
    let _ = std::fs::remove_dir_all(&dir);
}

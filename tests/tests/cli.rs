//! Bad invocations fail at once, with a clear message and a non-zero exit,
//! before anything is attached.

use std::{os::unix::process::CommandExt as _, process::Command};

use hubcap_tests::{agent::hubcap_bin, require_root};

fn hubcap(args: &[&str]) -> (i32, String) {
    let out = Command::new(hubcap_bin()).args(args).output().expect("run hubcap");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn help_and_version() {
    let (code, text) = hubcap(&["--help"]);
    assert_eq!(code, 0);
    assert!(text.contains("run"), "{text}");
    let (code, text) = hubcap(&["run", "--help"]);
    assert_eq!(code, 0);
    for option in [
        "--interface",
        "--output",
        "--node-name",
        "--report-interval",
        "--idle-timeout",
        "--attach-mode",
    ] {
        assert!(text.contains(option), "{option} missing from help");
    }
    let (code, text) = hubcap(&["--version"]);
    assert_eq!(code, 0);
    assert!(text.starts_with("hubcap "), "{text}");
}

#[test]
fn bad_arguments_are_rejected() {
    for args in [
        &["run", "--attach-mode", "xdp"][..],
        &["run", "--report-interval", "-1"],
        &["run", "--bogus"],
        &["capture"],
    ] {
        let (code, text) = hubcap(args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains("error"), "{text}");
    }
}

#[test]
fn nonexistent_interface_is_an_error() {
    require_root();
    let (code, text) = hubcap(&["run", "--interface", "hcnosuch0"]);
    assert_eq!(code, 1);
    assert!(text.contains("no such interface: hcnosuch0"), "{text}");
    assert!(!text.contains("attached"), "nothing may be attached: {text}");
}

#[test]
fn unwritable_output_is_an_error() {
    require_root();
    let (code, text) = hubcap(&["run", "--interface", "lo", "--output", "/proc/hubcap/events.log"]);
    assert_eq!(code, 1);
    assert!(text.contains("cannot write to /proc/hubcap/events.log"), "{text}");
    assert!(!text.contains("attached"), "{text}");
}

#[test]
fn missing_privileges_are_an_error() {
    require_root();
    // As nobody: no capabilities at all.
    let out = Command::new(hubcap_bin())
        .args(["run"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run hubcap");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("hubcap needs root") && text.contains("CAP_NET_ADMIN"),
        "{text}"
    );
}

#[test]
fn bad_metrics_address_is_an_error() {
    require_root();
    // Refused with the usage errors, before anything is loaded.
    let (code, text) = hubcap(&["run", "--interface", "lo", "--metrics-listen", "not-an-address"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--metrics-listen") && text.contains("want IP:PORT, [IPv6]:PORT or :PORT"),
        "{text}"
    );
    assert!(!text.contains("attached"), "{text}");
    // A well-formed address that cannot be bound fails at start.
    let (code, text) = hubcap(&["run", "--interface", "lo", "--metrics-listen", "192.0.2.1:9965"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cannot serve metrics on 192.0.2.1:9965"), "{text}");
    assert!(!text.contains("attached"), "{text}");
}

#[test]
fn kubernetes_on_with_an_unreachable_api_server_is_an_error() {
    require_root();
    // In a namespace of its own: nothing listens on its loopback.
    let ns = hubcap_tests::netns::Netns::new(format!("hubcap-{}-cli", hubcap_tests::unique_id()));
    let kubeconfig = std::env::temp_dir().join(format!("hubcap-kubeconfig-{}", ns.name));
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1
kind: Config
clusters:
- name: gone
  cluster: {server: 'https://127.0.0.1:7443', insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: t}
contexts:
- name: c
  context: {cluster: gone, user: u}
current-context: c
",
    )
    .unwrap();
    let out = ns
        .command(hubcap_bin().to_str().unwrap())
        .args([
            "run",
            "-i",
            "lo",
            "--grpc-socket",
            "none",
            "--kubernetes",
            "on",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&kubeconfig);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the Kubernetes API server https://127.0.0.1:7443/ is not reachable"),
        "{text}"
    );
    assert!(!text.contains("attached"), "{text}");
}

#[test]
fn kubernetes_on_without_a_cluster_is_an_error_and_auto_runs_without() {
    require_root();
    // An unknown drop reason fails right after the Kubernetes step.
    let run = |mode: &str| {
        Command::new(hubcap_bin())
            .args([
                "run",
                "-i",
                "lo",
                "--grpc-socket",
                "none",
                "--kubernetes",
                mode,
                "--drop-reasons",
                "NO_SUCH",
            ])
            .env("HOME", "/nonexistent")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    };
    let on = run("on");
    let text = String::from_utf8_lossy(&on.stderr);
    assert_eq!(on.status.code(), Some(1));
    assert!(text.contains("no Kubernetes cluster is configured"), "{text}");
    // auto gets past Kubernetes, and fails later.
    let auto = run("auto");
    let text = String::from_utf8_lossy(&auto.stderr);
    assert_eq!(auto.status.code(), Some(1));
    assert!(text.contains("unknown drop reason \"NO_SUCH\""), "{text}");
}

#[test]
fn bad_flow_logs_config_is_an_error_before_capture() {
    require_root();
    let dir = std::env::temp_dir().join(format!("hubcap-cli-flowlogs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("flowlogs.yaml");
    let cases = [
        (
            "flowLogs:\n  - name: a\n    filePath: /dev/null\n    includeFilters:\n      - source_pood: [x]\n",
            "source_pood",
        ),
        (
            "flowLogs:\n  - name: a\n    filePath: /dev/null\n    fieldMask: [sauce]\n",
            "sauce",
        ),
        (
            "flowLogs:\n  - name: a\n    filePath: /proc/hubcap/no.log\n",
            "cannot write to /proc/hubcap/no.log",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&config, text).unwrap();
        let (code, out) = hubcap(&[
            "run",
            "--interface",
            "lo",
            "--flow-logs-config",
            config.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(expected) && out.contains("flow log \"a\""),
            "{expected}: {out}"
        );
        assert!(!out.contains("attached"), "nothing may be attached: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts that capture nothing or store nothing say so, and hubcap still
/// runs (an interface matching the pattern may come later).
#[test]
fn a_pattern_matching_nothing_and_no_stored_output_are_warned() {
    require_root();
    let node = hubcap_tests::topology::Node::new(1);
    let agent = hubcap_tests::agent::Agent::start(&node.ns, &["--interface", "nothing-here*", "--output", "none"]);
    agent.wait_for_log(
        "--interface matches no interface yet: capture starts on it when one appears pattern=\"nothing-here*\"",
        std::time::Duration::from_secs(1),
    );
    agent.wait_for_log(
        "--output none and no flow logs configured",
        std::time::Duration::from_secs(1),
    );
    assert!(agent.stop().status.success());
}

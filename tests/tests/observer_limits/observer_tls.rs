//! The Observer API on TCP with TLS and client certificates: `hubcap
//! observe` with the right certificates gets flows; without a client
//! certificate, or without TLS, it is refused.

use std::{path::Path, process::Output};

use hubcap_tests::{agent::hubcap_bin, netns::Netns, require_root, topology::Node, traffic::ping};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA, a server certificate for `localhost`, a client certificate; PEMs in `dir`.
fn write_certificates(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    for (name, san) in [("server", "localhost"), ("client", "observer-client")] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![san.to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn observe(ns: &Netns, args: &[&str]) -> Output {
    ns.command(hubcap_bin().to_str().unwrap())
        .arg("observe")
        .args(args)
        .output()
        .expect("hubcap observe")
}

#[test]
fn tls_listener_requires_client_certificates() {
    require_root();
    let node = Node::new(2);
    let dir = std::env::temp_dir().join(format!("hubcap-tls-{}", node.id));
    std::fs::create_dir_all(&dir).unwrap();
    write_certificates(&dir);
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let agent = node.capture(&[
        "--grpc-socket",
        "none",
        "--grpc-listen",
        "127.0.0.1:4244",
        "--grpc-tls-cert",
        &cert,
        "--grpc-tls-key",
        &key,
        "--grpc-tls-client-ca",
        &ca,
    ]);
    node.up();
    ping(&node.pods[0].ns, &node.pods[1].ipv4.to_string(), 2);

    let (client_cert, client_key) = (file("client.pem"), file("client.key"));
    let tls = [
        "--server",
        "127.0.0.1:4244",
        "--tls",
        "--tls-ca-cert-files",
        &ca,
        "--tls-server-name",
        "localhost",
    ];
    let mut with_cert = tls.to_vec();
    with_cert.extend([
        "--tls-client-cert-file",
        &client_cert,
        "--tls-client-key-file",
        &client_key,
    ]);
    with_cert.extend(["--all", "--protocol", "icmpv4", "-o", "json"]);
    // Flows reach the ring within the agent's 100 ms drain.
    let mut out = observe(&node.ns, &with_cert);
    for _ in 0..20 {
        if out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        out = observe(&node.ns, &with_cert);
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8(out.stdout).unwrap();
    // Two echo requests and two replies, each seen on both veths: at least
    // the B record of each of those four flow directions.
    assert!(lines.lines().count() >= 4, "{lines}");
    assert!(lines.lines().all(|l| l.contains("\"ICMPv4\"")), "{lines}");

    let mut no_client_cert = tls.to_vec();
    no_client_cert.push("--all");
    let refused = observe(&node.ns, &no_client_cert);
    assert!(!refused.status.success(), "served without a client certificate");
    let plain = observe(&node.ns, &["--server", "127.0.0.1:4244", "--all"]);
    assert!(!plain.status.success(), "served without TLS");

    // A non-loopback address without TLS is refused at start.
    let insecure = node
        .ns
        .command(hubcap_bin().to_str().unwrap())
        .args([
            "run",
            "--grpc-socket",
            "none",
            "--grpc-listen",
            "0.0.0.0:4245",
            "-i",
            "lo",
        ])
        .output()
        .unwrap();
    assert_eq!(insecure.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&insecure.stderr).contains("without TLS"),
        "{}",
        String::from_utf8_lossy(&insecure.stderr)
    );

    assert!(agent.stop().status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

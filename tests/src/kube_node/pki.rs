//! The node's certificates (EC P-256, openssl): a CA, the API server's
//! serving certificate, the kubelet's, and a client certificate and
//! kubeconfig for each component and for the admin.

use std::process::Command;

use super::{KubeNode, run};

/// Clients: (file name, subject).
const CLIENTS: &[(&str, &str)] = &[
    (
        "apiserver-kubelet-client",
        "/CN=kube-apiserver-kubelet-client/O=system:masters",
    ),
    ("admin", "/CN=hubcap-test-admin/O=system:masters"),
    ("controller-manager", "/CN=system:kube-controller-manager"),
    ("scheduler", "/CN=system:kube-scheduler"),
    ("kube-proxy", "/CN=system:kube-proxy"),
];

/// openssl's steps as shell functions: `key NAME`, `cert NAME SUBJECT
/// USAGE [SAN]` (signed by `ca.crt`/`ca.key` in the same directory).
const FUNCTIONS: &str = "set -e
         key() { openssl ecparam -name prime256v1 -genkey -noout -out $1.key; }
         cert() { # NAME SUBJECT USAGE [SAN]
           key $1
           openssl req -new -key $1.key -subj \"$2\" -out $1.csr
           { echo basicConstraints=critical,CA:FALSE
             echo keyUsage=critical,digitalSignature,keyEncipherment
             echo extendedKeyUsage=$3
             [ -z \"$4\" ] || echo subjectAltName=$4; } > $1.ext
           openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile $1.ext -out $1.crt 2>/dev/null
           rm $1.csr $1.ext
         }
";

/// A control-plane node's: a new CA, the service-account keys and every
/// component's certificate and kubeconfig.
pub fn write(node: &KubeNode) {
    let dir = node.state().join("pki");
    std::fs::create_dir_all(&dir).expect("pki dir");
    let (name, ip) = (&node.name, node.node_ip);
    let mut script = String::from(FUNCTIONS);
    script.push_str(
        "key ca
         openssl req -x509 -new -key ca.key -subj /CN=hubcap-test-ca -days 30 -out ca.crt \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature
         key sa
         openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
        ",
    );
    script.push_str(&format!(
        "cert apiserver /CN=kube-apiserver serverAuth DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:{name},DNS:localhost,IP:10.96.0.1,IP:{ip},IP:127.0.0.1\n\
         cert kubelet-serving /CN=system:node:{name}/O=system:nodes serverAuth DNS:{name},IP:{ip},IP:127.0.0.1\n\
         cert kubelet /CN=system:node:{name}/O=system:nodes clientAuth\n"
    ));
    for (file, subject) in CLIENTS {
        script.push_str(&format!("cert {file} {subject} clientAuth\n"));
    }
    run(Command::new("sh").arg("-c").arg(&script).current_dir(&dir));
    kubeconfigs(
        &dir,
        &node.name,
        node.node_ip,
        &["admin", "kubelet", "controller-manager", "scheduler", "kube-proxy"],
    );
}

/// A worker's: the kubelet's serving and client certificates for its own
/// name and address, signed by the control plane's CA, and kubeconfigs
/// (kubelet, kube-proxy, admin) for the control plane's API server.
pub fn write_worker(node: &KubeNode, plane: &KubeNode) {
    let dir = node.state().join("pki");
    std::fs::create_dir_all(&dir).expect("pki dir");
    let plane_dir = plane.state().join("pki");
    for file in ["ca.crt", "ca.key"] {
        std::fs::copy(plane_dir.join(file), dir.join(file)).expect("the control plane's CA");
    }
    let (name, ip) = (&node.name, node.node_ip);
    let mut script = String::from(FUNCTIONS);
    script.push_str(&format!(
        "cert kubelet-serving /CN=system:node:{name}/O=system:nodes serverAuth DNS:{name},IP:{ip},IP:127.0.0.1\n\
         cert kubelet /CN=system:node:{name}/O=system:nodes clientAuth\n"
    ));
    for (file, subject) in CLIENTS.iter().filter(|(f, _)| ["admin", "kube-proxy"].contains(f)) {
        script.push_str(&format!("cert {file} {subject} clientAuth\n"));
    }
    run(Command::new("sh").arg("-c").arg(&script).current_dir(&dir));
    kubeconfigs(&dir, &plane.name, plane.node_ip, &["admin", "kubelet", "kube-proxy"]);
}

/// `USER.kubeconfig` for each of `users` (certificate `USER.crt`), for the
/// API server at `ip` of cluster `name`.
fn kubeconfigs(dir: &std::path::Path, name: &str, ip: std::net::Ipv4Addr, users: &[&str]) {
    for user in users {
        let p = |f: &str| dir.join(f).display().to_string();
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster: {{server: \"https://{ip}:6443\", certificate-authority: {ca}}}
users:
- name: {user}
  user: {{client-certificate: {crt}, client-key: {key}}}
contexts:
- name: {user}
  context: {{cluster: {name}, user: {user}}}
current-context: {user}
",
            ca = p("ca.crt"),
            crt = p(&format!("{user}.crt")),
            key = p(&format!("{user}.key")),
        );
        std::fs::write(dir.join(format!("{user}.kubeconfig")), kubeconfig).expect("kubeconfig");
    }
}

//! The node's daemons' flags and configuration files.

use std::{net::Ipv4Addr, path::Path};

use super::{CLUSTER_CIDR, SERVICE_CIDR};

pub fn apiserver_args(bin: &Path, node_ip: Ipv4Addr, pki: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut args = vec![bin.display().to_string()];
    args.extend([
        "--etcd-servers=http://127.0.0.1:2379".to_owned(),
        "--bind-address=0.0.0.0".to_owned(),
        "--secure-port=6443".to_owned(),
        format!("--advertise-address={node_ip}"),
        format!("--tls-cert-file={}", pki("apiserver.crt")),
        format!("--tls-private-key-file={}", pki("apiserver.key")),
        format!("--client-ca-file={}", pki("ca.crt")),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        format!("--service-account-key-file={}", pki("sa.pub")),
        format!("--service-account-signing-key-file={}", pki("sa.key")),
        "--authorization-mode=Node,RBAC".to_owned(),
        "--enable-admission-plugins=NodeRestriction".to_owned(),
        "--allow-privileged=true".to_owned(),
        format!("--kubelet-client-certificate={}", pki("apiserver-kubelet-client.crt")),
        format!("--kubelet-client-key={}", pki("apiserver-kubelet-client.key")),
        format!("--kubelet-certificate-authority={}", pki("ca.crt")),
        "--kubelet-preferred-address-types=InternalIP,Hostname".to_owned(),
        "--profiling=false".to_owned(),
    ]);
    args
}

/// With node IPAM (pod CIDRs) and the ServiceAccount token controller.
pub fn controller_manager_args(bin: &Path, pki: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut args = component(bin, &pki("controller-manager.kubeconfig"));
    args.extend([
        "--controllers=*".to_owned(),
        "--use-service-account-credentials=true".to_owned(),
        format!("--service-account-private-key-file={}", pki("sa.key")),
        format!("--root-ca-file={}", pki("ca.crt")),
        format!("--cluster-signing-cert-file={}", pki("ca.crt")),
        format!("--cluster-signing-key-file={}", pki("ca.key")),
        "--allocate-node-cidrs=true".to_owned(),
        format!("--cluster-cidr={CLUSTER_CIDR}"),
        "--node-cidr-mask-size=24".to_owned(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
    ]);
    args
}

pub fn scheduler_args(bin: &Path, pki: &dyn Fn(&str) -> String) -> Vec<String> {
    component(bin, &pki("scheduler.kubeconfig"))
}

/// A control-plane component on the node's loopback, without leader
/// election or profiling, authenticated by `kubeconfig`.
fn component(bin: &Path, kubeconfig: &str) -> Vec<String> {
    vec![
        bin.display().to_string(),
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--leader-elect=false".to_owned(),
        "--profiling=false".to_owned(),
    ]
}

/// The CNI bridge plugin on `cni0`, addresses from host-local in the
/// node's pod CIDR (`10.244.N.0/24`, its gateway `.1`). No masquerade:
/// pods on other nodes see each other's own addresses, as with a real CNI.
pub fn cni(dir: &Path, pod_cidr: &str) -> String {
    let net = pod_cidr.split('/').next().expect("a CIDR");
    let gateway = format!("{}.1", net.rsplit_once('.').expect("an IPv4 CIDR").0);
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "hubcap-test-pods",
  "plugins": [
    {{
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{pod_cidr}", "gateway": "{gateway}"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}],
        "dataDir": "{ipam}"
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"#,
        ipam = dir.join("ipam").display()
    )
}

/// containerd's CRI with runc (crun refuses this machine's hybrid cgroup
/// hierarchy); `restrict_oom_score_adj` because lowering oom_score_adj
/// needs CAP_SYS_RESOURCE, which this machine lacks.
pub fn containerd(dir: &Path, cni: &Path) -> String {
    let socket = dir.join("containerd.sock");
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:hubcap-test"
  disable_apparmor = true
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "/run/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}/net.d"
    max_conf_num = 1
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
        dir = dir.display(),
        cni = cni.display(),
    )
}

/// cgroupfs without per-QoS cgroups, no swap check, no oom_score_adj,
/// open files at the hard limit, eviction thresholds a test machine meets.
pub fn kubelet(node_ip: Ipv4Addr, socket: &Path, state: &Path, pki: &dyn Fn(&str) -> String) -> String {
    // The hard limit: the kubelet may not raise its own past it.
    let max_open_files = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?.to_owned();
            line.split_whitespace().nth(4)?.parse::<u64>().ok()
        })
        .unwrap_or(20_000);
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: {serving_crt}
tlsPrivateKeyFile: {serving_key}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{socket}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
oomScoreAdj: 0
maxOpenFiles: {max_open_files}
volumePluginDir: {plugins}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
serializeImagePulls: false
registerNode: true
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
"#,
        serving_crt = pki("kubelet-serving.crt"),
        serving_key = pki("kubelet-serving.key"),
        ca = pki("ca.crt"),
        socket = socket.display(),
        plugins = state.join("kubelet-plugins").display(),
    )
}

/// iptables mode; conntrack sizes left alone (`maxPerCore: 0`), so it
/// never writes the host-wide `nf_conntrack_max`.
pub fn kube_proxy(node: &str, pki: &dyn Fn(&str) -> String) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {node}
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"#,
        kubeconfig = pki("kube-proxy.kubeconfig"),
    )
}

//! A real Kubernetes node on this machine, for the tests and for
//! `cargo xtask cluster`: etcd, the API server, controller-manager and
//! scheduler, containerd with runc, the kubelet, the CNI bridge plugin and
//! kube-proxy (iptables), all inside a network namespace and a mount
//! namespace of their own. Images are built locally and imported into
//! containerd, as `kind load image-archive` does; pods use
//! `imagePullPolicy: Never`.
//!
//! Why it is built this way (each was an error first, see
//! `../shared/tools/kube-node/README.md`): `ip netns exec` gives every
//! command a new mount namespace and a fresh `/sys` without cgroups, and
//! the kubelet's volume mounts must be visible to containerd; so all node
//! daemons share one persistent mount namespace, entered with `nsenter`.
//!
//! A second node ([`KubeNode::join`]) runs only containerd, the kubelet and
//! kube-proxy, in namespaces of its own, joined to the first node's API
//! server over a veth pair between the two nodes' network namespaces (no
//! traffic through the host's): the first node routes the second's pod
//! CIDR to it, the second routes everything through the first.

mod config;
pub mod images;
mod pki;

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::upstream::tool;

/// The pods' and Services' ranges (inside the nodes' namespaces only);
/// each node's pod CIDR is a /24 of the cluster's, given by the
/// controller-manager.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The node's daemons, in the order they start (and stop in reverse).
const DAEMONS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
];

/// One node. Torn down (every process, mount, namespace, interface and
/// file of its own) when dropped.
pub struct KubeNode {
    /// The network namespace's name, also the node's name.
    pub name: String,
    pub dir: PathBuf,
    pub node_ip: Ipv4Addr,
    /// The next hop of its default route: the host for the control-plane
    /// node, the control-plane node for a worker.
    pub host_ip: Ipv4Addr,
    /// The veth in the host's namespace (the control-plane node only).
    host_veth: Option<String>,
    /// Runs etcd and the control plane (else joined to another's).
    control_plane: bool,
    /// Where the node's mount namespace is bound.
    mnt: PathBuf,
    daemons: Vec<(String, std::process::Child)>,
    /// Created the `k8s.io` cgroups (removed on the way down).
    own_cgroups: bool,
    down: bool,
}

impl KubeNode {
    /// Starts a node named `hckn-<id>` under `dir`, with its own control
    /// plane, and waits until pods can be scheduled on it.
    pub fn up(id: &str, dir: &Path) -> KubeNode {
        Self::start_node(id, dir, None)
    }

    /// Starts a worker named `hckn-<id>` under `dir`, joined to `plane`'s
    /// API server, and waits until pods can be scheduled on it.
    pub fn join(id: &str, dir: &Path, plane: &KubeNode) -> KubeNode {
        Self::start_node(id, dir, Some(plane))
    }

    fn start_node(id: &str, dir: &Path, plane: Option<&KubeNode>) -> KubeNode {
        let started = Instant::now();
        // The control plane's host link is 10.78.N.0/24; a worker's link to
        // it is 10.79.N.0/24 with N of the control plane.
        let octet = |id: &str| {
            (1 + id
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                % 250) as u8
        };
        let (node_ip, host_ip) = match plane {
            None => (Ipv4Addr::new(10, 78, octet(id), 2), Ipv4Addr::new(10, 78, octet(id), 1)),
            Some(plane) => {
                let n = plane.node_ip.octets()[2];
                (Ipv4Addr::new(10, 79, n, 2), Ipv4Addr::new(10, 79, n, 1))
            }
        };
        let mut node = KubeNode {
            host_veth: plane.is_none().then(|| format!("hckn{id}")),
            node_ip,
            host_ip,
            control_plane: plane.is_none(),
            mnt: dir.join("ns/mnt"),
            name: format!("hckn-{id}"),
            dir: dir.to_path_buf(),
            daemons: Vec::new(),
            own_cgroups: !Path::new("/sys/fs/cgroup/pids/k8s.io").exists(),
            down: false,
        };
        fs::create_dir_all(dir.join("logs")).expect("node dir");
        match plane {
            None => node.network(),
            Some(plane) => node.network_behind(plane),
        }
        node.mount_namespace();
        match plane {
            None => {
                pki::write(&node);
                node.start_control_plane();
            }
            Some(plane) => pki::write_worker(&node, plane),
        }
        node.start_containerd();
        images::import_base(&node);
        node.start_kubelet_and_proxy();
        let pod_cidr = node.pod_network();
        if let Some(plane) = plane {
            run(Command::new("ip")
                .args(["-n", &plane.name, "route", "add", &pod_cidr, "via"])
                .arg(node.node_ip.to_string()));
        }
        node.wait_schedulable();
        eprintln!("kube node {} up in {:.1} s", node.name, started.elapsed().as_secs_f64());
        node
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.state().join("pki/admin.kubeconfig")
    }

    fn containerd_socket(&self) -> PathBuf {
        self.state().join("containerd/containerd.sock")
    }

    /// `program` in the node's network and mount namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg(format!("--mount={}", self.mnt.display()))
            .arg("--")
            .arg(program);
        command
    }

    /// The real kubectl against this node's API server (from the host).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(tool("kubectl"))
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl")
    }

    /// kubectl that must succeed; its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        let path = self.dir.join(format!("apply-{}.yaml", crate::unique_id()));
        fs::write(&path, yaml).expect("manifest");
        self.kubectl_ok(&["apply", "-f", path.to_str().expect("UTF-8 path")]);
    }

    /// Imports a `docker-archive` tar (`podman save`) into the node's
    /// containerd.
    pub fn load_image_archive(&self, tar: &Path) {
        let socket = self.containerd_socket();
        let out = Command::new("ctr")
            .args([
                "-a",
                socket.to_str().expect("UTF-8"),
                "-n",
                "k8s.io",
                "images",
                "import",
            ])
            .arg(tar)
            .output()
            .expect("ctr");
        assert!(
            out.status.success(),
            "ctr import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Saves the local podman image `tag` and imports it into the node.
    pub fn load_podman_image(&self, tag: &str) {
        images::load_from_podman(self, tag);
    }

    /// The control-plane node: a veth to the host, its default route.
    fn network(&self) {
        let host_veth = self.host_veth.as_deref().expect("the control plane's host veth");
        self.link_to(None, host_veth);
    }

    /// A worker: a veth pair straight between its namespace (`eth0`) and
    /// the control-plane node's, its default route through that node.
    fn network_behind(&self, plane: &KubeNode) {
        let link = format!("w{}", &self.name["hckn-".len()..]);
        self.link_to(Some(&plane.name), &link[..link.len().min(15)]);
    }

    /// The node's namespace, its `eth0` (the node IP) a veth to `outer` in
    /// the namespace `outer_ns` (the host's when `None`), which has the
    /// node's next hop (`host_ip`) and is its default route.
    fn link_to(&self, outer_ns: Option<&str>, outer: &str) {
        let ns = &self.name;
        let (node_cidr, outer_cidr) = (format!("{}/24", self.node_ip), format!("{}/24", self.host_ip));
        let next_hop = self.host_ip.to_string();
        let on_outer = |args: &[&str]| -> Vec<String> {
            let mut step = vec!["ip".to_owned()];
            if let Some(outer_ns) = outer_ns {
                step.extend(["-n".to_owned(), outer_ns.to_owned()]);
            }
            step.extend(args.iter().map(|a| (*a).to_owned()));
            step
        };
        let on_node =
            |args: &[&str]| -> Vec<String> { ["ip", "-n", ns].iter().chain(args).map(|a| (*a).to_owned()).collect() };
        let steps = [
            vec!["ip".to_owned(), "netns".to_owned(), "add".to_owned(), ns.clone()],
            on_outer(&[
                "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]),
            on_outer(&["addr", "add", &outer_cidr, "dev", outer]),
            on_outer(&["link", "set", outer, "up"]),
            on_node(&["link", "set", "lo", "up"]),
            on_node(&["addr", "add", &node_cidr, "dev", "eth0"]),
            on_node(&["link", "set", "eth0", "up"]),
            on_node(&["route", "add", "default", "via", &next_hop]),
        ];
        for step in steps {
            run(Command::new(&step[0]).args(&step[1..]));
        }
        self.forwarding();
    }

    /// Routing and bridged traffic through iptables (kube-proxy's rules).
    fn forwarding(&self) {
        let ns = &self.name;
        let _ = Command::new("modprobe").arg("br_netfilter").status();
        run(Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-q", "-w"])
            .args([
                "net.ipv4.ip_forward=1",
                "net.bridge.bridge-nf-call-iptables=1",
                "net.bridge.bridge-nf-call-ip6tables=1",
            ]));
    }

    /// The mount namespace every node daemon shares: the netns's own
    /// sysfs with the host's cgroups bound back, bpffs, tracefs, a private
    /// `/run`, and `state/var` over `/var`.
    fn mount_namespace(&self) {
        let ns_dir = self.dir.join("ns");
        let var = self.state().join("var");
        for d in ["lib", "log", "tmp"] {
            fs::create_dir_all(var.join(d)).expect("var");
        }
        fs::create_dir_all(ns_dir.join("cg")).expect("ns dir");
        let _ = std::os::unix::fs::symlink("/run", var.join("run"));
        let _ = std::os::unix::fs::symlink("/run/lock", var.join("lock"));
        run(Command::new("chmod").arg("1777").arg(var.join("tmp")));
        run(Command::new("mount").arg("--bind").arg(&ns_dir).arg(&ns_dir));
        run(Command::new("mount").arg("--make-private").arg(&ns_dir));
        fs::write(&self.mnt, "").expect("mnt file");
        let cg = ns_dir.join("cg");
        let script = format!(
            "mount --rbind /sys/fs/cgroup {cg}
             mount -t sysfs -o rw,nosuid,nodev,noexec sysfs /sys
             mount --move {cg} /sys/fs/cgroup
             mount -t bpf -o rw,nosuid,nodev,noexec,mode=700 bpffs /sys/fs/bpf
             [ -d /sys/kernel/tracing ] && mount -t tracefs tracefs /sys/kernel/tracing || true
             [ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug || true
             mount -t tmpfs -o mode=755,size=512m tmpfs /run
             mkdir -p /run/netns /run/lock
             mount --bind {var} /var
             mount --make-rshared /",
            cg = cg.display(),
            var = var.display()
        );
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("unshare")
            .arg(format!("--mount={}", self.mnt.display()))
            .args(["--propagation", "slave", "/bin/sh", "-ec", &script]));
    }

    /// Starts `name` (`argv`) in the node's namespaces, logging to
    /// `logs/NAME.log`.
    fn start(&mut self, name: &str, argv: &[String]) {
        let log = fs::File::create(self.dir.join(format!("logs/{name}.log"))).expect("log");
        let mut command = Command::new("setsid");
        command
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg(format!("--mount={}", self.mnt.display()))
            .arg("--")
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.daemons.push((name.to_owned(), child));
    }

    fn start_control_plane(&mut self) {
        let s = self.state();
        let p = s.join("pki");
        let pki = |f: &str| p.join(f).display().to_string();
        let mut etcd = vec!["etcd".to_owned()];
        etcd.extend(crate::kube::etcd_args(
            &self.name,
            &s.join("etcd").display().to_string(),
        ));
        self.start("etcd", &etcd);
        let apiserver = config::apiserver_args(&tool("kube-apiserver"), self.node_ip, &pki);
        self.wait("etcd", Duration::from_secs(30), |n| {
            n.command("curl")
                .args(["-sf", "http://127.0.0.1:2379/health"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        self.start("kube-apiserver", &apiserver);
        let readyz = format!("https://{}:6443/readyz", self.node_ip);
        let (ca, cert, key) = (pki("ca.crt"), pki("admin.crt"), pki("admin.key"));
        self.wait("kube-apiserver", Duration::from_secs(120), |_| {
            Command::new("curl")
                .args(["-s", "--cacert", &ca, "--cert", &cert, "--key", &key, &readyz])
                .output()
                .is_ok_and(|o| o.stdout == b"ok")
        });
        self.start(
            "kube-controller-manager",
            &config::controller_manager_args(&tool("kube-controller-manager"), &pki),
        );
        self.start("kube-scheduler", &config::scheduler_args(&tool("kube-scheduler"), &pki));
    }

    fn start_containerd(&mut self) {
        let dir = self.state().join("containerd");
        fs::create_dir_all(&dir).expect("containerd dir");
        let cni = self.state().join("cni");
        fs::create_dir_all(cni.join("net.d")).expect("cni dir");
        fs::write(dir.join("config.toml"), config::containerd(&dir, &cni)).expect("containerd config");
        self.start(
            "containerd",
            &strings(&["containerd", "--config", &dir.join("config.toml").display().to_string()]),
        );
        let socket = self.containerd_socket();
        self.wait("containerd", Duration::from_secs(30), |_| {
            Command::new("ctr")
                .arg("-a")
                .arg(&socket)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    }

    fn start_kubelet_and_proxy(&mut self) {
        let s = self.state();
        let pki = |f: &str| s.join("pki").join(f).display().to_string();
        let kubelet_dir = s.join("kubelet");
        fs::create_dir_all(&kubelet_dir).expect("kubelet dir");
        fs::write(
            kubelet_dir.join("config.yaml"),
            config::kubelet(self.node_ip, &self.containerd_socket(), &s, &pki),
        )
        .expect("kubelet config");
        let kubelet = strings(&[
            tool("kubelet").to_str().expect("UTF-8"),
            &format!("--config={}", kubelet_dir.join("config.yaml").display()),
            &format!("--kubeconfig={}", pki("kubelet.kubeconfig")),
            &format!("--root-dir={}", kubelet_dir.display()),
            &format!("--cert-dir={}", kubelet_dir.join("pki").display()),
            &format!("--hostname-override={}", self.name),
            &format!("--node-ip={}", self.node_ip),
            "--v=1",
        ]);
        self.start("kubelet", &kubelet);
        let proxy_dir = s.join("kube-proxy");
        fs::create_dir_all(&proxy_dir).expect("kube-proxy dir");
        fs::write(proxy_dir.join("config.yaml"), config::kube_proxy(&self.name, &pki)).expect("kube-proxy config");
        self.start(
            "kube-proxy",
            &strings(&[
                tool("kube-proxy").to_str().expect("UTF-8"),
                &format!("--config={}", proxy_dir.join("config.yaml").display()),
            ]),
        );
    }

    /// Waits for the node's pod CIDR (the controller-manager's node IPAM
    /// gives it, 10 s after it starts) and writes the CNI configuration for
    /// it, which containerd picks up and the node becomes Ready with.
    fn pod_network(&self) -> String {
        let name = self.name.clone();
        let cidr = || {
            let out = self.kubectl(&["get", "node", &name, "-o", "jsonpath={.spec.podCIDR}"]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        self.wait("a pod CIDR", Duration::from_secs(120), |_| !cidr().is_empty());
        let pod_cidr = cidr();
        let dir = self.state().join("cni");
        fs::write(dir.join("net.d/10-hubcap-test.conflist"), config::cni(&dir, &pod_cidr)).expect("cni");
        pod_cidr
    }

    /// Ready, the `default` ServiceAccount and the root CA ConfigMap.
    fn wait_schedulable(&self) {
        let name = self.name.clone();
        self.wait("the node Ready", Duration::from_secs(120), |n| {
            n.kubectl(&[
                "get",
                "node",
                &name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .stdout
                == b"True"
        });
        self.wait("the default ServiceAccount", Duration::from_secs(120), |n| {
            n.kubectl(&["-n", "default", "get", "serviceaccount", "default"])
                .status
                .success()
        });
        self.wait("kube-root-ca.crt", Duration::from_secs(120), |n| {
            n.kubectl(&["-n", "default", "get", "configmap", "kube-root-ca.crt"])
                .status
                .success()
        });
    }

    /// Polls `ready` every 200 ms; panics with the daemon logs' tails
    /// after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, ready: impl Fn(&KubeNode) -> bool) {
        let deadline = Instant::now() + timeout;
        while !ready(self) {
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.log_tails());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of every daemon's log, for a failure message.
    pub fn log_tails(&self) -> String {
        DAEMONS
            .iter()
            .map(|d| {
                let text = fs::read_to_string(self.dir.join(format!("logs/{d}.log"))).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!("--- {d}\n{}", lines[lines.len().saturating_sub(8)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops everything and removes what the node made. Safe to call
    /// twice; also run on drop.
    pub fn down(&mut self) {
        if std::mem::replace(&mut self.down, true) {
            return;
        }
        if self.daemons.iter().any(|(n, _)| n == "kube-apiserver") {
            let _ = self.kubectl(&[
                "delete",
                "daemonsets,deployments,replicasets,pods",
                "--all",
                "--all-namespaces",
                "--grace-period=1",
                "--wait=false",
            ]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && !self.kubectl(&["get", "pods", "-A", "--no-headers"]).stdout.is_empty() {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        let worker_with_kubelet = !self.control_plane && self.daemons.iter().any(|(n, _)| n == "kubelet");
        let on_this_node = format!("spec.nodeName={}", self.name);
        let delete_pods = |n: &KubeNode, how: &[&str]| {
            let mut args = vec![
                "delete",
                "pods",
                "-A",
                "--field-selector",
                &on_this_node,
                "--request-timeout=5s",
            ];
            args.extend(how);
            n.kubectl(&args)
        };
        if worker_with_kubelet {
            // Its pods go while its kubelet can still confirm it.
            let _ = delete_pods(self, &["--grace-period=1", "--wait=false"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline
                && self
                    .kubectl(&[
                        "get",
                        "pods",
                        "-A",
                        "--field-selector",
                        &on_this_node,
                        "--no-headers",
                        "--request-timeout=5s",
                    ])
                    .stdout
                    .iter()
                    .any(|b| !b.is_ascii_whitespace())
            {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        self.stop_daemon("kube-proxy");
        self.stop_daemon("kubelet");
        if worker_with_kubelet {
            // Gone from the cluster, with whatever a DaemonSet put back.
            let _ = self.kubectl(&["delete", "node", &self.name, "--wait=false", "--request-timeout=5s"]);
            let _ = delete_pods(self, &["--force", "--grace-period=0"]);
        }
        self.remove_containers();
        self.stop_daemon("containerd");
        // Shims and container processes outlive containerd; they are in
        // the node's namespaces.
        self.kill_namespace_members();
        for daemon in ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"] {
            self.stop_daemon(daemon);
        }
        self.kill_namespace_members();
        let ns_dir = self.dir.join("ns");
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("umount").arg(&ns_dir).status();
        // Mounts the kubelet made under the state dir (pod volumes).
        if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
            let root = self.dir.display().to_string();
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&root))
                .collect();
            ours.sort_by(|a, b| b.cmp(a));
            for m in ours {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        // A worker's link to the control plane went with its namespace.
        if let Some(veth) = &self.host_veth {
            let _ = Command::new("ip")
                .args(["link", "del", veth])
                .stderr(Stdio::null())
                .status();
        }
        if self.own_cgroups {
            remove_cgroups();
        }
        if !fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| m.contains(&*self.dir.to_string_lossy())) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// SIGTERM to the daemon's process group, then SIGKILL after 10 s.
    fn stop_daemon(&mut self, name: &str) {
        let Some(at) = self.daemons.iter().position(|(n, _)| n == name) else {
            return;
        };
        let (_, mut child) = self.daemons.remove(at);
        // setsid made the daemon (nsenter execs it) a process group leader.
        let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }

    fn remove_containers(&self) {
        let socket = self.containerd_socket();
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .arg("-a")
                .arg(&socket)
                .args(["-n", "k8s.io"])
                .args(args)
                .stderr(Stdio::null())
                .output()
        };
        let Ok(tasks) = ctr(&["tasks", "ls", "-q"]) else {
            return;
        };
        for task in String::from_utf8_lossy(&tasks.stdout).lines() {
            let _ = ctr(&["tasks", "kill", "-a", "-s", "SIGKILL", task]);
            let _ = ctr(&["tasks", "delete", "-f", task]);
        }
    }

    /// Processes named `comm` in the node's network namespace.
    pub fn pids_named(&self, comm: &str) -> Vec<u32> {
        self.namespace_members()
            .into_iter()
            .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
            .collect()
    }

    /// Every process in the node's network or mount namespace.
    fn namespace_members(&self) -> Vec<u32> {
        let inode = |path: &Path| fs::metadata(path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let net = inode(Path::new(&format!("/run/netns/{}", self.name)));
        let mnt = inode(&self.mnt);
        let Ok(procs) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let me = std::process::id();
        procs
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()))
            .filter(|&pid| pid != me)
            .filter(|pid| {
                let member = |kind: &str, ino: Option<u64>| {
                    ino.is_some_and(|ino| {
                        fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                            .is_ok_and(|l| l.to_string_lossy() == format!("{kind}:[{ino}]"))
                    })
                };
                member("net", net) || member("mnt", mnt)
            })
            .collect()
    }

    /// SIGKILL to every process left in the node's network or mount
    /// namespace.
    fn kill_namespace_members(&self) {
        for pid in self.namespace_members() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        self.down();
    }
}

/// The `k8s.io` cgroups containerd made under every v1 hierarchy.
fn remove_cgroups() {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let root = h.path().join("k8s.io");
        if !root.is_dir() {
            continue;
        }
        let mut dirs = vec![];
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = fs::read_dir(&d) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs `command`; panics with its error output if it fails.
pub(crate) fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

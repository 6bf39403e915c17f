//! DNS for the tests: Debian's dnsmasq serving a test zone in a pod, and
//! `dig` asking from another, its answer read back from what it printed.

use std::{net::IpAddr, path::Path};

use crate::{netns::Netns, upstream::Background};

/// dnsmasq in `ns`, on `listen`, authoritative for `test.` (names it does
/// not know are NXDOMAIN, names outside it REFUSED: it has no upstream),
/// with the addresses in `hosts` (a hosts-file text) and `extra` options;
/// its files in `dir`. Answers carry a 60 s TTL.
pub fn dnsmasq(ns: &Netns, listen: &[IpAddr], dir: &Path, hosts: &str, extra: &[String]) -> Background {
    let hosts_file = dir.join("hosts");
    std::fs::write(&hosts_file, hosts).expect("hosts file");
    let mut args = vec![
        "--keep-in-foreground".to_owned(),
        "--no-resolv".to_owned(),
        "--no-hosts".to_owned(),
        format!("--addn-hosts={}", hosts_file.display()),
        "--local=/test/".to_owned(),
        "--local-ttl=60".to_owned(),
        "--bind-interfaces".to_owned(),
        "--user=root".to_owned(),
        format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
    ];
    args.extend(listen.iter().map(|a| format!("--listen-address={a}")));
    args.extend(extra.iter().cloned());
    Background::start(ns.command("dnsmasq").args(&args))
}

/// Debian's unbound in `ns` on `127.0.0.1@port`, forwarding every question
/// to `127.0.0.1@1`, where nothing listens: each answer is SERVFAIL, as
/// from any resolver whose upstream is gone. Its files in `dir`.
pub fn unbound_with_dead_upstream(ns: &Netns, port: u16, dir: &Path) -> Background {
    let config = dir.join("unbound.conf");
    std::fs::write(
        &config,
        format!(
            "server:\n  interface: 127.0.0.1@{port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"{dir}/unbound.pid\"\n  use-syslog: no\n  logfile: \"\"\n  do-ip6: no\n  module-config: \"iterator\"\nforward-zone:\n  name: \".\"\n  forward-addr: 127.0.0.1@1\n",
            dir = dir.display()
        ),
    )
    .expect("unbound.conf");
    Background::start(ns.command("unbound").args(["-d", "-c"]).arg(&config))
}

/// What dig printed for one question.
#[derive(Debug, Clone)]
pub struct Dig {
    pub name: String,
    pub qtype: String,
    /// `NOERROR`, `NXDOMAIN`, ...; empty when no answer came.
    pub status: String,
    pub query_time_ms: Option<u64>,
    /// Addresses of A and AAAA answers.
    pub addresses: Vec<String>,
    pub output: String,
}

/// `dig @at name qtype` in `ns` (one try, 2 s), with `flags`.
pub fn dig(ns: &Netns, name: &str, qtype: &str, flags: &[&str], at: IpAddr) -> Dig {
    let server = format!("@{at}");
    let out = ns
        .command("dig")
        .args([server.as_str(), name, qtype, "+tries=1", "+time=2"])
        .args(flags)
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_owned();
    let query_time_ms = text
        .split(";; Query time: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok());
    let answers = text.split(";; ANSWER SECTION:\n").nth(1).unwrap_or_default();
    let addresses = answers
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            match fields.as_slice() {
                [_, _, "IN", "A" | "AAAA", address] => Some((*address).to_owned()),
                _ => None,
            }
        })
        .collect();
    Dig {
        name: name.to_owned(),
        qtype: qtype.to_owned(),
        status,
        query_time_ms,
        addresses,
        output: text,
    }
}

/// `/etc/netns/NS/resolv.conf` naming `server`: what `ip netns exec NS`
/// mounts over `/etc/resolv.conf`, so the namespace's own resolver
/// (glibc's getaddrinfo, `host`) asks `server`. Removed when dropped.
pub struct Resolver(std::path::PathBuf);

impl Resolver {
    pub fn new(ns: &Netns, server: IpAddr) -> Resolver {
        let dir = Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {server}\noptions attempts:1 timeout:2\n"),
        )
        .expect("resolv.conf");
        Resolver(dir)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

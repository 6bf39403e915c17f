//! Which interfaces to capture on, and what kind each one is.

use std::{fs, path::Path};

/// What sits behind an interface decides what its two hooks mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceKind {
    /// The host side of a pod's veth (or netkit) pair: packets arriving on
    /// its ingress hook come *from* the endpoint.
    Endpoint,
    /// Anything else (uplink NIC, bridge, tunnel): ingress is from the network.
    Network,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    pub kind: InterfaceKind,
}

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// The interfaces in hubcap's network namespace, from `/sys/class/net`.
pub fn list() -> std::io::Result<Vec<Interface>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/sys/class/net")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // An interface can vanish between readdir and reading its files.
        let Some(iface) = read_interface(&entry.path(), name) else {
            continue;
        };
        out.push(iface);
    }
    out.sort_by_key(|i| i.index);
    Ok(out)
}

fn read_interface(dir: &Path, name: String) -> Option<Interface> {
    let read_number = |file: &str| -> Option<u32> {
        let text = fs::read_to_string(dir.join(file)).ok()?;
        let text = text.trim();
        match text.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        }
    };
    let index = read_number("ifindex")?;
    let flags = read_number("flags")?;
    let kind = if is_endpoint_driver(&name) {
        InterfaceKind::Endpoint
    } else {
        InterfaceKind::Network
    };
    Some(Interface {
        index,
        name,
        up: flags & IFF_UP != 0,
        loopback: flags & IFF_LOOPBACK != 0,
        kind,
    })
}

/// veth and netkit are how CNIs wire pods to the node. The driver name comes
/// from the ethtool ioctl, the same source as `ethtool -i`.
fn is_endpoint_driver(name: &str) -> bool {
    matches!(driver_name(name).as_deref(), Some("veth" | "netkit"))
}

fn driver_name(name: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 160],
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        _pad: [0; 16],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: a datagram socket only used for this ioctl; `req` points at
    // `info`, which outlives the call and is as large as the kernel writes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        libc::close(fd);
        if rc < 0 {
            return None;
        }
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error("invalid interface pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: glob::PatternError,
    },
    #[error("no such interface: {0} (to wait for an interface that does not exist yet, give a pattern such as '{0}*')")]
    NoSuchInterface(String),
}

/// `--interface` names and glob patterns.
#[derive(Debug, Clone)]
pub struct InterfaceSelector {
    patterns: Vec<glob::Pattern>,
}

impl InterfaceSelector {
    pub fn new(patterns: &[String]) -> Result<Self, SelectorError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|source| SelectorError::Pattern {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(InterfaceSelector { patterns })
    }

    /// With no patterns: every up, non-loopback interface. With patterns:
    /// every interface whose name matches one, up or not (a pod's veth is
    /// attached before it comes up, so its first packets are seen).
    pub fn matches(&self, iface: &Interface) -> bool {
        if self.patterns.is_empty() {
            iface.up && !iface.loopback
        } else {
            self.patterns.iter().any(|p| p.matches(&iface.name))
        }
    }

    /// Patterns that match none of `present` (capture waits for such an
    /// interface to appear: worth a warning, not an error).
    pub fn unmatched<'a>(&'a self, present: &[Interface]) -> Vec<&'a str> {
        self.patterns
            .iter()
            .filter(|p| !present.iter().any(|i| p.matches(&i.name)))
            .map(glob::Pattern::as_str)
            .collect()
    }

    /// Plain names (no wildcard) must name an existing interface: a typo
    /// should fail at once rather than capture nothing.
    pub fn check_plain_names_exist(&self, present: &[Interface]) -> Result<(), SelectorError> {
        for p in &self.patterns {
            let s = p.as_str();
            let is_plain = !s.contains(['*', '?', '[']);
            if is_plain && !present.iter().any(|i| i.name == s) {
                return Err(SelectorError::NoSuchInterface(s.to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, up: bool, loopback: bool) -> Interface {
        Interface {
            index: 1,
            name: name.into(),
            up,
            loopback,
            kind: InterfaceKind::Network,
        }
    }

    #[test]
    fn default_selects_up_non_loopback() {
        let s = InterfaceSelector::new(&[]).unwrap();
        assert!(s.matches(&iface("eth0", true, false)));
        assert!(!s.matches(&iface("eth1", false, false)));
        assert!(!s.matches(&iface("lo", true, true)));
    }

    #[test]
    fn patterns_that_match_no_present_interface_are_named() {
        let s = InterfaceSelector::new(&["eth*".into(), "veth*".into()]).unwrap();
        let present = [iface("eth0", true, false), iface("lo", true, true)];
        assert_eq!(s.unmatched(&present), ["veth*"]);
    }

    #[test]
    fn patterns_match_names_and_globs() {
        let s = InterfaceSelector::new(&["eth0".into(), "veth*".into()]).unwrap();
        assert!(s.matches(&iface("eth0", false, false)));
        assert!(s.matches(&iface("veth12ab", true, false)));
        assert!(!s.matches(&iface("eth1", true, false)));
        assert!(s.check_plain_names_exist(&[iface("eth0", true, false)]).is_ok());
        assert!(matches!(s.check_plain_names_exist(&[]), Err(SelectorError::NoSuchInterface(n)) if n == "eth0"));
        assert!(InterfaceSelector::new(&["[".into()]).is_err());
    }

    #[test]
    fn loopback_is_listed_as_network_kind() {
        let all = list().unwrap();
        let lo = all.iter().find(|i| i.name == "lo").expect("every namespace has lo");
        assert!(lo.loopback && lo.kind == InterfaceKind::Network);
    }
}

//! The kernel's drop reasons: their names (from this kernel's BTF, `enum
//! skb_drop_reason`), which of them `--drop-reasons` captures, what each
//! becomes in Hubble's `drop_reason_desc`, and whether this kernel can
//! capture drops at all.

use std::collections::BTreeMap;

use agent_common::DropFilter;
use tracing::warn;

use crate::{
    datapath::{
        DropCapture,
        btf::{KernelBtf, skb_layout},
    },
    proto::flow::DropReason,
};

const PREFIX: &str = "SKB_DROP_REASON_";

/// Reasons that are not drops of interest, left out by default: frees with
/// no reason given, TCP's normal discarding of data it already has or of a
/// closed socket's queues (data already delivered to the socket), and a
/// capture socket's (tcpdump's) copy of a packet it had no room for: the
/// packet itself went on.
pub const NOISE: &[&str] = &[
    "NOT_SPECIFIED",
    "SOCKET_CLOSE",
    "QUEUE_PURGE",
    "PACKET_SOCK_ERROR",
    "TCP_OLD_DATA",
    "TCP_OLD_ACK",
    "TCP_OLD_SEQUENCE",
];

#[derive(Debug, thiserror::Error)]
pub enum DropReasonError {
    #[error("unknown drop reason {name:?} in --drop-reasons; this kernel knows: {known}")]
    Unknown { name: String, known: String },
    #[error("reading hubcap's network namespace: {0}")]
    OwnNetns(std::io::Error),
}

/// Value to name, as this kernel numbers them.
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    names: BTreeMap<u32, String>,
}

impl DropReasons {
    /// `None` on kernels without drop reasons (before Linux 5.17).
    pub fn from_btf(btf: &KernelBtf) -> Option<Self> {
        let values = btf.enum_values("skb_drop_reason")?;
        let names = values
            .into_iter()
            .filter_map(|(name, value)| Some((u32::try_from(value).ok()?, name.strip_prefix(PREFIX)?.to_owned())))
            .filter(|(_, name)| name != "MAX")
            .collect();
        Some(DropReasons { names })
    }

    pub fn from_names(names: impl IntoIterator<Item = (u32, String)>) -> Self {
        DropReasons {
            names: names.into_iter().collect(),
        }
    }

    /// The kernel's name without its prefix (`NETFILTER_DROP`); unknown
    /// values (subsystem reasons) as `SUBSYS_0xNNNNNNNN`.
    pub fn name(&self, value: u32) -> String {
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("SUBSYS_{value:#010x}"))
    }

    /// This kernel's value for a reason name.
    pub fn value(&self, name: &str) -> Option<u32> {
        let name = name.strip_prefix(PREFIX).unwrap_or(name);
        self.names
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(v, _)| *v)
    }

    /// `default` (everything but [`NOISE`]), `all`, `none`, or a
    /// comma-separated list of reason names (with or without the
    /// `SKB_DROP_REASON_` prefix).
    pub fn filter(&self, spec: &str) -> Result<DropFilter, DropReasonError> {
        let mut filter = DropFilter {
            no_socket_reason: self.value("NO_SOCKET").unwrap_or(0),
            ..DropFilter::NONE
        };
        let mut set = |value: u32| {
            if value < 256 {
                filter.reasons[(value / 64) as usize] |= 1 << (value % 64);
            }
        };
        match spec.trim() {
            "none" => {}
            "all" | "default" => {
                for (value, name) in &self.names {
                    if spec.trim() == "all" || !NOISE.contains(&name.as_str()) {
                        set(*value);
                    }
                }
                filter.other_reasons = 1;
            }
            list => {
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let value = self.value(name).ok_or_else(|| DropReasonError::Unknown {
                        name: name.to_owned(),
                        known: self.names.values().cloned().collect::<Vec<_>>().join(", "),
                    })?;
                    set(value);
                }
            }
        }
        Ok(filter)
    }
}

/// Hubble's drop reason for a kernel drop reason (by name). Netfilter and
/// other policy drops become POLICY_DENIED; reasons with no Hubble
/// equivalent stay DROP_REASON_UNKNOWN (the kernel's own name is always in
/// the record's `kernel_drop_reason`). The table is in README.md.
/// Every reason [`hubble_reason`] gives: the `reason` labels of
/// `hubble_drop_total`, which exist at 0 from the start.
pub const HUBBLE_REASONS: [DropReason; 13] = [
    DropReason::PolicyDenied,
    DropReason::UnsupportedL3Protocol,
    DropReason::FibLookupFailed,
    DropReason::InvalidSourceIp,
    DropReason::StaleOrUnroutableIp,
    DropReason::InvalidPacketDropped,
    DropReason::InvalidIpv6ExtensionHeader,
    DropReason::UnknownL4Protocol,
    DropReason::InvalidVni,
    DropReason::PolicyDeny,
    DropReason::FirstLogicalDatagramFragmentNotFound,
    DropReason::TtlExceeded,
    DropReason::Unknown,
];

pub fn hubble_reason(kernel_name: &str) -> DropReason {
    match kernel_name {
        "NETFILTER_DROP" | "BPF_CGROUP_EGRESS" => DropReason::PolicyDenied,
        "IPV6DISABLED" => DropReason::UnsupportedL3Protocol,
        "IP_NOROUTE" | "IP_INNOROUTES" | "IP_OUTNOROUTES" | "IPV6_NOROUTE" => DropReason::FibLookupFailed,
        "IP_RPFILTER" | "IP_INVALID_SOURCE" | "IP_LOCAL_SOURCE" => DropReason::InvalidSourceIp,
        "IP_INADDRERRORS" | "IP_INVALID_DEST" => DropReason::StaleOrUnroutableIp,
        "PKT_TOO_SMALL" | "IP_CSUM" | "IP_INHDR" | "TCP_CSUM" | "UDP_CSUM" | "ICMP_CSUM" | "HDR_TRUNC" => {
            DropReason::InvalidPacketDropped
        }
        "IPV6_BAD_EXTHDR" => DropReason::InvalidIpv6ExtensionHeader,
        "UNHANDLED_PROTO" => DropReason::UnknownL4Protocol,
        "IP_TUNNEL_ECN" | "VXLAN_INVALID_HDR" | "VXLAN_VNI_NOT_FOUND" => DropReason::InvalidVni,
        "TC_INGRESS" | "TC_EGRESS" => DropReason::PolicyDeny,
        "FRAG_REASM_TIMEOUT" | "FRAG_TOO_FAR" => DropReason::FirstLogicalDatagramFragmentNotFound,
        "PKT_TOO_BIG" => DropReason::InvalidPacketDropped,
        "IP_TTL_EXCEEDED" | "TTL_EXCEEDED" => DropReason::TtlExceeded,
        _ => DropReason::Unknown,
    }
}

/// Works out drop capture before anything is loaded: the reasons this
/// kernel has (from its BTF), which to capture, and where the drop program
/// finds `sk_buff` fields. A kernel that cannot do it (no BTF, no drop
/// reasons before Linux 5.17) is said once; hubcap then runs without drops.
/// An unknown reason name is the user's mistake and an error.
pub fn prepare_capture(spec: &str) -> Result<(Option<DropCapture>, DropReasons), DropReasonError> {
    if spec.trim() == "none" {
        return Ok((None, DropReasons::default()));
    }
    let btf = match KernelBtf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            warn!(error = %e, "no kernel BTF: running without drop capture");
            return Ok((None, DropReasons::default()));
        }
    };
    let Some(reasons) = DropReasons::from_btf(&btf) else {
        warn!("this kernel has no drop reasons (Linux before 5.17): running without drop capture");
        return Ok((None, DropReasons::default()));
    };
    let filter = reasons.filter(spec)?;
    let netns = std::fs::metadata("/proc/self/ns/net").map_err(DropReasonError::OwnNetns)?;
    let layout = match skb_layout(&btf, std::os::unix::fs::MetadataExt::ino(&netns) as u32) {
        Ok(layout) => layout,
        Err(e) => {
            warn!(error = %e, "this kernel's sk_buff is not as expected: running without drop capture");
            return Ok((None, reasons));
        }
    };
    Ok((Some(DropCapture { layout, filter }), reasons))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons() -> DropReasons {
        DropReasons::from_names([
            (2, "NOT_SPECIFIED".into()),
            (3, "NO_SOCKET".into()),
            (12, "NETFILTER_DROP".into()),
        ])
    }

    #[test]
    fn filter_specs() {
        let r = reasons();
        let default = r.filter("default").unwrap();
        assert!(!default.captures(2) && default.captures(3) && default.captures(12) && default.captures(300));
        let all = r.filter("all").unwrap();
        assert!(all.captures(2) && all.captures(3));
        let none = r.filter("none").unwrap();
        assert!(!none.captures(3) && !none.captures(300));
        assert_eq!(
            default.no_socket_reason, 3,
            "the kernel program needs NO_SOCKET's value"
        );
        let list = r.filter("netfilter_drop, SKB_DROP_REASON_NO_SOCKET").unwrap();
        assert!(list.captures(12) && list.captures(3) && !list.captures(2) && !list.captures(300));
        let err = r.filter("NO_SUCH").unwrap_err().to_string();
        assert!(err.contains("NO_SUCH") && err.contains("NETFILTER_DROP"), "{err}");
    }

    #[test]
    fn names_and_hubble_mapping() {
        let r = reasons();
        assert_eq!(r.name(12), "NETFILTER_DROP");
        assert_eq!(r.name(0x20000), "SUBSYS_0x00020000");
        assert_eq!(hubble_reason("NETFILTER_DROP"), DropReason::PolicyDenied);
        assert_eq!(hubble_reason("NO_SOCKET"), DropReason::Unknown);
        assert_eq!(hubble_reason("IP_INNOROUTES"), DropReason::FibLookupFailed);
    }

    #[test]
    fn the_running_kernel_names_its_reasons() {
        let btf = KernelBtf::from_sys_fs().expect("BTF");
        let r = DropReasons::from_btf(&btf).expect("Linux 5.17+");
        assert_eq!(r.name(2), "NOT_SPECIFIED");
        assert!(r.value("NETFILTER_DROP").is_some());
        // Every name in the default-noise list exists on this kernel or is
        // simply not captured; none may break the filter.
        assert!(r.filter("default").is_ok());
        assert!(
            r.value("PACKET_SOCK_ERROR").is_some(),
            "capture-socket frees have their own reason"
        );
        // Every reason this kernel can give maps to a label that exists
        // from the start.
        for value in 0..1024 {
            let name = r.name(value);
            assert!(HUBBLE_REASONS.contains(&hubble_reason(&name)), "{name}");
        }
    }
}

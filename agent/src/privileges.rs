//! Checks, before anything is loaded, that hubcap may load eBPF programs and
//! attach them, so a missing privilege is a clear message and not a
//! half-started agent.

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
#[error(
    "hubcap needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or CAP_SYS_ADMIN and \
     CAP_NET_ADMIN); missing: {missing}"
)]
pub struct MissingPrivileges {
    pub missing: String,
}

fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check() -> Result<(), MissingPrivileges> {
    check_capabilities(effective_capabilities())
}

fn check_capabilities(caps: u64) -> Result<(), MissingPrivileges> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingPrivileges {
            missing: missing.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        assert!(check_capabilities(u64::MAX).is_ok());
        assert!(check_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN)).is_ok());
        assert!(check_capabilities((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)).is_ok());
        let e = check_capabilities(1 << CAP_BPF).unwrap_err();
        assert_eq!(e.missing, "CAP_NET_ADMIN, CAP_PERFMON");
        assert!(check_capabilities(0).is_err());
    }
}

//! What a process costs, from /proc.

use std::fs;

/// User + system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// A memory field of /proc/PID/status (given in kB) in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// Private memory the process allocated itself (`RssAnon`): RSS without
/// its mapped files (code) and mapped BPF maps.
pub fn private_rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "RssAnon:")
}

/// The part of RSS that is BPF maps mapped into the process: ring buffers.
/// Their pages are the kernel's (counted in [`bpf_map_bytes`] too), and a
/// ring's data area is mapped twice (so a record can run past its end), so
/// each of its pages counts twice in RSS.
pub fn bpf_mapping_rss_bytes(pid: u32) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_bpf_map = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's header: range, perms, offset, dev, inode, name.
            in_bpf_map = line.ends_with("anon_inode:bpf-map");
        } else if in_bpf_map && first == "Rss:" {
            kb += fields.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    kb * 1024
}

/// Memory the kernel charges for the BPF maps the process holds open
/// (`memlock` in each map fd's fdinfo; for maps without preallocation it
/// follows their use).
pub fn bpf_map_bytes(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Run time and run count of the process's BPF programs of one type (3:
/// tc classifiers, 26: tracing), from their fdinfo (filled while
/// `kernel.bpf_stats_enabled` is 1). `None` when it holds no such program,
/// so that "ran 0 times" is never confused with "is not there".
pub fn bpf_prog_stats(pid: u32, prog_type: u32) -> Option<(u64, u64)> {
    let dir = fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
    let field = |info: &str, name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let infos: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("prog_type:") && field(info, "prog_type:") == u64::from(prog_type))
        .collect();
    (!infos.is_empty()).then(|| {
        infos.iter().fold((0, 0), |(time, count), info| {
            (time + field(info, "run_time_ns:"), count + field(info, "run_cnt:"))
        })
    })
}

pub const PROG_TYPE_SCHED_CLS: u32 = 3;
pub const PROG_TYPE_TRACING: u32 = 26;

/// Runs `f` with the kernel's BPF run-time statistics switched on.
pub fn with_bpf_stats<T>(f: impl FnOnce() -> T) -> T {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = fs::read_to_string(KNOB).unwrap_or_else(|_| "0".into());
    let _ = fs::write(KNOB, "1");
    let out = f();
    let _ = fs::write(KNOB, before.trim());
    out
}

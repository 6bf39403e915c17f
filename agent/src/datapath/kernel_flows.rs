//! The kernel flow map behind the flow table's [`KernelFlows`] view.
//!
//! Whole-map reads and deletions go through `BPF_MAP_LOOKUP_BATCH` and
//! `BPF_MAP_DELETE_BATCH` (Linux 5.6+): thousands of entries per syscall
//! instead of two syscalls per entry, which is what keeps the periodic sweep
//! cheap with hundreds of thousands of flows. aya 0.14 does not wrap them,
//! so they are called here directly. Kernels without them fall back to
//! per-entry calls.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use agent_common::{FlowKey, FlowStats};
use aya::maps::{HashMap, MapData};
use tracing::warn;

use crate::flow_table::{EntryVisitor, KernelFlows};

/// Entries per batch syscall. A hash bucket holding more than this would
/// make the kernel answer ENOSPC, which cannot happen with hash maps of the
/// sizes hubcap uses.
const BATCH: usize = 4096;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid bpf_attr prefix whose pointers refer to
    // buffers the caller keeps alive and sized for `count` entries.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut BatchAttr, size_of::<BatchAttr>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub struct KernelFlowMap {
    map: HashMap<MapData, FlowKey, FlowStats>,
    fd: OwnedFd,
    /// Keys of ended flows, deleted together by [`KernelFlows::flush`].
    doomed: Vec<FlowKey>,
    batch_supported: bool,
}

impl KernelFlowMap {
    pub fn new(map: HashMap<MapData, FlowKey, FlowStats>, fd: OwnedFd) -> Self {
        KernelFlowMap {
            map,
            fd,
            doomed: Vec::new(),
            batch_supported: true,
        }
    }

    /// Hands every entry to `visit`, up to [`BATCH`] at a time. On an error,
    /// `visited` says whether some were handed out already.
    fn lookup_batch(&self, visit: &mut EntryVisitor, visited: &mut bool) -> io::Result<()> {
        let mut pairs = Vec::with_capacity(BATCH);
        let mut keys = vec![FlowKey::default(); BATCH];
        let mut values = vec![FlowStats::default(); BATCH];
        // For hash maps the cursor is a bucket index.
        let mut cursor: u32 = 0;
        let mut first = true;
        loop {
            let mut next: u32 = 0;
            let mut attr = BatchAttr {
                in_batch: if first { 0 } else { &cursor as *const u32 as u64 },
                out_batch: &mut next as *mut u32 as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: BATCH as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..Default::default()
            };
            let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let n = attr.count as usize;
            pairs.clear();
            pairs.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
            if !pairs.is_empty() {
                *visited = true;
                visit(&pairs);
            }
            match result {
                Ok(()) => {}
                // The end of the map (with the last entries in this batch).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(e),
            }
            cursor = next;
            first = false;
        }
    }

    fn delete_batch(&self, keys: &[FlowKey]) -> io::Result<()> {
        let mut rest = keys;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(BATCH)];
            let mut attr = BatchAttr {
                keys: chunk.as_ptr() as u64,
                count: chunk.len() as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..Default::default()
            };
            let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
            let done = attr.count as usize;
            match result {
                Ok(()) => rest = &rest[chunk.len()..],
                // A key already gone stops the batch at that key: skip it.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => rest = &rest[(done + 1).min(rest.len())..],
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The kernel's internal "not supported" code, which bpf() can return.
const ENOTSUPP: i32 = 524;

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP))
}

impl KernelFlows for KernelFlowMap {
    fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        self.map.get(key, 0).ok()
    }

    fn remove(&mut self, key: &FlowKey) {
        self.doomed.push(*key);
    }

    fn flush(&mut self) {
        if self.doomed.is_empty() {
            return;
        }
        let doomed = std::mem::take(&mut self.doomed);
        if self.batch_supported {
            match self.delete_batch(&doomed) {
                Ok(()) => return,
                Err(e) if unsupported(&e) => self.batch_supported = false,
                Err(e) => warn!(error = %e, "deleting ended flows from the kernel map"),
            }
        }
        for key in &doomed {
            // Not found is fine: the entry may already be gone.
            let _ = self.map.remove(key);
        }
    }

    fn visit_entries(&mut self, visit: &mut EntryVisitor) -> bool {
        self.flush();
        if self.batch_supported {
            let mut visited = false;
            match self.lookup_batch(visit, &mut visited) {
                Ok(()) => return true,
                Err(e) if unsupported(&e) && !visited => self.batch_supported = false,
                // Going through again would hand out entries twice.
                Err(e) if visited => {
                    warn!(error = %e, "reading the flow map in batches: stopped part way");
                    return false;
                }
                Err(e) => warn!(error = %e, "reading the flow map in batches"),
            }
        }
        let mut pairs = Vec::with_capacity(BATCH);
        for entry in self.map.iter() {
            match entry {
                Ok(kv) => pairs.push(kv),
                // A key deleted while iterating; the next call goes on.
                Err(e) => warn!(error = %e, "reading the flow map"),
            }
            if pairs.len() == BATCH {
                visit(&pairs);
                pairs.clear();
            }
        }
        if !pairs.is_empty() {
            visit(&pairs);
        }
        true
    }
}

/// A duplicate of a map's fd, for the batch syscalls.
pub fn dup_fd(data: &MapData) -> io::Result<OwnedFd> {
    data.fd().as_fd().try_clone_to_owned()
}

//! The kernel flow map behind the flow table's [`KernelFlows`] view.
//!
//! Whole-map reads and deletions go through `BPF_MAP_LOOKUP_BATCH` and
//! `BPF_MAP_DELETE_BATCH` (Linux 5.6+): thousands of entries per syscall
//! instead of two syscalls per entry, which is what keeps the periodic sweep
//! cheap with hundreds of thousands of flows. aya 0.14 does not wrap them,
//! so they are called here directly. Kernels without them fall back to
//! per-entry calls. Ended flows leave one at a time through
//! `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, so a packet counted after the sweep
//! read the entry is still in its last record.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use agent_common::{FlowKey, FlowKey4, FlowStats};
use aya::{
    Pod,
    maps::{HashMap, MapData},
};
use tracing::warn;

use crate::flow_table::{EntryVisitor, KernelFlows};

/// Entries per batch syscall. A hash bucket holding more than this would
/// make the kernel answer ENOSPC, which cannot happen with hash maps of the
/// sizes hubcap uses.
const BATCH: usize = 4096;

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
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

/// The element commands' part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: `attr` is a valid bpf_attr prefix ([`BatchAttr`] or
    // [`ElemAttr`]) whose pointers refer to buffers the caller keeps alive
    // and sized for what the command writes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One of the two kernel flow maps, keyed by `K` (`FlowKey4` for IPv4,
/// `FlowKey` for IPv6).
pub struct FlowMapHalf<K: Pod> {
    map: HashMap<MapData, K, FlowStats>,
    fd: OwnedFd,
    /// Keys of ended flows, deleted together by [`KernelFlows::flush`].
    doomed: Vec<K>,
    batch_supported: bool,
    take_supported: bool,
}

impl<K: Pod + Default> FlowMapHalf<K> {
    pub fn new(map: HashMap<MapData, K, FlowStats>, fd: OwnedFd) -> Self {
        FlowMapHalf {
            map,
            fd,
            doomed: Vec::new(),
            batch_supported: true,
            take_supported: true,
        }
    }

    /// Hands every entry to `visit`, up to [`BATCH`] at a time. On an error,
    /// `visited` says whether some were handed out already.
    fn lookup_batch(&self, visit: &mut dyn FnMut(&[K], &[FlowStats]), visited: &mut bool) -> io::Result<()> {
        let mut keys = vec![K::default(); BATCH];
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
            if n > 0 {
                *visited = true;
                visit(&keys[..n], &values[..n]);
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

    fn delete_batch(&self, keys: &[K]) -> io::Result<()> {
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

    fn get(&self, key: &K) -> Option<FlowStats> {
        self.map.get(key, 0).ok()
    }

    /// The entry's value, deleted in the same step
    /// (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, hash maps since Linux 5.14); on
    /// older kernels a read, then a delete at once.
    fn take(&mut self, key: &K) -> Option<FlowStats> {
        if self.take_supported {
            let mut value = FlowStats::default();
            let mut attr = ElemAttr {
                map_fd: self.fd.as_raw_fd() as u32,
                key: key as *const K as u64,
                value: &mut value as *mut FlowStats as u64,
                ..Default::default()
            };
            match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
                Ok(()) => return Some(value),
                Err(e) if unsupported(&e) => self.take_supported = false,
                // Gone already; the caller ends the flow with what it read.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return None,
                Err(e) => {
                    warn!(error = %e, "taking an ended flow out of the kernel map");
                    return None;
                }
            }
        }
        let value = self.get(key);
        let _ = self.map.remove(key);
        value
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

    /// As [`KernelFlows::visit_entries`], with this map's own keys.
    fn visit_entries(&mut self, visit: &mut dyn FnMut(&[K], &[FlowStats])) -> bool {
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
        let (mut keys, mut values) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
        for entry in self.map.iter() {
            match entry {
                Ok((key, value)) => {
                    keys.push(key);
                    values.push(value);
                }
                // A key deleted while iterating; the next call goes on.
                Err(e) => warn!(error = %e, "reading the flow map"),
            }
            if keys.len() == BATCH {
                visit(&keys, &values);
                keys.clear();
                values.clear();
            }
        }
        if !keys.is_empty() {
            visit(&keys, &values);
        }
        true
    }
}

/// The kernel's flows: IPv4 in one map under compact keys, IPv6 in the
/// other (see `agent_common::FlowKey4`), seen as one map of full keys.
pub struct KernelFlowMap {
    pub v4: FlowMapHalf<FlowKey4>,
    pub v6: FlowMapHalf<FlowKey>,
}

/// The kernel's internal "not supported" code, which bpf() can return.
const ENOTSUPP: i32 = 524;

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP))
}

impl KernelFlows for KernelFlowMap {
    fn get(&self, key: &FlowKey) -> Option<FlowStats> {
        match FlowKey4::from_key(key) {
            Some(compact) => self.v4.get(&compact),
            None => self.v6.get(key),
        }
    }

    fn take(&mut self, key: &FlowKey) -> Option<FlowStats> {
        match FlowKey4::from_key(key) {
            Some(compact) => self.v4.take(&compact),
            None => self.v6.take(key),
        }
    }

    fn remove(&mut self, key: &FlowKey) {
        match FlowKey4::from_key(key) {
            Some(compact) => self.v4.doomed.push(compact),
            None => self.v6.doomed.push(*key),
        }
    }

    fn flush(&mut self) {
        self.v4.flush();
        self.v6.flush();
    }

    fn visit_entries(&mut self, visit: &mut EntryVisitor) -> bool {
        let mut pairs = Vec::new();
        let v4_read = self.v4.visit_entries(&mut |keys, values| {
            pairs.clear();
            pairs.extend(keys.iter().map(FlowKey4::to_key).zip(values.iter().copied()));
            visit(&pairs);
        });
        let v6_read = self.v6.visit_entries(&mut |keys, values| {
            pairs.clear();
            pairs.extend(keys.iter().copied().zip(values.iter().copied()));
            visit(&pairs);
        });
        v4_read && v6_read
    }
}

/// A duplicate of a map's fd, for the batch syscalls.
pub fn dup_fd(data: &MapData) -> io::Result<OwnedFd> {
    data.fd().as_fd().try_clone_to_owned()
}

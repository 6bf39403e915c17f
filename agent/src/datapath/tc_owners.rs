//! Who owns which clsact filter, so that a hubcap killed with SIGKILL (or
//! by the OOM killer) never leaves its filters running into maps nobody
//! reads, and a running hubcap's filters are never taken for leftovers.
//!
//! tcx links die with the process that holds them; clsact filters do not.
//! Each hubcap in tc mode writes the filters it attached (interface, hook,
//! priority, handle, and its network namespace) to a file of its own under
//! [`DEFAULT_DIR`] and holds an exclusive `flock` on that file for as long
//! as it lives. The kernel drops the lock when the process dies, however it
//! dies, so "this file's lock can be taken" means exactly "its owner is
//! gone", across pid namespaces too (the DaemonSet's directory is a
//! hostPath). At start, each run removes the filters listed in files whose
//! lock it can take, in its own network namespace, then the files.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use aya::programs::tc::{SchedClassifierLink, TcAttachType, TcHandle};
use tracing::{debug, warn};

/// Beside the Observer API's socket, which the chart mounts from the host.
pub const DEFAULT_DIR: &str = "/var/run/hubcap/tc-filters";

/// One filter as the kernel names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterId {
    pub interface: String,
    /// Interface names come back (a new pod's veth); indexes do not (the
    /// kernel hands out new ones), so a name is only trusted with its index.
    pub ifindex: u32,
    pub hook: TcAttachType,
    pub priority: u16,
    pub handle: u32,
}

/// The hooks hubcap attaches to on each interface.
pub const HOOKS: [TcAttachType; 2] = [TcAttachType::Ingress, TcAttachType::Egress];

/// A hook's name in logs, metrics and the owner files.
pub fn hook_name(hook: TcAttachType) -> &'static str {
    if hook == TcAttachType::Ingress {
        "ingress"
    } else {
        "egress"
    }
}

impl FilterId {
    /// `NETNS INTERFACE IFINDEX HOOK PRIORITY HANDLE`, one line.
    fn line(&self, netns: u64) -> String {
        format!(
            "{netns} {} {} {} {} {}\n",
            self.interface,
            self.ifindex,
            hook_name(self.hook),
            self.priority,
            self.handle
        )
    }

    fn parse(line: &str) -> Option<(u64, FilterId)> {
        let mut parts = line.split_whitespace();
        let netns = parts.next()?.parse().ok()?;
        let interface = parts.next()?.to_owned();
        let ifindex = parts.next()?.parse().ok()?;
        let hook_text = parts.next()?;
        let hook = HOOKS.into_iter().find(|h| hook_name(*h) == hook_text)?;
        let priority = parts.next()?.parse().ok()?;
        let handle = parts.next()?.parse().ok()?;
        Some((
            netns,
            FilterId {
                interface,
                ifindex,
                hook,
                priority,
                handle,
            },
        ))
    }
}

/// This run's own file: locked while it lives, rewritten on every change.
pub struct OwnerFile {
    path: PathBuf,
    file: File,
    netns: u64,
    filters: Vec<FilterId>,
}

impl OwnerFile {
    /// Whether a filter of this run could not be detached: then the file
    /// stays for the next run (the lock goes with this process).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

impl OwnerFile {
    /// Creates and locks a file of this run's in `dir`.
    pub fn create(dir: &Path) -> io::Result<OwnerFile> {
        fs::create_dir_all(dir)?;
        let netns = own_netns()?;
        let name = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
        let path = dir.join(name);
        let file = File::options().write(true).create_new(true).open(&path)?;
        lock(&file, false)?;
        Ok(OwnerFile {
            path,
            file,
            netns,
            filters: Vec::new(),
        })
    }

    pub fn add(&mut self, filter: FilterId) -> io::Result<()> {
        self.filters.push(filter);
        self.rewrite()
    }

    pub fn remove_interface(&mut self, ifindex: u32) -> io::Result<()> {
        self.filters.retain(|f| f.ifindex != ifindex);
        self.rewrite()
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let text: String = self.filters.iter().map(|f| f.line(self.netns)).collect();
        self.file.set_len(0)?;
        let mut file = &self.file;
        std::io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

impl Drop for OwnerFile {
    /// Once everything is detached there is nothing left to own; what is
    /// still listed stays for the next run to remove.
    fn drop(&mut self) {
        if self.filters.is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What [`remove_stale`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Filters of dead runs removed.
    pub removed: Vec<FilterId>,
    /// Filters of dead runs that could not be removed (they keep running).
    pub failed: Vec<FilterId>,
}

/// Removes the filters of every dead run in `dir` that were attached in
/// this network namespace.
pub fn remove_stale(dir: &Path) -> io::Result<Cleanup> {
    let mut cleanup = Cleanup::default();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(cleanup),
        Err(e) => return Err(e),
    };
    let netns = own_netns()?;
    for entry in entries {
        let path = entry?.path();
        let Ok(file) = File::options().read(true).write(true).open(&path) else {
            continue;
        };
        if lock(&file, true).is_err() {
            debug!(file = %path.display(), "tc filters of a running hubcap: left alone");
            continue;
        }
        let text = fs::read_to_string(&path)?;
        let mut elsewhere = Vec::new();
        for line in text.lines() {
            match FilterId::parse(line) {
                Some((owner_netns, filter)) if owner_netns == netns => match detach(&filter) {
                    Ok(()) => cleanup.removed.push(filter),
                    Err(e) => {
                        warn!(
                            interface = filter.interface,
                            hook = hook_name(filter.hook),
                            error = %e,
                            "a filter left by a hubcap that did not stop cleanly could not be removed: it stays attached"
                        );
                        cleanup.failed.push(filter);
                    }
                },
                Some(_) => elsewhere.push(line),
                None => debug!(file = %path.display(), line, "unreadable line"),
            }
        }
        if elsewhere.is_empty() {
            fs::remove_file(&path)?;
        } else {
            // Another network namespace's run: its own namespace's next
            // hubcap removes those.
            fs::write(&path, elsewhere.iter().map(|l| format!("{l}\n")).collect::<String>())?;
        }
    }
    Ok(cleanup)
}

/// Deletes one filter; one that is gone already (its interface with it)
/// counts as removed.
fn detach(filter: &FilterId) -> io::Result<()> {
    let same_interface = nix::net::if_::if_nametoindex(filter.interface.as_str()).is_ok_and(|i| i == filter.ifindex);
    if !same_interface {
        // Gone, and its filters with it; the name may be another's now.
        return Ok(());
    }
    let link = SchedClassifierLink::attached(
        &filter.interface,
        filter.hook,
        filter.priority,
        TcHandle::from(filter.handle),
        None,
    )?;
    match aya::programs::Link::detach(link) {
        Ok(()) => Ok(()),
        Err(aya::programs::ProgramError::NetlinkError(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// `flock(LOCK_EX)`, without waiting when `try_only`.
fn lock(file: &File, try_only: bool) -> io::Result<()> {
    let operation = libc::LOCK_EX | if try_only { libc::LOCK_NB } else { 0 };
    // SAFETY: flock on a file descriptor this function borrows.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The inode of this process's network namespace.
fn own_netns() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(fs::metadata("/proc/self/ns/net")?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_line_reads_back_as_written() {
        let filter = FilterId {
            interface: "veth12ab".into(),
            ifindex: 17,
            hook: TcAttachType::Egress,
            priority: 49152,
            handle: 0x0001_0002,
        };
        assert_eq!(FilterId::parse(&filter.line(4026531840)), Some((4026531840, filter)));
        assert_eq!(FilterId::parse("garbage"), None);
    }

    #[test]
    fn a_live_owner_keeps_its_file_and_a_dead_ones_file_goes() {
        let dir = std::env::temp_dir().join(format!("hubcap-tc-owners-{}", fastrand::u64(..)));
        let live = OwnerFile::create(&dir).unwrap();
        // A file nobody holds a lock on: its owner is gone. It lists no
        // filter of this namespace, so removing it detaches nothing.
        let dead = dir.join("1-dead");
        fs::write(&dead, "1 eth0 2 ingress 1 1\n").unwrap();
        let cleanup = remove_stale(&dir).unwrap();
        assert_eq!(cleanup, Cleanup::default());
        assert!(live.path.exists(), "a running owner's file is left alone");
        assert!(dead.exists(), "another namespace's filters stay listed for it");
        fs::write(&dead, "").unwrap();
        remove_stale(&dir).unwrap();
        assert!(!dead.exists(), "a dead owner's file goes once nothing in it is left");
        drop(live);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            0,
            "a clean stop removes its own file"
        );
        fs::remove_dir(&dir).unwrap();
    }
}

//! Attaching the tc programs to interfaces, tcx where the kernel has it
//! and clsact otherwise. Our programs always return "continue", so
//! whatever else is attached keeps working.

use std::collections::HashMap;

use agent_common::{EGRESS_PROGRAM, INGRESS_PROGRAM, NOOP_PROGRAM};
use aya::{
    programs::{
        LinkOrder, ProgramError,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcAttachType},
    },
    util::KernelVersion,
};
use tracing::{debug, info, warn};

use super::Datapath;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// tcx on Linux 6.6 and later, clsact before.
    Auto,
    /// tcx links (Linux 6.6+): multi-program, owned by hubcap's file descriptors.
    Tcx,
    /// A clsact qdisc with direct-action filters (any kernel with eBPF tc).
    Tc,
}

impl AttachMode {
    pub fn resolve(self) -> AttachMode {
        match self {
            AttachMode::Auto => match KernelVersion::current() {
                Ok(v) if v >= KernelVersion::new(6, 6, 0) => AttachMode::Tcx,
                _ => AttachMode::Tc,
            },
            mode => mode,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("attaching to {interface} ({hook}): {source}")]
pub struct AttachError {
    pub interface: String,
    pub hook: &'static str,
    #[source]
    pub source: ProgramError,
}

struct Attachment {
    name: String,
    ingress: SchedClassifierLinkId,
    egress: SchedClassifierLinkId,
}

/// The programs that go on the ingress and egress hooks.
#[derive(Clone, Copy, Debug)]
pub struct ProgramPair {
    pub ingress: &'static str,
    pub egress: &'static str,
}

impl ProgramPair {
    /// Flow capture.
    pub const CAPTURE: ProgramPair = ProgramPair {
        ingress: INGRESS_PROGRAM,
        egress: EGRESS_PROGRAM,
    };
    /// The benchmark's trivial classifier on both hooks.
    pub const NOOP: ProgramPair = ProgramPair {
        ingress: NOOP_PROGRAM,
        egress: NOOP_PROGRAM,
    };
}

/// Which interfaces (by ifindex) carry our programs.
pub struct Attachments {
    mode: AttachMode,
    programs: ProgramPair,
    by_ifindex: HashMap<u32, Attachment>,
    /// Whether filters of ours found on an interface are leftovers (clsact
    /// only: a killed hubcap's tcx links die with its file descriptors, its
    /// clsact filters do not). Decided once, at start.
    stale_filters: StaleFilters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StaleFilters {
    /// No other hubcap runs here: any filter with our program names was
    /// left by one that was killed (`kill -9`, OOM) and still runs on
    /// every packet into maps nobody reads. Removed before attaching.
    Remove,
    /// Another hubcap process runs on this machine; its filters look the
    /// same as a dead one's, so none are touched.
    Keep,
}

impl Attachments {
    pub fn new(mode: AttachMode, programs: ProgramPair) -> Self {
        Attachments {
            mode: mode.resolve(),
            programs,
            by_ifindex: HashMap::new(),
            stale_filters: if another_hubcap_runs() {
                StaleFilters::Keep
            } else {
                StaleFilters::Remove
            },
        }
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn contains(&self, ifindex: u32) -> bool {
        self.by_ifindex.contains_key(&ifindex)
    }

    pub fn len(&self) -> usize {
        self.by_ifindex.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ifindex.is_empty()
    }

    pub fn ifindexes(&self) -> Vec<u32> {
        self.by_ifindex.keys().copied().collect()
    }

    pub fn attach(&mut self, datapath: &mut Datapath, ifindex: u32, name: &str) -> Result<(), AttachError> {
        if self.mode == AttachMode::Tc {
            // The qdisc may be there already (another tc user, or us before):
            // that is fine, and any real problem shows in the attach below.
            if let Err(e) = tc::qdisc_add_clsact(name) {
                debug!(interface = name, error = %e, "clsact qdisc not added");
            }
            self.remove_stale_filters(name);
        }
        let ingress = self.attach_one(datapath, name, self.programs.ingress, TcAttachType::Ingress)?;
        let egress = match self.attach_one(datapath, name, self.programs.egress, TcAttachType::Egress) {
            Ok(link) => link,
            Err(e) => {
                let _ = datapath.program(self.programs.ingress).detach(ingress);
                return Err(e);
            }
        };
        info!(interface = name, ifindex, mode = ?self.mode, "attached");
        self.by_ifindex.insert(
            ifindex,
            Attachment {
                name: name.to_owned(),
                ingress,
                egress,
            },
        );
        Ok(())
    }

    fn remove_stale_filters(&self, name: &str) {
        if self.stale_filters == StaleFilters::Keep {
            debug!(interface = name, "another hubcap runs: filters of ours are left alone");
            return;
        }
        for (hook, program) in [
            (TcAttachType::Ingress, self.programs.ingress),
            (TcAttachType::Egress, self.programs.egress),
        ] {
            match tc::qdisc_detach_program(name, hook, program) {
                Ok(()) => warn!(
                    interface = name,
                    program, "removed a filter left attached by an earlier hubcap that did not stop cleanly"
                ),
                Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(interface = name, program, error = %e, "could not look for stale filters"),
            }
        }
    }

    fn attach_one(
        &self,
        datapath: &mut Datapath,
        name: &str,
        program: &'static str,
        hook: TcAttachType,
    ) -> Result<SchedClassifierLinkId, AttachError> {
        let options = match self.mode {
            AttachMode::Tcx | AttachMode::Auto => TcAttachOptions::TcxOrder(LinkOrder::default()),
            AttachMode::Tc => TcAttachOptions::Netlink(NlOptions::default()),
        };
        datapath
            .program(program)
            .attach_with_options(name, hook, options)
            .map_err(|source| AttachError {
                interface: name.to_owned(),
                hook: if hook == TcAttachType::Ingress {
                    "ingress"
                } else {
                    "egress"
                },
                source,
            })
    }

    /// Detaches from an interface. One that vanished took our programs with
    /// it, so failures there are expected and only logged.
    pub fn detach(&mut self, datapath: &mut Datapath, ifindex: u32) {
        let Some(a) = self.by_ifindex.remove(&ifindex) else {
            return;
        };
        for (program, link) in [(self.programs.ingress, a.ingress), (self.programs.egress, a.egress)] {
            if let Err(e) = datapath.program(program).detach(link) {
                debug!(interface = a.name, error = %e, "detach (interface probably gone)");
            }
        }
        info!(interface = a.name, ifindex, "detached");
    }

    pub fn detach_all(&mut self, datapath: &mut Datapath) {
        for ifindex in self.ifindexes() {
            self.detach(datapath, ifindex);
        }
        if !self.by_ifindex.is_empty() {
            warn!("some attachments could not be removed");
        }
    }
}

/// Whether a process named `hubcap` other than this one runs on the machine
/// (the pid namespace we see: the host's for the DaemonSet).
fn another_hubcap_runs() -> bool {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let pid = entry.file_name();
        let pid = pid.to_string_lossy();
        pid.bytes().all(|b| b.is_ascii_digit())
            && pid != me
            && std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|comm| comm.trim_end() == "hubcap")
    })
}

//! Attaching the tc programs to interfaces, tcx where the kernel has it
//! and clsact otherwise. Our programs always return "continue", so
//! whatever else is attached keeps working.

use std::{collections::HashMap, path::Path};

use agent_common::{EGRESS_PROGRAM, INGRESS_PROGRAM, NOOP_PROGRAM};
use aya::{
    programs::{
        Link as _, LinkOrder, ProgramError,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcAttachType},
    },
    util::KernelVersion,
};
use tracing::{debug, info, warn};

use super::{
    Datapath,
    tc_owners::{self, FilterId, OwnerFile, hook_name},
};

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
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Tcx => "tcx",
            AttachMode::Tc => "tc",
        }
    }

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
    /// Owned: dropping one detaches it.
    ingress: SchedClassifierLink,
    egress: SchedClassifierLink,
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
    /// In tc mode: this run's record of its clsact filters (see
    /// `tc_owners`), so that a run killed with SIGKILL has its filters
    /// removed by the next one. `None` in tcx mode, or when the record
    /// cannot be written (warned).
    owners: Option<OwnerFile>,
}

impl Attachments {
    /// In tc mode, first removes the filters of runs that died without
    /// detaching (warned, one line each).
    pub fn new(mode: AttachMode, programs: ProgramPair) -> Self {
        let mode = mode.resolve();
        let owners = (mode == AttachMode::Tc).then(|| take_over_tc_filters(Path::new(tc_owners::DEFAULT_DIR)));
        Attachments {
            mode,
            programs,
            by_ifindex: HashMap::new(),
            owners: owners.flatten(),
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

    /// The attached interfaces' names.
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
        }
        let ingress = self.attach_one(datapath, name, self.programs.ingress, TcAttachType::Ingress)?;
        // On error, `ingress` is dropped, which detaches it.
        let egress = self.attach_one(datapath, name, self.programs.egress, TcAttachType::Egress)?;
        info!(interface = name, ifindex, mode = ?self.mode, "attached");
        if let Some(owners) = &mut self.owners {
            for (hook, link) in [(TcAttachType::Ingress, &ingress), (TcAttachType::Egress, &egress)] {
                let recorded = match (link.priority(), link.handle()) {
                    (Ok(priority), Ok(handle)) => owners
                        .add(FilterId {
                            interface: name.to_owned(),
                            ifindex,
                            hook,
                            priority,
                            handle: handle.into(),
                        })
                        .map_err(|e| e.to_string()),
                    (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
                };
                if let Err(error) = recorded {
                    warn!(
                        interface = name,
                        error, "this filter is not recorded: were hubcap killed, the next run could not remove it"
                    );
                }
            }
        }
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

    fn attach_one(
        &self,
        datapath: &mut Datapath,
        name: &str,
        program: &'static str,
        hook: TcAttachType,
    ) -> Result<SchedClassifierLink, AttachError> {
        let options = match self.mode {
            AttachMode::Tcx | AttachMode::Auto => TcAttachOptions::TcxOrder(LinkOrder::default()),
            AttachMode::Tc => TcAttachOptions::Netlink(NlOptions::default()),
        };
        let program = datapath.program(program);
        program
            .attach_with_options(name, hook, options)
            .and_then(|id| program.take_link(id))
            .map_err(|source| AttachError {
                interface: name.to_owned(),
                hook: hook_name(hook),
                source,
            })
    }

    /// Detaches from an interface. One that vanished took our programs with
    /// it, so failures there are expected and only logged.
    pub fn detach(&mut self, ifindex: u32) {
        let Some(a) = self.by_ifindex.remove(&ifindex) else {
            return;
        };
        let mut detached = true;
        for link in [a.ingress, a.egress] {
            if let Err(e) = link.detach() {
                let gone = nix::net::if_::if_nametoindex(a.name.as_str()) != Ok(ifindex);
                detached &= gone;
                if gone {
                    debug!(interface = a.name, error = %e, "detach (interface gone)");
                } else {
                    warn!(interface = a.name, error = %e, "could not detach");
                }
            }
        }
        if detached && let Some(owners) = &mut self.owners {
            if let Err(e) = owners.remove_interface(ifindex) {
                warn!(interface = a.name, error = %e, "updating the record of our tc filters");
            }
        }
        info!(interface = a.name, ifindex, "detached");
    }

    /// Sets `gauge` (`hubcap_attachments`) to exactly the hooks attached
    /// now: 1 for each, by interface, hook and mode.
    pub fn publish(&self, gauge: &prometheus::IntGaugeVec) {
        gauge.reset();
        let mode = self.mode.name();
        for a in self.by_ifindex.values() {
            for hook in tc_owners::HOOKS {
                gauge
                    .with_label_values(&[a.name.as_str(), hook_name(hook), mode])
                    .set(1);
            }
        }
    }

    pub fn detach_all(&mut self) {
        for ifindex in self.ifindexes() {
            self.detach(ifindex);
        }
        if self.owners.as_ref().is_some_and(|o| !o.is_empty()) {
            warn!("some attachments could not be removed: the next hubcap removes them");
        }
        // Removes the record when nothing is left in it.
        self.owners = None;
    }
}

/// Removes the clsact filters of runs that died without detaching them,
/// then starts this run's record.
fn take_over_tc_filters(dir: &Path) -> Option<OwnerFile> {
    match tc_owners::remove_stale(dir) {
        Ok(cleanup) => {
            for f in &cleanup.removed {
                warn!(
                    interface = f.interface,
                    hook = hook_name(f.hook),
                    "removed a filter left attached by an earlier hubcap that did not stop cleanly"
                );
            }
        }
        Err(e) => warn!(dir = %dir.display(), error = %e, "could not look for filters left by a killed hubcap"),
    }
    match OwnerFile::create(dir) {
        Ok(owners) => Some(owners),
        Err(e) => {
            warn!(
                dir = %dir.display(),
                error = %e,
                "cannot record this run's tc filters: were hubcap killed, they would stay attached"
            );
            None
        }
    }
}
